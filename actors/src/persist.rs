//! The one write path every behaviour uses.
//!
//! A change is stored with its events in one compare-and-set write.
//!
//! **On a store that delivers events** (NATS KV, [`EntityStore::delivers_events`]) that
//! write is all: the record keeps the events as [`Change`](cartwheel_domain::Change)s
//! (without the entity, which is its state), nats-server republishes the stored value to
//! the live subject and copies it into the event stream, and the reply goes out as soon
//! as the write is acknowledged. One durable write per change, no publish, no ack wait,
//! and a write the compare-and-set refused is never published (see `cartwheel_bus::events`).
//!
//! **On other stores** (MongoDB, Redis), and for events an older release left in a
//! record's outbox, persist-then-publish: the events are stored in the record's outbox,
//! then published to JetStream, each with `Nats-Msg-Id`, and then the reply is sent. The
//! outbox holds every event not yet acknowledged by its stream, in
//! version order: a publish that gets no ack within [`PUBLISH_WAIT`] (the stream electing
//! a leader after a NATS server died) does not hold the reply up; the event stays in the
//! outbox of the next write, goes out again before that write's own events, is retried in
//! the background meanwhile, and is published again on the next activation. So nothing
//! acknowledged is lost, a stream election costs a write at most `PUBLISH_WAIT`, and each
//! entity's events reach the stream in version order (an event is sent only after every
//! earlier one of its entity was acknowledged, and JetStream drops the copies by
//! `Nats-Msg-Id`).

use crate::ctx::Ctx;
use bytes::Bytes;
use cartwheel_bus::messages::Reply;
use cartwheel_bus::{ApiError, codec};
use cartwheel_domain::{ErrorCode, Event};
use cartwheel_storage::{Applied, EntityStore, Record, StoreError, Versioned};
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

/// `attempt` (an expression awaited for a `Result<T, WriteError>`); when its write lost a
/// compare-and-set race ([`WriteError::Conflict`]), `reload` (awaited for a
/// `Result<(), ApiError>`) and `attempt` once more. A second conflict is answered with
/// [`conflict_error`] naming `what` (e.g. `format!("cart {id}")`): the client retries,
/// and the entity is not held up by a write storm. The one conflict policy of every
/// behaviour; a macro because both expressions borrow the entity's state in turn.
macro_rules! retry_once {
    ($what:expr, $attempt:expr, $reload:expr $(,)?) => {{
        let mut first = true;
        loop {
            match $attempt.await {
                Ok(t) => break Ok(t),
                Err($crate::persist::WriteError::Failed(e)) => break Err(e),
                Err($crate::persist::WriteError::Conflict) if first => {
                    first = false;
                    if let Err(e) = $reload.await {
                        break Err(e);
                    }
                }
                Err($crate::persist::WriteError::Conflict) => {
                    break Err($crate::persist::conflict_error(&$what));
                }
            }
        }
    }};
}
pub(crate) use retry_once;

/// `{what} was changed concurrently; retry` (a `conflict`).
pub fn conflict_error(what: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("{what} was changed concurrently; retry"),
    )
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

/// How long a write whose outcome is unknown (the backend failed or did not answer) is
/// looked up and, if it did not happen, sent again before the caller gets the error. Short
/// enough that a backend that stays down still answers `unavailable` well within the
/// request deadline; long enough for a reconnect after a backend restart.
const UNKNOWN_OUTCOME_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

