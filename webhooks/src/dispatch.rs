//! Delivery: which endpoints this node serves, and each one's dispatcher.
//!
//! [`run`] watches the endpoints bucket and, every `ownership_tick`, runs a dispatcher
//! for each enabled endpoint this node owns (and stops the others'). A dispatcher reads
//! the endpoint's durable consumers, one per source stream, and sorts messages into
//! lanes by subject (one entity each): a lane delivers its messages one after another,
//! lanes run side by side, at most `max_in_flight` requests at once. A message is
//! acknowledged once each of its events is delivered or dead-lettered; while a lane waits
//! (a retry hours away), its messages are kept alive with progress acks. Stopping leaves
//! what is not acknowledged to JetStream, which redelivers it to the next owner.

use crate::attempt::{self, Outcome};
use crate::error::WebhookError;
use crate::{Deps, Settings};
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use cartwheel_bus::Names;
use cartwheel_bus::events::decode_events;
use cartwheel_domain::webhook::{self, Delivery, DeliveryStatus, Endpoint, Replay};
use cartwheel_domain::{Cart, Event, Inventory, Order, Product, Timestamp};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The streams an endpoint's events come from: each event kind's, and the webhook
/// system events'.
const SOURCES: [&str; 5] = ["cart", "order", "inventory", "product", "webhook"];

/// How long a message may go without an ack or a progress ack before JetStream
/// redelivers it (to this owner, or after a crash to the next).
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How often held messages get a progress ack.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Messages of one endpoint's consumer not yet acknowledged, at most.
const MAX_ACK_PENDING: i64 = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stream of a source.
fn stream_of(names: &Names, source: &str) -> String {
    if source == "webhook" {
        names.webhook_events_stream()
    } else {
        names.event_stream(source)
    }
}

/// Serves the endpoints this node owns until `shutdown`.
pub(crate) async fn run(deps: Arc<Deps>, tracker: TaskTracker, shutdown: CancellationToken) {
    let endpoints: Arc<Mutex<HashMap<String, Endpoint>>> = Arc::default();
    tracker.spawn(watch_endpoints(
        deps.clone(),
        endpoints.clone(),
        shutdown.clone(),
    ));
    let mut running: HashMap<String, (watch::Sender<Endpoint>, CancellationToken)> = HashMap::new();
    let mut tick = tokio::time::interval(deps.settings.ownership_tick);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let current = lock(&endpoints).clone();
        running.retain(|id, (tx, stop)| {
            let keep = current
                .get(id)
                .is_some_and(|e| e.enabled && (deps.owns)(id))
                && !stop.is_cancelled();
            if keep {
                if let Some(e) = current.get(id) {
                    tx.send_if_modified(|old| {
                        let changed = old != e;
                        if changed {
                            *old = e.clone();
                        }
                        changed
                    });
                }
            } else {
                tracing::info!(endpoint = %id, "webhook endpoint: stopping its deliveries here");
                stop.cancel();
            }
            keep
        });
        for (id, e) in current {
            if running.contains_key(&id) || !e.enabled || !(deps.owns)(&id) {
                continue;
            }
            tracing::info!(endpoint = %id, "webhook endpoint: delivering from this node");
            let (tx, rx) = watch::channel(e);
            let stop = shutdown.child_token();
            tracker.spawn(dispatch(deps.clone(), rx, stop.clone()));
            running.insert(id, (tx, stop));
        }
    }
    for (_, (_, stop)) in running {
        stop.cancel();
    }
}

