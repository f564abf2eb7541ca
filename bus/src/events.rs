//! JetStream event streams: one per kind, set up idempotently, published with
//! `Nats-Msg-Id` so a retry after a crash cannot store an event twice.

use crate::codec;
use crate::error::BusError;
use crate::headers;
use crate::names::{EVENT_KINDS, Names};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use cartwheel_domain::Event;
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

/// Creates (or finds) the event stream of every kind.
pub async fn ensure_streams(
    js: &jetstream::Context,
    names: &Names,
    settings: &StreamSettings,
) -> Result<(), BusError> {
    for kind in EVENT_KINDS {
        let config = stream::Config {
            name: names.event_stream(kind),
            subjects: vec![names.event_stream_subjects(kind)],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            max_age: settings.max_age,
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        };
        // A fresh replicated cluster, or one electing a leader, times out the first
        // stream requests; several nodes may create the same stream at once.
        let started = std::time::Instant::now();
        loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(_) => break,
                Err(e) if started.elapsed() >= crate::STARTUP_WAIT => {
                    return Err(BusError::Nats(format!("event stream {kind}: {e}")));
                }
                Err(e) => {
                    tracing::info!(%kind, error = %e, "event stream not available yet; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
    Ok(())
}

/// Publishes one event and waits for JetStream's acknowledgement.
pub async fn publish(
    js: &jetstream::Context,
    names: &Names,
    event: &Event,
    request_id: Option<&str>,
) -> Result<(), BusError> {
    let subject = names.event(event.kind(), event.entity_id());
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, event.msg_id().as_str());
    h.insert("Cw-Event", event.name());
    if let Some(rid) = request_id {
        h.insert(headers::REQUEST_ID, rid);
    }
    headers::inject_trace_context(&mut h);
    let payload = codec::encode(event)?;
    let ack = js
        .publish_with_headers(subject, h, payload)
        .await
        .map_err(|e| BusError::Nats(format!("publish {}: {e}", event.name())))?;
    ack.await
        .map_err(|e| BusError::Nats(format!("ack {}: {e}", event.name())))?;
    Ok(())
}
