//! JetStream event streams: one per kind, set up idempotently.
//!
//! A kind kept in NATS KV gets its events from the bucket: the stream *sources* the
//! bucket's stream (`KV_{bucket}`, subjects transformed from `$KV.{bucket}.{id}` to
//! `{prefix}.evt.{kind}.{id}`), so each stored record is copied into the log by
//! nats-server, in write order, once it is stored. Such a message is the record itself
//! (its state and its [`Change`]s); [`decode_events`] turns it back into [`Event`]s. A kind
//! kept elsewhere (MongoDB, Redis), and nodes of older releases, publish each event with
//! [`publish`] (`Nats-Msg-Id`, so a retry after a crash cannot store it twice). Both kinds
//! of message may be in one stream; every event's identity is [`Event::msg_id`].

use crate::codec;
use crate::error::BusError;
use crate::headers;
use crate::names::{EVENT_KINDS, Names};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use cartwheel_domain::{Change, Event, Evented};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How the event streams are kept.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Replicas (1 on a single server, 3 on a cluster).
    pub replicas: usize,
    /// How long events are kept.
    pub max_age: Duration,
    /// The de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Creates (or finds) the event stream of every kind; the stream of each kind in
/// `sourced` (kinds whose records are kept in NATS KV) sources that kind's bucket. An
/// existing stream without its source (created by an older release) gets it added.
pub async fn ensure_streams(
    js: &jetstream::Context,
    names: &Names,
    settings: &StreamSettings,
    sourced: &[&str],
) -> Result<(), BusError> {
    for kind in EVENT_KINDS {
        let source = sourced.contains(&kind).then(|| kv_source(names, kind));
        let config = stream::Config {
            name: names.event_stream(kind),
            subjects: vec![names.event_stream_subjects(kind)],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            max_age: settings.max_age,
            duplicate_window: settings.duplicate_window,
            sources: source.clone().map(|s| vec![s]),
            ..Default::default()
        };
        // A fresh replicated cluster, or one electing a leader, times out the first
        // stream requests; several nodes may create the same stream at once.
        crate::retry_at_startup(&format!("event stream {kind}"), || async {
            let mut stream = js
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| e.to_string())?;
            let Some(source) = &source else { return Ok(()) };
            let info = stream.info().await.map_err(|e| e.to_string())?;
            let mut current = info.config.clone();
            let sources = current.sources.get_or_insert_with(Vec::new);
            if sources.iter().any(|s| s.name == source.name) {
                return Ok(());
            }
            tracing::info!(%kind, source = %source.name, "event stream: sourcing the KV bucket");
            sources.push(source.clone());
            js.update_stream(&current)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
        .map_err(BusError::Nats)?;
    }
    Ok(())
}

/// The source of kind `kind`'s event stream: its KV bucket's stream, each key's subject
/// mapped to the kind's event subject of that id.
fn kv_source(names: &Names, kind: &str) -> stream::Source {
    let bucket = names.entity_bucket(kind);
    stream::Source {
        name: Names::kv_stream(&bucket),
        subject_transforms: vec![stream::SubjectTransform {
            source: Names::kv_subjects(&bucket),
            destination: names.event_stream_subjects(kind),
        }],
        ..Default::default()
    }
}

/// What a stored record is to a reader of events: the entity and its changes. Every other
/// field of the record is skipped.
#[derive(Deserialize)]
struct Stored<T> {
    state: T,
    #[serde(default)]
    changes: Vec<Change>,
}

/// The events in one message of an event stream or a live subject: an event published by
/// a node (it has a `Cw-Event` header), or a stored record (copied from a KV bucket, or
/// republished by it), whose changes are rebuilt into events carrying its state. A KV
/// delete or purge marker, and a record of an older release (whose events its node
/// published itself), hold none.
pub fn decode_events<T: DeserializeOwned + Evented>(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Vec<Event>, BusError> {
    if let Some(h) = headers {
        if h.get(EVENT_HEADER).is_some() {
            return Ok(vec![codec::decode::<Event>(payload)?]);
        }
        if h.get("KV-Operation").is_some() {
            return Ok(Vec::new());
        }
    }
    let stored: Stored<T> = codec::decode(payload)?;
    Ok(stored
        .changes
        .iter()
        .filter_map(|c| stored.state.event(c))
        .collect())
}

/// The headers (`Nats-Msg-Id`, `Cw-Event`) and payload of a message carrying `event`,
/// as [`publish`] sends it and [`decode_events`] reads it.
pub fn event_message(event: &Event) -> Result<(HeaderMap, bytes::Bytes), BusError> {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, event.msg_id().as_str());
    h.insert(EVENT_HEADER, event.name());
    Ok((h, codec::encode(event)?))
}

/// The header naming the event a node published (`Cw-Event: CartUpdated`).
pub const EVENT_HEADER: &str = "Cw-Event";

/// Publishes one event and waits for JetStream's acknowledgement.
pub async fn publish(
    js: &jetstream::Context,
    names: &Names,
    event: &Event,
    request_id: Option<&str>,
) -> Result<(), BusError> {
    let subject = names.event(event.kind(), event.entity_id());
    let (mut h, payload) = event_message(event)?;
    if let Some(rid) = request_id {
        h.insert(headers::REQUEST_ID, rid);
    }
    headers::inject_trace_context(&mut h);
    let ack = js
        .publish_with_headers(subject, h, payload)
        .await
        .map_err(|e| BusError::Nats(format!("publish {}: {e}", event.name())))?;
    ack.await
        .map_err(|e| BusError::Nats(format!("ack {}: {e}", event.name())))?;
    Ok(())
}
