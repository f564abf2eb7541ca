//! The request client: typed requests with a deadline and a bounded retry when nothing
//! is subscribed (a node restarting or a partition moving). Every request carries the
//! request id and the caller's trace context, and its latency is recorded in the
//! `cartwheel_nats_request_duration_seconds` histogram (by target kind and outcome).

use crate::codec;
use crate::error::BusError;
use crate::headers;
use crate::messages::{
    CartCommand, CatalogQuery, CheckoutReply, InventoryCommand, OrderCommand, OrdersQuery, Page,
    Reply,
};
use crate::names::{EntityKind, Names, partition};
use async_nats::{Client, Request, RequestErrorKind};
use cartwheel_domain::{Cart, InventoryView, Order, Product};
use serde::{Serialize, de::DeserializeOwned};
use std::time::{Duration, Instant};

/// Settings of a [`BusClient`].
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Subject and bucket names.
    pub names: Names,
    /// Partition count of the cluster.
    pub partitions: u32,
    /// Deadline of one request once a node took it.
    pub request_timeout: Duration,
    /// How long to keep waiting for an owner while nothing serves the subject ("no
    /// responders", or a `Cw-Retry: moving` refusal). It must cover a failover — the lease
    /// TTL plus one placement tick — so a request sent while a partition moves is served
    /// by the new owner instead of failing.
    pub retry_window: Duration,
    /// How long a request that is safe to resend (a read, a de-duplicated cart command)
    /// waits for an answer before another copy goes out beside it. A node that is still
    /// subscribed but cannot answer — paused, or wedged past its lease — swallows the
    /// copies it gets; the partition's new owner answers the next one.
    pub hedge_after: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            names: Names::default(),
            partitions: 64,
            request_timeout: Duration::from_secs(5),
            // The default lease TTL (6 s) plus one tick (1 s), plus a second of slack.
            retry_window: Duration::from_secs(8),
            hedge_after: Duration::from_secs(1),
        }
    }
}

/// Whether a request may be sent again when its outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A read, or a command the receiver de-duplicates (a cart write under its command
    /// id, a reservation step under its order id): when the connection it went out on was
    /// replaced before the reply came, it is sent again at once on the new one; when no
    /// copy answered within `hedge_after`, another copy goes out beside it.
    Safe,
    /// The same, for a request whose answer legitimately takes up to this long (a
    /// checkout or an order placement waits for its saga; the idempotency key makes a
    /// resend safe). Hedged only once that wait and `hedge_after` have passed without an
    /// answer: a copy sent earlier would queue behind the saga it waits for (measured:
    /// hedging checkouts every 2 s left 32 of 1,000 contended checkouts unsettled).
    Slow(Duration),
    /// A command that might apply twice: an unknown outcome is a [`BusError::Timeout`].
    Never,
}

impl Resend {
    /// How an inventory command may be resent. None is hedged: a hot sku queues its
    /// reservations (a thousand checkouts of one sku take seconds each), and copies sent
    /// by time would only lengthen the queue they wait in (measured: 28 of 1,000
    /// checkouts unsettled). The saga retries its steps itself, and they are idempotent
    /// per order id.
    pub fn for_inventory(_cmd: &InventoryCommand) -> Resend {
        Resend::Never
    }

    /// How an order command may be resent: a read is safe; a placement is [`Resend::Slow`]
    /// (the order id comes from the cart and the key, and a copy only waits for the
    /// same saga); status changes are sent once.
    pub fn for_order(cmd: &OrderCommand) -> Resend {
        match cmd {
            OrderCommand::Get => Resend::Safe,
            OrderCommand::Place { wait_ms, .. } => Resend::Slow(Duration::from_millis(*wait_ms)),
            _ => Resend::Never,
        }
    }
}

/// How long an attempt runs before the requester starts watching for a reconnect that
/// would have lost it.
const RECONNECT_CHECK_AFTER: Duration = Duration::from_millis(200);
/// How often it looks, from then on.
const RECONNECT_CHECK_EVERY: Duration = Duration::from_millis(50);
/// At most this many copies of one safe request are in flight at once.
const MAX_COPIES: usize = 3;