/// Stores `state` with `events` (create when `current` is `None`, else compare-and-set
/// on its revision), updates `current`, then publishes the events.
///
/// `command` is the command this change applies: it joins the record's window of applied
/// commands (in the same write), so a repeat of it is recognised later. A write without a
/// command keeps the window as it was.
///
/// A write that fails with an unknown outcome (a connection lost, a timeout) is looked up:
/// the stored record equal to the one sent means it was applied (success, not a
/// conflict); the revision unchanged means it was not, and it is sent again. So a backend
/// restart or a lost reply neither fails the change nor applies it twice.
#[allow(clippy::too_many_arguments)]
pub async fn save<T: Clone + PartialEq + Send + Sync + 'static>(
    ctx: &Ctx,
    store: &dyn EntityStore<T>,
    id: &str,
    current: &mut Option<Versioned<T>>,
    state: T,
    events: Vec<Event>,
    command: Option<Applied>,
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
    let window = current
        .as_ref()
        .map(|v| v.record.applied.as_slice())
        .unwrap_or_default();
    let applied = match command {
        Some(entry) => Applied::push(window, entry),
        None => window.to_vec(),
    };
    // The stored type names the kind: `Cart` → `cart`, `Order` → `order`, …
    let kind = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("entity")
        .to_ascii_lowercase();
    let key = format!("{kind}:{id}");
    // Events of earlier changes that their stream has not acknowledged yet go first: the
    // node's relay holds them, and after a reload (a conflict) the record as loaded may
    // hold another writer's, which may not have gone out. The outbox stays in version
    // order.
    let carried = merged(
        ctx.outboxes.take(&key),
        current
            .as_ref()
            .map(|v| v.record.outbox.clone())
            .unwrap_or_default(),
    );
    let mut outbox = carried.clone();
    let changes = if store.delivers_events() {
        events.iter().map(Event::change).collect()
    } else {
        outbox.extend(events);
        Vec::new()
    };
    cap_outbox(&mut outbox, &key);
    let record = Record {
        state,
        outbox,
        applied,
        changes,
    };
    let expected = current.as_ref().map(|v| v.revision);
    let revision = match store_record(ctx, store, id, &kind, p, &record, expected).await {
        Ok(revision) => revision,
        Err(e) => {
            // Not written: what was carried is still unacknowledged, and still the
            // relay's to retry.
            if !carried.is_empty() {
                ctx.outboxes.defer(ctx, &key, carried);
            }
            return Err(e);
        }
    };
    let mut kept = record;
    // Delivered by the store; the live entity does not need them.
    kept.changes = Vec::new();
    publish_outbox(ctx, &mut kept.outbox, Some(request_id)).await;
    *current = Some(Versioned {
        record: kept,
        revision,
    });
    Ok(())
}

/// Writes `record` (create when `expected` is `None`, else compare-and-set), looking up
/// a write whose outcome is unknown; answers the revision written.
async fn store_record<T: Clone + PartialEq + Send + Sync + 'static>(
    ctx: &Ctx,
    store: &dyn EntityStore<T>,
    id: &str,
    kind: &str,
    p: u32,
    record: &Record<T>,
    expected: Option<cartwheel_storage::Revision>,
) -> Result<cartwheel_storage::Revision, WriteError> {
    let kind = kind.to_owned();
    let mut attempt = 0;
    let mut recovering: Option<std::time::Instant> = None;
    loop {
        let budget_left =
            recovering.map(|since| UNKNOWN_OUTCOME_BUDGET.saturating_sub(since.elapsed()));
        let started = std::time::Instant::now();
        let (op, write) = match expected {
            None => (
                "create",
                store
                    .create(id, record)
                    .instrument(tracing::info_span!("storage", op = "create")),
            ),
            Some(revision) => (
                "update",
                store
                    .update(id, record, revision)
                    .instrument(tracing::info_span!("storage", op = "update")),
            ),
        };
        let written = match budget_left {
            None => write.await,
            Some(left) => within(left, write).await,
        };
        record_storage(&kind, store.backend(), op, started, written.is_ok());
        let error = match written {
            Ok(revision) => return Ok(revision),
            Err(StoreError::Unavailable(m)) => m,
            Err(other) => return Err(other.into()),
        };
        // The outcome is unknown: find out what is stored before answering.
        attempt += 1;
        let since = *recovering.get_or_insert_with(std::time::Instant::now);
        let pause = std::time::Duration::from_millis(25 << attempt.min(4));
        let left = UNKNOWN_OUTCOME_BUDGET.saturating_sub(since.elapsed());
        if left <= pause || !ctx.guard.holds(p) {
            return Err(StoreError::Unavailable(error).into());
        }
        tracing::warn!(%kind, %id, attempt, %error, "write outcome unknown; looking it up");
        tokio::time::sleep(pause).await;
        match within(left - pause, store.load(id)).await {
            Ok(Some(stored)) if stored.record == *record => {
                metrics::counter!("cartwheel_storage_write_recovered_total", "kind" => kind.clone(), "how" => "was_applied").increment(1);
                return Ok(stored.revision);
            }
            Ok(Some(stored)) if Some(stored.revision) == expected => {}
            Ok(None) if expected.is_none() => {}
            // Something else was written meanwhile: a conflict like any other.
            Ok(_) => return Err(WriteError::Conflict),
            // Still unreachable: try the write again (it is compare-and-set).
            Err(_) => {}
        }
        metrics::counter!("cartwheel_storage_write_recovered_total", "kind" => kind.clone(), "how" => "resent").increment(1);
    }
}

