//! Persist-then-publish: the one write path every behaviour uses.
//!
//! A change is stored with its events (the outbox) in one compare-and-set write. Only
//! then are the events published to JetStream, each with `Nats-Msg-Id`, and only then is
//! the reply sent. A publish that fails is logged and retried on the next activation (the
//! events are still in the stored record), so nothing acknowledged is lost.

use crate::ctx::Ctx;
use bytes::Bytes;
use cartwheel_bus::messages::Reply;
use cartwheel_bus::{ApiError, codec};
use cartwheel_domain::{ErrorCode, Event};
use cartwheel_storage::{EntityStore, Record, StoreError, Versioned};
use serde::Serialize;
use tracing::Instrument;

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// Someone else wrote first: reload and try again.
    Conflict,
    /// Storage failed: answer the client.
    Failed(ApiError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> WriteError {
        match e {
            StoreError::Conflict { .. } => WriteError::Conflict,
            other => WriteError::Failed(store_error(&other)),
        }
    }
}

/// Maps a storage error to what a client sees.
pub fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Conflict { key } => ApiError::new(
            ErrorCode::Conflict,
            format!("{key} was changed concurrently; retry"),
        ),
        StoreError::InvalidQuery(m) => ApiError::invalid(m.clone()),
        StoreError::Unavailable(m) => ApiError::unavailable(format!("storage unavailable: {m}")),
        StoreError::Codec(m) => ApiError::internal(format!("stored document unreadable: {m}")),
    }
}

/// Stores `state` with `events` (create when `current` is `None`, else compare-and-set
/// on its revision), updates `current`, then publishes the events.
pub async fn save<T: Clone + Send + Sync + 'static>(
    ctx: &Ctx,
    store: &dyn EntityStore<T>,
    id: &str,
    current: &mut Option<Versioned<T>>,
    state: T,
    events: Vec<Event>,
    request_id: &str,
) -> Result<(), WriteError> {
    // The lease fence: a node that lost the partition (paused past its lease, or handing
    // it over) must not write. Compare-and-set below fences whatever slips past this.
    let p = cartwheel_bus::names::partition(id, ctx.bus.config().partitions);
    if !ctx.guard.holds(p) {
        return Err(WriteError::Failed(ApiError::unavailable(format!(
            "partition {p} is no longer held by this node; retry"
        ))));
    }
    let record = Record {
        state,
        outbox: events,
    };
    let started = std::time::Instant::now();
    let (op, written) = match current {
        None => (
            "create",
            store
                .create(id, &record)
                .instrument(tracing::info_span!("storage", op = "create"))
                .await,
        ),
        Some(v) => (
            "update",
            store
                .update(id, &record, v.revision)
                .instrument(tracing::info_span!("storage", op = "update"))
                .await,
        ),
    };
    // The stored type names the kind: `Cart` → `cart`, `Order` → `order`, …
    let kind = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("entity")
        .to_ascii_lowercase();
    record_storage(&kind, op, started, written.is_ok());
    let revision = written?;
    publish_outbox(ctx, &record.outbox, Some(request_id)).await;
    *current = Some(Versioned { record, revision });
    Ok(())
}

/// Records one storage call in `cartwheel_storage_duration_seconds` (by entity kind,
/// operation and outcome).
pub fn record_storage(kind: &str, op: &'static str, started: std::time::Instant, ok: bool) {
    metrics::histogram!(
        "cartwheel_storage_duration_seconds",
        "kind" => kind.to_owned(),
        "op" => op,
        "outcome" => if ok { "ok" } else { "error" },
    )
    .record(started.elapsed().as_secs_f64());
}

/// Publishes events; failures are logged (the events stay in the stored outbox and are
/// published again on the next activation).
pub async fn publish_outbox(ctx: &Ctx, events: &[Event], request_id: Option<&str>) {
    for event in events {
        if let Err(e) =
            cartwheel_bus::events::publish(&ctx.js, ctx.names(), event, request_id).await
        {
            tracing::warn!(event = event.name(), msg_id = %event.msg_id(), error = %e,
                "event not published; it stays in the outbox for the next activation");
        }
    }
}

/// Encodes a reply; an encoding failure becomes an `internal` error reply.
pub fn encode_reply<T: Serialize>(reply: &Reply<T>) -> Bytes {
    match codec::encode(reply) {
        Ok(b) => b,
        Err(e) => encode_error(&ApiError::internal(format!("reply not encodable: {e}"))),
    }
}

/// Encodes an error reply.
pub fn encode_error(e: &ApiError) -> Bytes {
    let reply: Reply<()> = Err(e.clone());
    codec::encode(&reply).unwrap_or_default()
}