/// The `target` label of the request metric: the entity kind or query a subject
/// addresses (`cart`, `inventory`, `order`, `query.catalog`, …). Never an id, so the
/// label's values stay few.
fn target_label(subject: &str) -> String {
    let mut tokens = subject.split('.').skip(1);
    match (tokens.next(), tokens.next()) {
        (Some("query"), Some(q)) => format!("query.{q}"),
        (Some(kind), _) => kind.to_owned(),
        (None, _) => "other".to_owned(),
    }
}

/// What became of one attempt of a resendable request.
enum Settled<T> {
    /// The first copy to come back with something other than a timeout (or the last
    /// copy's timeout).
    Done(T),
    /// The client reconnected meanwhile: every copy's request or reply may be gone.
    Reconnected,
}

/// Runs an attempt of a request that is safe to send again. Only attempts that run
/// longer than [`RECONNECT_CHECK_AFTER`] cost anything extra:
///
/// - when the client reconnects under it, the copies in flight may have been lost with
///   the old connection ([`Settled::Reconnected`]);
/// - when `hedge` is set and no copy has answered after that long, another copy is sent,
///   and another every `hedge` after that while a copy could still answer within
///   `timeout`; at most [`MAX_COPIES`] are in flight (the oldest is dropped for a new
///   one), and the first answer wins. This is what serves a request swallowed by a node
///   that is still subscribed but cannot answer (a process paused or cut off past its
///   lease): the partition's new owner answers the copy sent after it subscribed, and the
///   receiver's command de-duplication makes the copies one command.
async fn settle<F, Fut, T, E>(
    mut send: F,
    hedge: Option<Duration>,
    timeout: Duration,
    stats: &async_nats::Statistics,
    connects: u64,
    is_timeout: impl Fn(&Result<T, E>) -> bool,
) -> Settled<Result<T, E>>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    use futures::StreamExt as _;
    use futures::future::{AbortHandle, abortable};
    // Every copy ends by the first copy's deadline: hedging never makes a request longer.
    let started = Instant::now();
    let deadline = started + timeout;
    let mut copies = futures::stream::FuturesUnordered::new();
    let mut handles: std::collections::VecDeque<AbortHandle> = std::collections::VecDeque::new();
    let mut push = |copies: &mut futures::stream::FuturesUnordered<_>| {
        let left = deadline.saturating_duration_since(Instant::now());
        let (copy, handle) = abortable(send(left));
        copies.push(copy);
        handles.push_back(handle);
        if handles.len() > MAX_COPIES
            && let Some(oldest) = handles.pop_front()
        {
            oldest.abort();
        }
    };
    push(&mut copies);
    let first = tokio::time::timeout(RECONNECT_CHECK_AFTER, copies.next()).await;
    match first {
        Ok(Some(Ok(done))) => return Settled::Done(done),
        Ok(Some(Err(_))) | Ok(None) => return Settled::Reconnected,
        Err(_) => {}
    }
    let mut check = tokio::time::interval(RECONNECT_CHECK_EVERY);
    let mut next_copy = hedge.map(|after| started + after);
    loop {
        // A copy sent now must still be able to answer within the request's time.
        let hedge_at =
            next_copy.filter(|_| hedge.is_some_and(|every| started.elapsed() + every < timeout));
        tokio::select! {
            done = copies.next() => match done {
                // A dropped copy, or a timed-out one while others still wait.
                Some(Err(_aborted)) => {}
                Some(Ok(done)) if !copies.is_empty() && is_timeout(&done) => {}
                Some(Ok(done)) => return Settled::Done(done),
                // `None` cannot happen (the last copy's outcome is returned), but an empty
                // set must not spin: treat it like a lost connection, which resends.
                None => return Settled::Reconnected,
            },
            () = async {
                match hedge_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                push(&mut copies);
                next_copy = hedge.map(|every| Instant::now() + every);
            }
            _ = check.tick() => {
                if stats.connects.load(std::sync::atomic::Ordering::Relaxed) != connects {
                    return Settled::Reconnected;
                }
            }
        }
    }
}