/// A storage call bounded by `left`: past it, `Unavailable` like any unanswered call.
async fn within<R>(
    left: std::time::Duration,
    call: impl std::future::Future<Output = Result<R, StoreError>>,
) -> Result<R, StoreError> {
    tokio::time::timeout(left, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("no answer in time".into())))
}

/// Records one storage call in `cartwheel_storage_duration_seconds` (by entity kind,
/// backend, operation and outcome).
pub fn record_storage(
    kind: &str,
    backend: &'static str,
    op: &'static str,
    started: std::time::Instant,
    ok: bool,
) {
    metrics::histogram!(
        "cartwheel_storage_duration_seconds",
        "kind" => kind.to_owned(),
        "backend" => backend,
        "op" => op,
        "outcome" => if ok { "ok" } else { "error" },
    )
    .record(started.elapsed().as_secs_f64());
}

/// How long a write waits for its events' acks before it answers anyway (the events stay
/// in the outbox). Far above an ack on a working stream (a millisecond; tens with
/// `sync_interval: always` under load), far below a stream leader election (4–9 s).
pub const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Most unpublished events an entity's outbox keeps.
pub const MAX_OUTBOX: usize = 256;

/// Keeps the newest [`MAX_OUTBOX`] events of `outbox` (entity `key`). Past that,
/// JetStream has been unreachable for a long time; every event carries the whole entity,
/// so the newest ones hold what the dropped ones said.
fn cap_outbox(outbox: &mut Vec<Event>, key: &str) {
    if outbox.len() > MAX_OUTBOX {
        let drop = outbox.len() - MAX_OUTBOX;
        tracing::warn!(%key, dropped = drop, "outbox full; dropping its oldest unpublished events");
        outbox.drain(..drop);
    }
}

/// Publishes `outbox` in order, each event only after the one before it was acknowledged,
/// within [`PUBLISH_WAIT`]. What is left (no ack in time, or a failed publish) moves to
/// the node's relay ([`Outboxes`]), which retries it in the background and hands it to
/// the entity's next write; `outbox` is empty afterwards.
pub async fn publish_outbox(ctx: &Ctx, outbox: &mut Vec<Event>, request_id: Option<&str>) {
    if outbox.is_empty() {
        return;
    }
    let mut acked = 0;
    // Past the wait the publishing stops; `acked` counts what was acknowledged until then.
    let _ = tokio::time::timeout(
        PUBLISH_WAIT,
        publish_in_order(ctx, outbox, request_id, &mut acked),
    )
    .await;
    outbox.drain(..acked.min(outbox.len()));
    if outbox.is_empty() {
        return;
    }
    tracing::warn!(pending = outbox.len(), first = %outbox[0].msg_id(),
        "events not acknowledged in time; the relay retries them");
    metrics::counter!("cartwheel_events_deferred_total").increment(outbox.len() as u64);
    let key = format!("{}:{}", outbox[0].kind(), outbox[0].entity_id());
    ctx.outboxes.defer(ctx, &key, std::mem::take(outbox));
}

