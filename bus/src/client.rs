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
    /// How long to keep retrying while nothing answers ("no responders").
    pub retry_window: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            names: Names::default(),
            partitions: 64,
            request_timeout: Duration::from_secs(5),
            retry_window: Duration::from_secs(3),
        }
    }
}

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
        let started = Instant::now();
        let result = self.request_once(subject, req, request_id, timeout).await;
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
        timeout: Duration,
    ) -> Result<Resp, BusError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = codec::encode(req)?;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(5);
        // The request id and the caller's trace context travel with every attempt.
        let mut message_headers = headers::with_request_id(request_id);
        headers::inject_trace_context(&mut message_headers);
        loop {
            let request = Request::new()
                .payload(payload.clone())
                .headers(message_headers.clone())
                .timeout(Some(timeout));
            match self.nats.send_request(subject.to_owned(), request).await {
                Ok(msg) => {
                    let moving = msg
                        .headers
                        .as_ref()
                        .is_some_and(|h| h.get(headers::RETRY).is_some());
                    if moving && started.elapsed() < self.config.retry_window {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        continue;
                    }
                    let reply: Reply<Resp> = codec::decode(&msg.payload)?;
                    return reply.map_err(BusError::Remote);
                }
                Err(e) => match e.kind() {
                    RequestErrorKind::NoResponders => {
                        let elapsed = started.elapsed();
                        if elapsed >= self.config.retry_window {
                            return Err(BusError::Unavailable {
                                subject: subject.to_owned(),
                                retried_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                            });
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                    }
                    RequestErrorKind::TimedOut => {
                        return Err(BusError::Timeout {
                            subject: subject.to_owned(),
                            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                        });
                    }
                    _ => return Err(BusError::Nats(e.to_string())),
                },
            }
        }
    }

    /// A cart command that answers a cart.
    pub async fn cart(
        &self,
        cart_id: &str,
        cmd: &CartCommand,
        request_id: &str,
    ) -> Result<Cart, BusError> {
        let subject = self.subject(EntityKind::Cart, cart_id);
        self.request(&subject, cmd, request_id, self.config.request_timeout)
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
        self.request(&subject, &cmd, request_id, timeout).await
    }

    /// A sku command that answers the product.
    pub async fn product(
        &self,
        sku: &str,
        cmd: &InventoryCommand,
        request_id: &str,
    ) -> Result<Product, BusError> {
        let subject = self.subject(EntityKind::Inventory, sku);
        self.request(&subject, cmd, request_id, self.config.request_timeout)
            .await
    }

    /// A sku command that answers the stock.
    pub async fn stock(
        &self,
        sku: &str,
        cmd: &InventoryCommand,
        request_id: &str,
    ) -> Result<InventoryView, BusError> {
        let subject = self.subject(EntityKind::Inventory, sku);
        self.request(&subject, cmd, request_id, self.config.request_timeout)
            .await
    }

    /// An order command.
    pub async fn order(
        &self,
        order_id: &str,
        cmd: &OrderCommand,
        request_id: &str,
    ) -> Result<Order, BusError> {
        let subject = self.subject(EntityKind::Order, order_id);
        let timeout = match cmd {
            OrderCommand::Place { wait_ms, .. } => {
                self.config.request_timeout + Duration::from_millis(*wait_ms)
            }
            _ => self.config.request_timeout,
        };
        self.request(&subject, cmd, request_id, timeout).await
    }

    /// A product list.
    pub async fn catalog(
        &self,
        query: &CatalogQuery,
        request_id: &str,
    ) -> Result<Page<Product>, BusError> {
        let subject = self.config.names.query_catalog();
        self.request(&subject, query, request_id, self.config.request_timeout)
            .await
    }

    /// An order list.
    pub async fn orders(
        &self,
        query: &OrdersQuery,
        request_id: &str,
    ) -> Result<Page<Order>, BusError> {
        let subject = self.config.names.query_orders();
        self.request(&subject, query, request_id, self.config.request_timeout)
            .await
    }
}