/// Keeps `endpoints` equal to the bucket, rewatching after a failure.
async fn watch_endpoints(
    deps: Arc<Deps>,
    endpoints: Arc<Mutex<HashMap<String, Endpoint>>>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut watch = match deps.store.watch_endpoints().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "webhook endpoints: cannot watch; trying again");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                () = shutdown.cancelled() => return,
                entry = watch.next() => entry,
            };
            match entry {
                Some(Ok(entry)) => {
                    let mut map = lock(&endpoints);
                    if entry.operation == async_nats::jetstream::kv::Operation::Put {
                        match serde_json::from_slice::<Endpoint>(&entry.value) {
                            Ok(e) => {
                                map.insert(entry.key.clone(), e);
                            }
                            Err(e) => {
                                tracing::warn!(key = %entry.key, error = %e, "unreadable webhook endpoint")
                            }
                        }
                    } else {
                        map.remove(&entry.key);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "webhook endpoints watch failed; rewatching");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// A circuit breaker: after `threshold` failures in a row it holds deliveries back for
/// `cooldown`, then lets one probe through; a success closes it.
#[derive(Default)]
struct Breaker {
    state: Mutex<(u32, Option<Instant>)>,
    closed: Notify,
}

impl Breaker {
    /// Waits until a request may go; `false` when stopped first.
    async fn pass(&self, cooldown: Duration, stop: &CancellationToken) -> bool {
        loop {
            let wait = {
                let mut s = lock(&self.state);
                let now = Instant::now();
                match s.1 {
                    Some(until) if until > now => Some(until),
                    Some(_) => {
                        // Half open: this one probes; the others wait another cooldown.
                        s.1 = Some(now + cooldown);
                        None
                    }
                    None => None,
                }
            };
            let Some(until) = wait else { return true };
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep_until(until) => {}
                () = self.closed.notified() => {}
            }
        }
    }

    fn success(&self) {
        *lock(&self.state) = (0, None);
        self.closed.notify_waiters();
    }

    fn failure(&self, settings: &Settings) {
        let mut s = lock(&self.state);
        s.0 = s.0.saturating_add(1);
        if s.0 >= settings.breaker_threshold {
            if s.1.is_none() {
                tracing::warn!(failures = s.0, "webhook endpoint: circuit breaker open");
            }
            s.1 = Some(Instant::now() + settings.breaker_cooldown);
        }
    }
}

/// One endpoint's dispatcher state.
struct Dispatcher {
    deps: Arc<Deps>,
    endpoint: watch::Receiver<Endpoint>,
    stop: CancellationToken,
    breaker: Breaker,
    in_flight: Semaphore,
    /// Messages waiting per lane (subject); a lane in the map has a worker.
    lanes: Mutex<HashMap<String, VecDeque<(&'static str, Message)>>>,
    /// Every message held, by (source, stream sequence): for progress acks and to drop
    /// a redelivered copy of one still held.
    held: Mutex<HashMap<(&'static str, u64), Message>>,
    /// Sources whose consumer had messages out with an earlier owner when this one
    /// started: their lanes are parked until those come back (see [`read_source`]).
    gated: Mutex<HashSet<&'static str>>,
    /// Lanes waiting for their source's gate to open, with their source.
    parked: Mutex<HashMap<String, &'static str>>,
    /// The lanes' and replays' tasks.
    workers: TaskTracker,
}

/// What became of a message.
enum Verdict {
    /// Every event in it was delivered or dead-lettered: acknowledge it.
    Done,
    /// The dispatcher is stopping (or the endpoint was disabled): leave it to JetStream.
    Stop,
}

fn endpoint_id(d: &Dispatcher) -> String {
    d.endpoint.borrow().id.clone()
}

async fn dispatch(deps: Arc<Deps>, endpoint: watch::Receiver<Endpoint>, stop: CancellationToken) {
    let max = deps.settings.max_in_flight.max(1);
    let d = Arc::new(Dispatcher {
        deps,
        endpoint,
        stop,
        breaker: Breaker::default(),
        in_flight: Semaphore::new(max),
        lanes: Mutex::default(),
        held: Mutex::default(),
        gated: Mutex::default(),
        parked: Mutex::default(),
        workers: TaskTracker::new(),
    });
    let (tx, mut rx) = mpsc::channel::<(&'static str, Message)>(256);
    let workers = d.workers.clone();
    for source in SOURCES {
        workers.spawn(read_source(d.clone(), source, tx.clone()));
    }
    drop(tx);
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    let mut replays: HashSet<String> = HashSet::new();
    let mut endpoint = d.endpoint.clone();
    start_replays(&d, &workers, &mut replays);
    loop {
        tokio::select! {
            () = d.stop.cancelled() => break,
            changed = endpoint.changed() => {
                if changed.is_err() || !endpoint.borrow().enabled {
                    break;
                }
                start_replays(&d, &workers, &mut replays);
            }
            _ = progress.tick() => {
                let held: Vec<Message> = lock(&d.held).values().cloned().collect();
                for msg in held {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
            msg = rx.recv() => {
                let Some((source, msg)) = msg else { break };
                enqueue(&d, &workers, source, msg);
            }
        }
    }
    d.stop.cancel();
    workers.close();
    // Workers stop at their next wait; one in the middle of a request finishes it.
    if tokio::time::timeout(
        d.deps.settings.request_timeout + Duration::from_secs(2),
        workers.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!(endpoint = %endpoint_id(&d), "webhook workers did not stop in time");
    }
}

/// Reads one source's durable consumer into the dispatcher, recreating it after errors.
async fn read_source(
    d: Arc<Dispatcher>,
    source: &'static str,
    tx: mpsc::Sender<(&'static str, Message)>,
) {
    let ep = d.endpoint.borrow().clone();
    let name = Names::webhook_consumer(&ep.id, source);
    let mut first = true;
    while !d.stop.is_cancelled() {
        let result = async {
            let mut consumer = consumer_for(&d.deps, source, &name, ep.created_at).await?;
            // Messages an earlier owner had out (it died, or is handing over) come back
            // only after their ack wait, while newer ones come at once: hold every lane
            // of this source until they are back, so each entity stays in order.
            let mut gate = if first && consumer.cached_info().num_ack_pending > 0 {
                lock(&d.gated).insert(source);
                tracing::info!(endpoint = %ep.id, %source,
                    waiting_for = consumer.cached_info().num_ack_pending,
                    "webhook consumer: waiting for an earlier owner's messages before delivering");
                Some(Instant::now())
            } else {
                None
            };
            first = false;
            let mut check = tokio::time::interval(Duration::from_millis(500));
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| WebhookError::Nats(format!("reading {name}: {e}")))?;
            loop {
                let next = tokio::select! {
                    () = d.stop.cancelled() => return Ok(()),
                    _ = check.tick(), if gate.is_some() => {
                        let pending = consumer.info().await.map(|i| i.num_ack_pending).unwrap_or(usize::MAX);
                        let held = lock(&d.held).keys().filter(|(s, _)| *s == source).count();
                        let waited = gate.map_or(Duration::ZERO, |g| g.elapsed());
                        if held >= pending || waited > ACK_WAIT * 3 {
                            gate = None;
                            open_gate(&d, source);
                        }
                        continue;
                    }
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(msg)) => {
                        if tx.send((source, msg)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => {
                        return Err(WebhookError::Nats(format!("reading {name}: {e}")));
                    }
                    None => return Ok(()),
                }
            }
        }
        .await;
        if lock(&d.gated).contains(source) {
            open_gate(&d, source);
        }
        if let Err(e) = result {
            tracing::debug!(endpoint = %ep.id, %source, error = %e, "webhook consumer: trying again");
        }
        tokio::select! {
            () = d.stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The durable consumer `name` on `source`'s stream, from `since` on (created if missing).
async fn consumer_for(
    deps: &Deps,
    source: &str,
    name: &str,
    since: Timestamp,
) -> Result<consumer::Consumer<pull::Config>, WebhookError> {
    let stream = deps
        .store
        .js
        .get_stream(stream_of(deps.names(), source))
        .await
        .map_err(|e| WebhookError::Nats(format!("stream of {source}: {e}")))?;
    let start_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since.millis()) * 1_000_000)
            .map_err(|e| WebhookError::Codec(e.to_string()))?;
    stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| WebhookError::Nats(format!("consumer {name}: {e}")))
}

/// Opens a source's gate: its parked lanes, sorted by stream sequence, get workers.
fn open_gate(d: &Arc<Dispatcher>, source: &'static str) {
    lock(&d.gated).remove(source);
    let parked: Vec<String> = {
        let mut all = lock(&d.parked);
        let mine: Vec<String> = all
            .iter()
            .filter(|(_, s)| **s == source)
            .map(|(l, _)| l.clone())
            .collect();
        for l in &mine {
            all.remove(l);
        }
        mine
    };
    let mut lanes = lock(&d.lanes);
    for lane in parked {
        if let Some(queue) = lanes.get_mut(&lane) {
            queue
                .make_contiguous()
                .sort_by_key(|(_, m)| m.info().map(|i| i.stream_sequence).unwrap_or(0));
            d.workers.spawn(work_lane(d.clone(), lane));
        }
    }
}

/// Puts a message in its lane, starting the lane's worker if it has none (parking the
/// lane while its source's gate is shut).
fn enqueue(d: &Arc<Dispatcher>, workers: &TaskTracker, source: &'static str, msg: Message) {
    let Ok(seq) = msg.info().map(|i| i.stream_sequence) else {
        return;
    };
    {
        let mut held = lock(&d.held);
        if held.contains_key(&(source, seq)) {
            // A redelivery of a message still in a lane: the lane acks it once done.
            return;
        }
        held.insert((source, seq), msg.clone());
    }
    let lane = msg.subject.to_string();
    let gated = lock(&d.gated).contains(source);
    let mut lanes = lock(&d.lanes);
    match lanes.get_mut(&lane) {
        Some(queue) => queue.push_back((source, msg)),
        None => {
            lanes.insert(lane.clone(), VecDeque::from([(source, msg)]));
            if gated {
                lock(&d.parked).insert(lane, source);
            } else {
                workers.spawn(work_lane(d.clone(), lane));
            }
        }
    }
}

/// Delivers one lane's messages in order until it is empty (or the dispatcher stops).
async fn work_lane(d: Arc<Dispatcher>, lane: String) {
    loop {
        let next = lock(&d.lanes).get(&lane).and_then(|q| q.front().cloned());
        let Some((source, msg)) = next else {
            lock(&d.lanes).remove(&lane);
            return;
        };
        match handle(&d, source, &msg, None).await {
            Verdict::Done => {
                if let Err(e) = msg.double_ack().await {
                    // Redelivered later; its delivery records make that a no-op.
                    tracing::debug!(error = %e, "webhook ack failed");
                }
                if let Ok(info) = msg.info() {
                    lock(&d.held).remove(&(source, info.stream_sequence));
                }
                let mut lanes = lock(&d.lanes);
                let empty = match lanes.get_mut(&lane) {
                    Some(q) => {
                        q.pop_front();
                        q.is_empty()
                    }
                    None => true,
                };
                if empty {
                    lanes.remove(&lane);
                    return;
                }
            }
            Verdict::Stop => {
                lock(&d.lanes).remove(&lane);
                return;
            }
        }
    }
}

/// The events of one message as (webhook id, type, data).
fn events_of(source: &str, msg: &Message) -> Vec<(String, String, Value)> {
    let headers = msg.headers.as_ref();
    let payload = &msg.payload;
    let events: Result<Vec<Event>, _> = match source {
        "cart" => decode_events::<Cart>(headers, payload),
        "order" => decode_events::<Order>(headers, payload),
        "inventory" => decode_events::<Inventory>(headers, payload),
        "product" => decode_events::<Product>(headers, payload),
        _ => {
            // A system event: its whole payload, under its message id.
            let id = headers
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.to_string())
                .unwrap_or_default();
            return match serde_json::from_slice::<Value>(payload) {
                Ok(v) => {
                    let ty = v["type"].as_str().unwrap_or_default().to_owned();
                    vec![(id, ty, v["data"].clone())]
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable webhook system event");
                    Vec::new()
                }
            };
        }
    };
    match events {
        Ok(events) => events
            .into_iter()
            .map(|event| {
                let ty = webhook::webhook_type(&event).to_owned();
                let id = event.msg_id();
                let mut data = serde_json::to_value(&event).unwrap_or(Value::Null);
                if let Some(fields) = data.as_object_mut() {
                    fields.remove("type");
                }
                (id, ty, data)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(subject = %msg.subject, error = %e, "undecodable event");
            Vec::new()
        }
    }
}

/// Delivers every event of `msg` the endpoint asks for.
async fn handle(d: &Arc<Dispatcher>, source: &str, msg: &Message, replay: Option<&str>) -> Verdict {
    let published = msg
        .info()
        .map(|i| published_at(&i))
        .unwrap_or_else(|_| attempt::now());
    for (webhook_id, ty, data) in events_of(source, msg) {
        if !d.endpoint.borrow().accepts(&ty) {
            continue;
        }
        let payload = json!({"type": ty, "timestamp": published, "data": data}).to_string();
        let mut id = webhook::delivery_id(&webhook_id);
        if let Some(r) = replay {
            id = format!("{id}.replay-{r}");
        }
        if let Verdict::Stop = deliver(d, &id, &webhook_id, &ty, payload, replay).await {
            return Verdict::Stop;
        }
    }
    Verdict::Done
}

/// Retries `op` (a store call) until it succeeds or the dispatcher stops.
async fn persistently<T, F, Fut>(d: &Dispatcher, what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WebhookError>>,
{
    loop {
        match op().await {
            Ok(t) => return Some(t),
            Err(e) => {
                tracing::warn!(%what, error = %e, "webhook state: trying again");
                tokio::select! {
                    () = d.stop.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}

/// Waits until `at` (wall clock); `false` when stopped or disabled first.
async fn wait_until(d: &Dispatcher, at: Timestamp) -> bool {
    let mut endpoint = d.endpoint.clone();
    loop {
        let left = at.millis() - attempt::now().millis();
        if left <= 0 {
            return true;
        }
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        tokio::select! {
            () = d.stop.cancelled() => return false,
            () = tokio::time::sleep(left) => return true,
            changed = endpoint.changed() => {
                if changed.is_err() || !endpoint.borrow().enabled {
                    return false;
                }
            }
        }
    }
}

/// Delivers one event to the endpoint, on the schedule, continuing what an earlier owner
/// recorded.
async fn deliver(
    d: &Arc<Dispatcher>,
    id: &str,
    webhook_id: &str,
    ty: &str,
    payload: String,
    replay: Option<&str>,
) -> Verdict {
    let settings = &d.deps.settings;
    let store = &d.deps.store;
    let endpoint_id = endpoint_id(d);
    let Some(found) =
        persistently(d, "reading a delivery", || store.delivery(&endpoint_id, id)).await
    else {
        return Verdict::Stop;
    };
    let mut delivery = match found {
        Some(existing) if existing.status != DeliveryStatus::Pending => return Verdict::Done,
        Some(existing) => existing,
        None => {
            let now = attempt::now();
            let first = settings.schedule.first().copied().unwrap_or_default();
            Delivery {
                id: id.to_owned(),
                endpoint_id: endpoint_id.clone(),
                webhook_id: webhook_id.to_owned(),
                event_type: ty.to_owned(),
                payload,
                status: DeliveryStatus::Pending,
                attempts: Vec::new(),
                next_attempt_at: (!first.is_zero()).then(|| now.plus_millis(millis(first))),
                dead_reason: None,
                replay_id: replay.map(str::to_owned),
                created_at: now,
                updated_at: now,
            }
        }
    };
    loop {
        if d.stop.is_cancelled() || !d.endpoint.borrow().enabled {
            return Verdict::Stop;
        }
        if let Some(at) = delivery.next_attempt_at {
            metrics::gauge!("cartwheel_webhook_retries_pending").increment(1.0);
            let due = wait_until(d, at).await;
            metrics::gauge!("cartwheel_webhook_retries_pending").decrement(1.0);
            if !due {
                return Verdict::Stop;
            }
        }
        if !d.breaker.pass(settings.breaker_cooldown, &d.stop).await {
            return Verdict::Stop;
        }
        let endpoint = d.endpoint.borrow().clone();
        let (attempt, outcome) = {
            let Ok(_permit) = d.in_flight.acquire().await else {
                return Verdict::Stop;
            };
            attempt::send(
                &d.deps.http,
                &endpoint,
                &delivery.webhook_id,
                &delivery.payload,
                "schedule",
            )
            .await
        };
        let error = attempt.error.clone();
        delivery.attempts.push(attempt);
        delivery.updated_at = attempt::now();
        match outcome {
            Outcome::Delivered => {
                delivery.status = DeliveryStatus::Succeeded;
                delivery.next_attempt_at = None;
                d.breaker.success();
                metrics::counter!("cartwheel_webhook_deliveries_total", "status" => "succeeded")
                    .increment(1);
                if persistently(d, "storing a delivery", || store.put_delivery(&delivery))
                    .await
                    .is_none()
                {
                    return Verdict::Stop;
                }
                if endpoint.failing_since.is_some() {
                    let _ = store
                        .change_endpoint(&endpoint.id, |e| Ok(e.failing_since.take().is_some()))
                        .await;
                }
                return Verdict::Done;
            }
            Outcome::Gone => {
                let _ =
                    persistently(d, "storing a delivery", || store.put_delivery(&delivery)).await;
                disable(&d.deps, &endpoint.id, "the endpoint answered 410 Gone").await;
                return Verdict::Stop;
            }
            Outcome::Failed { retry_after } => {
                d.breaker.failure(settings);
                let now = attempt::now();
                let since = match endpoint.failing_since {
                    Some(since) => since,
                    None => {
                        let _ = store
                            .change_endpoint(&endpoint.id, |e| {
                                Ok(e.failing_since.get_or_insert(now) == &now)
                            })
                            .await;
                        now
                    }
                };
                let n = delivery.attempts.len();
                if n >= settings.schedule.len() {
                    delivery.status = DeliveryStatus::Dead;
                    delivery.next_attempt_at = None;
                    delivery.dead_reason = Some(format!(
                        "{n} attempts failed; the last: {}",
                        error.unwrap_or_default()
                    ));
                    if persistently(d, "storing a delivery", || store.put_delivery(&delivery))
                        .await
                        .is_none()
                    {
                        return Verdict::Stop;
                    }
                    if persistently(d, "dead-lettering", || store.dead_letter(&delivery))
                        .await
                        .is_none()
                    {
                        return Verdict::Stop;
                    }
                    metrics::counter!("cartwheel_webhook_deliveries_total", "status" => "dead")
                        .increment(1);
                    metrics::counter!("cartwheel_webhook_dead_letters_total").increment(1);
                    tracing::warn!(endpoint = %endpoint.id, delivery = %delivery.id, "webhook delivery dead-lettered");
                    return Verdict::Done;
                }
                let delay = settings.schedule[n].max(retry_after.unwrap_or_default());
                delivery.next_attempt_at = Some(now.plus_millis(millis(delay)));
                if persistently(d, "storing a delivery", || store.put_delivery(&delivery))
                    .await
                    .is_none()
                {
                    return Verdict::Stop;
                }
                if now.millis() - since.millis() >= millis(settings.disable_after) {
                    let reason = format!("every delivery attempt failed since {since}");
                    disable(&d.deps, &endpoint.id, &reason).await;
                    return Verdict::Stop;
                }
            }
        }
    }
}

/// When a message entered its stream.
fn published_at(info: &async_nats::jetstream::message::Info<'_>) -> Timestamp {
    Timestamp(i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Disables an endpoint for `reason` and publishes `endpoint.disabled`.
pub(crate) async fn disable(deps: &Deps, id: &str, reason: &str) {
    let now = attempt::now();
    let changed = deps
        .store
        .change_endpoint(id, |e| {
            if !e.enabled {
                return Ok(false);
            }
            e.enabled = false;
            e.disabled_reason = Some(reason.to_owned());
            e.updated_at = now;
            Ok(true)
        })
        .await;
    match changed {
        Ok(e) => {
            tracing::warn!(endpoint = %id, %reason, "webhook endpoint disabled");
            metrics::counter!("cartwheel_webhook_endpoints_disabled_total").increment(1);
            let webhook_id = format!("endpoint.disabled:{id}:{}", now.millis());
            let payload = json!({
                "type": "endpoint.disabled",
                "timestamp": now,
                "data": {"endpoint_id": id, "url": e.url, "reason": reason},
            });
            if let Err(err) = deps.store.system_event(id, &webhook_id, &payload).await {
                tracing::warn!(endpoint = %id, error = %err, "endpoint.disabled not published");
            }
        }
        Err(err) => tracing::warn!(endpoint = %id, error = %err, "could not disable the endpoint"),
    }
}

/// Starts a task for each replay of the endpoint not yet running.
fn start_replays(d: &Arc<Dispatcher>, workers: &TaskTracker, running: &mut HashSet<String>) {
    let replays = d.endpoint.borrow().replays.clone();
    for r in replays {
        if running.insert(r.id.clone()) {
            workers.spawn(replay(d.clone(), r));
        }
    }
}

/// Delivers again every event of the log in the replay's range, source by source, one
/// message at a time; then forgets the replay and its consumers.
async fn replay(d: Arc<Dispatcher>, r: Replay) {
    let ep = endpoint_id(&d);
    for source in SOURCES {
        let name = Names::webhook_replay_consumer(&ep, &r.id, source);
        loop {
            if d.stop.is_cancelled() {
                return;
            }
            let Some(consumer) = persistently(&d, "a replay consumer", || {
                consumer_for(&d.deps, source, &name, r.since)
            })
            .await
            else {
                return;
            };
            let batch = consumer
                .fetch()
                .max_messages(64)
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let Ok(mut batch) = batch else { continue };
            let mut got = 0;
            let mut past_end = false;
            while let Some(Ok(msg)) = batch.next().await {
                got += 1;
                let Ok((seq, published, pending)) = msg
                    .info()
                    .map(|i| (i.stream_sequence, published_at(&i).millis(), i.pending))
                else {
                    continue;
                };
                if published > r.until.millis() {
                    past_end = true;
                    break;
                }
                lock(&d.held).insert((source, seq), msg.clone());
                let verdict = handle(&d, source, &msg, Some(&r.id)).await;
                lock(&d.held).remove(&(source, seq));
                match verdict {
                    Verdict::Done => {
                        let _ = msg.double_ack().await;
                    }
                    Verdict::Stop => return,
                }
                if pending == 0 {
                    past_end = true;
                    break;
                }
            }
            if past_end || got == 0 {
                break;
            }
        }
    }
    let done = d
        .deps
        .store
        .change_endpoint(&ep, |e| {
            let before = e.replays.len();
            e.replays.retain(|x| x.id != r.id);
            Ok(e.replays.len() != before)
        })
        .await;
    if let Err(e) = done {
        tracing::warn!(endpoint = %ep, replay = %r.id, error = %e, "replay done, not recorded");
        return;
    }
    for source in SOURCES {
        let name = Names::webhook_replay_consumer(&ep, &r.id, source);
        if let Ok(stream) = d
            .deps
            .store
            .js
            .get_stream(stream_of(d.deps.names(), source))
            .await
        {
            let _ = stream.delete_consumer(&name).await;
        }
    }
    tracing::info!(endpoint = %ep, replay = %r.id, "webhook replay done");
}

/// Deletes every consumer of an endpoint (its sources' and its replays').
pub(crate) async fn delete_consumers(deps: &Deps, e: &Endpoint) {
    for source in SOURCES {
        let Ok(stream) = deps
            .store
            .js
            .get_stream(stream_of(deps.names(), source))
            .await
        else {
            continue;
        };
        let _ = stream
            .delete_consumer(&Names::webhook_consumer(&e.id, source))
            .await;
        for r in &e.replays {
            let _ = stream
                .delete_consumer(&Names::webhook_replay_consumer(&e.id, &r.id, source))
                .await;
        }
    }
}