/// `earlier` then every event of `later` not in it, by version (each entity's events
/// carry increasing versions; a stable sort keeps one change's events in their order).
fn merged(earlier: Vec<Event>, later: Vec<Event>) -> Vec<Event> {
    let mut out = earlier;
    for e in later {
        if !out.iter().any(|o| o.msg_id() == e.msg_id()) {
            out.push(e);
        }
    }
    out.sort_by_key(Event::version);
    out
}

/// The node's relay of events their stream has not acknowledged yet: per entity, the
/// events in version order and the one background task retrying them (with backoff up
/// to 5 s, for as long as it takes). The entity's next write takes them over
/// ([`Outboxes::take`]): they go into that write's stored outbox and out again before its
/// own events. So an unacknowledged event is always either in the relay or in the
/// entity's stored outbox, is never re-sent once acknowledged (the relay drops what it
/// published), and nothing else retries it (one task per entity).
#[derive(Debug, Default)]
pub struct Outboxes {
    pending: std::sync::Mutex<std::collections::HashMap<String, Pending>>,
    tasks: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Pending {
    events: Vec<Event>,
    /// The task retrying them; another task finding a different number stops.
    task: u64,
}

impl Outboxes {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many entities have events waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// How many events wait, over every entity.
    pub fn events(&self) -> usize {
        self.lock().values().map(|p| p.events.len()).sum()
    }

    /// Whether no entity has events waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the events waiting for `key` (the entity's next write carries them).
    pub fn take(&self, key: &str) -> Vec<Event> {
        self.lock()
            .remove(key)
            .map(|p| p.events)
            .unwrap_or_default()
    }

    /// Leaves `events` of `key` to the relay (merged with what waits already), and starts
    /// a task for them.
    pub fn defer(&self, ctx: &Ctx, key: &str, events: Vec<Event>) {
        let task = self
            .tasks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut map = self.lock();
            let earlier = map.remove(key).map(|p| p.events).unwrap_or_default();
            let mut events = merged(earlier, events);
            cap_outbox(&mut events, key);
            map.insert(key.to_owned(), Pending { events, task });
        }
        let (ctx, key) = (ctx.clone(), key.to_owned());
        tokio::spawn(async move {
            let mut pause = std::time::Duration::from_millis(250);
            loop {
                tokio::time::sleep(pause).await;
                let snapshot = match ctx.outboxes.lock().get(&key) {
                    Some(p) if p.task == task => p.events.clone(),
                    // Taken by a write, or retried by a newer task.
                    _ => return,
                };
                let mut acked = 0;
                publish_in_order(&ctx, &snapshot, None, &mut acked).await;
                let sent: Vec<String> = snapshot[..acked.min(snapshot.len())]
                    .iter()
                    .map(Event::msg_id)
                    .collect();
                let mut map = ctx.outboxes.lock();
                match map.get_mut(&key) {
                    Some(p) if p.task == task => {
                        p.events.retain(|e| !sent.contains(&e.msg_id()));
                        if p.events.is_empty() {
                            map.remove(&key);
                            tracing::info!(%key, "deferred events published");
                            return;
                        }
                    }
                    _ => return,
                }
                drop(map);
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        });
    }
}

/// Publishes `events` one after another, each after the previous one's ack, counting the
/// acknowledged ones in `acked`; stops at the first failure.
async fn publish_in_order(
    ctx: &Ctx,
    events: &[Event],
    request_id: Option<&str>,
    acked: &mut usize,
) {
    for event in events {
        if let Err(e) =
            cartwheel_bus::events::publish(&ctx.js, ctx.names(), event, request_id).await
        {
            tracing::debug!(event = event.name(), msg_id = %event.msg_id(), error = %e, "event not published");
            return;
        }
        *acked += 1;
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
