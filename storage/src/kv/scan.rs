//! One streamed pass over the latest value of every key of a bucket.
//!
//! An ordered push consumer with "last per subject" delivery sends the newest entry of each
//! key, in stream order, without history: one consumer and one flow-controlled stream of
//! messages instead of a request per key. The consumer is ephemeral; the server drops it
//! once the subscription is gone.
//!
//! Knowing when the pass is complete is the subtle part, because keys are rewritten while
//! it runs. With one revision per key, a rewrite removes the entry the consumer was about to
//! deliver and appends the new one at the end of the stream. So neither "the stream's last
//! sequence at the start was delivered" (the rewrite comes later) nor "the consumer has
//! nothing pending" (that chases the writers, and the count can go stale) is the right end.
//! Instead the pass first takes the list of keys the stream holds (stream info with
//! subject details), and ends once every one of them was delivered: each key's entry of
//! that moment, or a later rewrite of it, always is. Keys created after the list was taken
//! may or may not be included; each key appears once, with the newest value delivered.

use crate::error::StoreError;
use async_nats::jetstream::consumer::push::{OrderedConfig, OrderedErrorKind};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// The longest wait for the next entry before the pass gives up. The ordered consumer
/// reports a missed heartbeat after 5 s and recreates itself, so this allows one recovery.
const IDLE_TIMEOUT: Duration = Duration::from_secs(12);

/// How many times in one pass the consumer may report a missed heartbeat and recover.
const MAX_RECOVERIES: u32 = 2;

/// The KV header naming the operation of an entry (`PUT`, `DEL`, `PURGE`).
const KV_OPERATION: &str = "KV-Operation";
/// The header of a server-written marker (a key removed by TTL, purge or max age).
const MARKER_REASON: &str = "Nats-Marker-Reason";

/// What a pass fetches for every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payload {
    /// The values.
    Values,
    /// Only the keys (the values come back empty).
    KeysOnly,
}

/// The newest value of every live key of `bucket` for which `keep` holds. Keys whose newest
/// entry is a delete or purge marker are left out.
pub(super) async fn latest(
    bucket: &kv::Store,
    client: &async_nats::Client,
    payload: Payload,
    keep: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Bytes>, StoreError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("scanning KV bucket {}: {what}: {e}", bucket.name))
    };
    let prefix = bucket.prefix.as_str();
    let mut waiting: HashSet<String> = bucket
        .stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| unavailable("listing keys", &e))?
        .map_ok(|(subject, _count)| subject)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| unavailable("listing keys", &e))?
        .into_iter()
        .filter_map(|subject| subject.strip_prefix(prefix).map(str::to_owned))
        .collect();
    let mut found = BTreeMap::new();
    if waiting.is_empty() {
        return Ok(found);
    }

    let consumer = bucket
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("cartwheel storage scan".to_owned()),
            filter_subject: format!("{prefix}>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            headers_only: payload == Payload::KeysOnly,
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| unavailable("creating consumer", &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable("subscribing", &e))?;

    let mut recoveries = 0;
    while !waiting.is_empty() {
        let next = tokio::time::timeout(IDLE_TIMEOUT, messages.next())
            .await
            .map_err(|_| unavailable("waiting for entries", &"timed out"))?;
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e))
                if e.kind() == OrderedErrorKind::MissingHeartbeat
                    && recoveries < MAX_RECOVERIES =>
            {
                recoveries += 1;
                continue;
            }
            Some(Err(e)) => return Err(unavailable("reading entries", &e)),
            None => return Err(unavailable("reading entries", &"subscription closed")),
        };
        let Some(key) = message.subject.as_str().strip_prefix(prefix) else {
            continue;
        };
        waiting.remove(key);
        let removed = message.headers.as_ref().is_some_and(|h| {
            h.get(MARKER_REASON).is_some()
                || h.get(KV_OPERATION)
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
        });
        if removed || !keep(key) {
            found.remove(key);
        } else {
            found.insert(key.to_owned(), message.payload.clone());
        }
    }
    Ok(found)
}