/// A cheap-to-clone client for typed requests to actors and queries.
#[derive(Debug, Clone)]
pub struct BusClient {
    nats: Client,
    config: BusConfig,
}

impl BusClient {
    /// Wraps a connected NATS client.
    pub fn new(nats: Client, config: BusConfig) -> BusClient {
        BusClient { nats, config }
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &Client {
        &self.nats
    }

    /// The settings.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The names in use.
    pub fn names(&self) -> &Names {
        &self.config.names
    }

    /// The command subject of an entity.
    pub fn subject(&self, kind: EntityKind, id: &str) -> String {
        self.config
            .names
            .entity(kind, partition(id, self.config.partitions), id)
    }

    /// The internal command subject of an entity (commands only nodes send).
    pub fn internal_subject(&self, kind: EntityKind, id: &str) -> String {
        self.config
            .names
            .entity_internal(kind, partition(id, self.config.partitions), id)
    }

    /// The subject `internal` selects.
    fn subject_for(&self, kind: EntityKind, id: &str, internal: bool) -> String {
        if internal {
            self.internal_subject(kind, id)
        } else {
            self.subject(kind, id)
        }
    }

    /// Sends `req` to `subject` and decodes the `Reply<Resp>`.
    ///
    /// "No responders" is retried with backoff for `retry_window`, then answered as
    /// [`BusError::Unavailable`]. A request that a node took but did not answer within
    /// `timeout` is [`BusError::Timeout`] and is not retried: it may have been applied.
    pub async fn request<Req, Resp>(
        &self,
        subject: &str,
        req: &Req,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.request_with(subject, req, request_id, None, Resend::Never, timeout)
            .await
    }

    /// [`BusClient::request`] with a command id (`Cw-Command-Id`) and a resend policy.
    pub async fn request_with<Req, Resp>(
        &self,
        subject: &str,
        req: &Req,
        request_id: &str,
        command_id: Option<&str>,
        resend: Resend,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let started = Instant::now();
        let result = self
            .request_once(subject, req, request_id, command_id, resend, timeout)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(BusError::Remote(_)) => "refused",
            Err(BusError::Unavailable { .. }) => "unavailable",
            Err(BusError::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        metrics::histogram!(
            "cartwheel_nats_request_duration_seconds",
            "target" => target_label(subject),
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    async fn request_once<Req, Resp>(
        &self,
        subject: &str,
        req: &Req,
        request_id: &str,
        command_id: Option<&str>,
        resend: Resend,
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = codec::encode(req)?;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(5);
        // Set once the request starts waiting for an owner (failover), for the metric.
        let mut waited_for_owner = false;
        // The request id, command id and the caller's trace context travel with every
        // attempt, so a resent command is recognised as the same command.
        let mut message_headers = headers::with_request_id(request_id);
        if let Some(command_id) = command_id {
            message_headers.insert(headers::COMMAND_ID, command_id);
        }
        headers::inject_trace_context(&mut message_headers);
        let stats = self.nats.statistics();
        let result = loop {
            let connects = stats.connects.load(std::sync::atomic::Ordering::Relaxed);
            let send = |timeout: Duration| {
                let request = Request::new()
                    .payload(payload.clone())
                    .headers(message_headers.clone())
                    .timeout(Some(timeout));
                self.nats.send_request(subject.to_owned(), request)
            };
            let hedge = match resend {
                Resend::Safe => Some(self.config.hedge_after),
                // Only a request that did not answer when its wait was over: an answer
                // normally comes by then (the order as it is, 202), so under contention
                // no copy queues behind the saga; a request swallowed by a node that
                // lost the partition gets one more chance.
                Resend::Slow(wait) => Some(wait + self.config.hedge_after),
                Resend::Never => None,
            };
            let outcome = match resend {
                Resend::Never => Some(send(timeout).await),
                Resend::Safe | Resend::Slow(_) => {
                    let timed_out = |r: &Result<async_nats::Message, async_nats::RequestError>| {
                        r.as_ref()
                            .is_err_and(|e| e.kind() == RequestErrorKind::TimedOut)
                    };
                    // A request swallowed by a node that lost its partition is answered
                    // by the first copy sent after the new owner subscribed: a safe
                    // request keeps its copies going for as long as a failover may take.
                    let horizon = match resend {
                        Resend::Safe => timeout.max(self.config.retry_window),
                        _ => timeout,
                    };
                    match settle(send, hedge, horizon, &stats, connects, timed_out).await {
                        Settled::Done(outcome) => Some(outcome),
                        Settled::Reconnected => None,
                    }
                }
            };
            let Some(outcome) = outcome else {
                // The connection this attempt used was replaced: its request or its reply
                // may be gone. The command is safe to send again; do it now.
                tracing::info!(%subject, %request_id, "NATS reconnected under a request; sending it again");
                metrics::counter!("cartwheel_nats_request_resent_total", "target" => target_label(subject)).increment(1);
                continue;
            };
            let waiting = match outcome {
                Ok(msg) => {
                    let moving = msg
                        .headers
                        .as_ref()
                        .is_some_and(|h| h.get(headers::RETRY).is_some());
                    if !moving || started.elapsed() >= self.config.retry_window {
                        let reply: Result<Reply<Resp>, _> = codec::decode(&msg.payload);
                        break match reply {
                            Ok(reply) => reply.map_err(BusError::Remote),
                            Err(e) => Err(e),
                        };
                    }
                    "moving"
                }
                Err(e) => match e.kind() {
                    RequestErrorKind::NoResponders => {
                        let elapsed = started.elapsed();
                        if elapsed >= self.config.retry_window {
                            break Err(BusError::Unavailable {
                                subject: subject.to_owned(),
                                retried_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                            });
                        }
                        "no_responders"
                    }
                    RequestErrorKind::TimedOut => {
                        break Err(BusError::Timeout {
                            subject: subject.to_owned(),
                            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                        });
                    }
                    _ => break Err(BusError::Nats(e.to_string())),
                },
            };
            if !waited_for_owner {
                waited_for_owner = true;
                tracing::info!(%subject, %request_id, reason = waiting,
                    "no owner serves this subject yet (a partition is moving); waiting for one");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        };
        if waited_for_owner {
            let outcome = if result.is_ok() { "served" } else { "gave_up" };
            metrics::histogram!(
                "cartwheel_nats_request_owner_wait_seconds",
                "target" => target_label(subject),
                "outcome" => outcome,
            )
            .record(started.elapsed().as_secs_f64());
            tracing::info!(%subject, %request_id, outcome,
                waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "waited for an owner");
        }
        result
    }

    /// A cart command that answers a cart. Its command id is the request id, so the
    /// requester's own resends are recognised by the cart.
    pub async fn cart(
        &self,
        cart_id: &str,
        cmd: &CartCommand,
        request_id: &str,
    ) -> Result<Cart, BusError> {
        self.cart_command(cart_id, cmd, request_id, None).await
    }

    /// A cart command under a client's command id (an `Idempotency-Key`, a WebSocket
    /// frame id): the cart applies it once however often it arrives, and answers a repeat
    /// with the cart as it is. `None`: the request id is the command id.
    pub async fn cart_command(
        &self,
        cart_id: &str,
        cmd: &CartCommand,
        request_id: &str,
        command_id: Option<&str>,
    ) -> Result<Cart, BusError> {
        let subject = self.subject(EntityKind::Cart, cart_id);
        self.request_with(
            &subject,
            cmd,
            request_id,
            command_id,
            Resend::Safe,
            self.config.request_timeout,
        )
        .await
    }

    /// Checks a cart out; waits up to `wait` for the saga to settle.
    pub async fn checkout(
        &self,
        cart_id: &str,
        idempotency_key: &str,
        wait: Duration,
        request_id: &str,
    ) -> Result<CheckoutReply, BusError> {
        let subject = self.subject(EntityKind::Cart, cart_id);
        let cmd = CartCommand::Checkout {
            idempotency_key: idempotency_key.to_owned(),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        // The cart waits for the order, which waits for the saga: allow for both.
        let timeout = self.config.request_timeout + wait;
        // The idempotency key makes a resend reach the same order.
        self.request_with(
            &subject,
            &cmd,
            request_id,
            None,
            Resend::Slow(wait),
            timeout,
        )
        .await
    }

    /// A sku command that answers the product.
    pub async fn product(
        &self,
        sku: &str,
        cmd: &InventoryCommand,
        request_id: &str,
    ) -> Result<Product, BusError> {
        let subject = self.subject_for(EntityKind::Inventory, sku, cmd.is_internal());
        let resend = Resend::for_inventory(cmd);
        let timeout = self.config.request_timeout;
        self.request_with(&subject, cmd, request_id, None, resend, timeout)
            .await
    }

    /// A sku command that answers the stock.
    pub async fn stock(
        &self,
        sku: &str,
        cmd: &InventoryCommand,
        request_id: &str,
    ) -> Result<InventoryView, BusError> {
        let subject = self.subject_for(EntityKind::Inventory, sku, cmd.is_internal());
        let resend = Resend::for_inventory(cmd);
        let timeout = self.config.request_timeout;
        self.request_with(&subject, cmd, request_id, None, resend, timeout)
            .await
    }

    /// An order command.
    pub async fn order(
        &self,
        order_id: &str,
        cmd: &OrderCommand,
        request_id: &str,
    ) -> Result<Order, BusError> {
        let subject = self.subject_for(EntityKind::Order, order_id, cmd.is_internal());
        let timeout = match cmd {
            OrderCommand::Place { wait_ms, .. } => {
                self.config.request_timeout + Duration::from_millis(*wait_ms)
            }
            _ => self.config.request_timeout,
        };
        let resend = Resend::for_order(cmd);
        self.request_with(&subject, cmd, request_id, None, resend, timeout)
            .await
    }

    /// A read-side query: any node of the queue group answers, so a copy is sent to
    /// another when the first has not answered within `hedge_after` (a node that is
    /// paused, or busy, must not hold a read for the whole timeout).
    async fn query<Req, Resp>(
        &self,
        subject: &str,
        query: &Req,
        request_id: &str,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let timeout = self.config.request_timeout;
        self.request_with(subject, query, request_id, None, Resend::Safe, timeout)
            .await
    }

    /// A product list.
    pub async fn catalog(
        &self,
        query: &CatalogQuery,
        request_id: &str,
    ) -> Result<Page<Product>, BusError> {
        self.query(&self.config.names.query_catalog(), query, request_id)
            .await
    }

    /// The cluster's status, from whichever node answers.
    pub async fn cluster_status(
        &self,
        request_id: &str,
    ) -> Result<crate::cluster::ClusterStatus, BusError> {
        let query = crate::messages::ClusterStatusQuery {};
        self.query(
            &self.config.names.query_cluster_status(),
            &query,
            request_id,
        )
        .await
    }

    /// Where an entity lives right now, from whichever node answers.
    pub async fn locate(
        &self,
        kind: EntityKind,
        id: &str,
        request_id: &str,
    ) -> Result<crate::cluster::Location, BusError> {
        let query = crate::messages::LocateQuery {
            kind: kind.as_str().to_owned(),
            id: id.to_owned(),
        };
        self.query(&self.config.names.query_locate(), &query, request_id)
            .await
    }

    /// An order list.
    pub async fn orders(
        &self,
        query: &OrdersQuery,
        request_id: &str,
    ) -> Result<Page<Order>, BusError> {
        self.query(&self.config.names.query_orders(), query, request_id)
            .await
    }

    /// A webhook admin command, answered by any node; `T` is the command's answer (see
    /// [`crate::messages::WebhookCommand`]). Not resent: a create must not run twice.
    pub async fn webhook<T: DeserializeOwned>(
        &self,
        cmd: &crate::messages::WebhookCommand,
        request_id: &str,
        timeout: std::time::Duration,
    ) -> Result<T, BusError> {
        let subject = self.config.names.webhook_admin();
        self.request_with(&subject, cmd, request_id, None, Resend::Never, timeout)
            .await
    }
}
