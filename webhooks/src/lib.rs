//! Outbound webhooks following the Standard Webhooks spec (v1).
//!
//! - **Endpoints** are registered through the admin subject (`{prefix}.webhook.admin`,
//!   see [`cartwheel_bus::messages::WebhookCommand`]; the edge serves it as
//!   `/webhooks`), answered by any node, and kept in the `{prefix}_webhooks` bucket.
//! - **Delivery.** Each endpoint has one durable JetStream consumer per event stream
//!   (`wh_{endpoint}_{source}`), starting at the moment it was registered. The node that
//!   holds the lease of the endpoint's partition (the same placement as entities) runs
//!   its dispatcher: so deliveries move with the partition when a node leaves or dies,
//!   and the consumer's acknowledgements are the delivery position, which survives any
//!   process. Messages of one entity are delivered one after another, in log order;
//!   different entities in parallel. A message is acknowledged once every event in it
//!   was delivered or dead-lettered; each delivery's attempts are kept in the
//!   `{prefix}_webhook_deliveries` bucket, so a new owner continues the schedule where
//!   the old one stopped and never re-sends what was delivered (at least once: a crash
//!   between the endpoint's 2xx and that record re-sends, under the same `webhook-id`).
//! - **Retries.** The schedule (the spec's by default), `Retry-After` on 429/502/503/504,
//!   a request timeout, a circuit breaker per endpoint, `410 Gone` disabling it, and an
//!   endpoint failing for longer than `disable_after` disabled with an
//!   `endpoint.disabled` event. A delivery whose schedule is exhausted goes to the
//!   dead-letter stream, from where it can be retried; a range of the log can be
//!   replayed.
//! - **Safety.** Targets are checked against SSRF at registration and on every
//!   connection ([`ssrf`]).

mod admin;
mod attempt;
mod dispatch;
mod error;
pub mod sign;
pub mod ssrf;
mod store;

pub use error::WebhookError;

use async_nats::jetstream;
use cartwheel_bus::Names;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Whether this node owns an endpoint's deliveries now (holds the lease of its
/// partition).
pub type Owns = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The delay before each attempt: the first (0: at once), then after each failure.
    /// Its length is the number of attempts before a delivery is dead-lettered.
    pub schedule: Vec<Duration>,
    /// The longest an endpoint may take to answer.
    pub request_timeout: Duration,
    /// Networks a target may be in although not public (loopback for development and
    /// tests, an internal range for receivers inside the cluster).
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker holds deliveries back before one probe goes through.
    pub breaker_cooldown: Duration,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after: Duration,
    /// Deliveries of one endpoint in flight at once (different entities).
    pub max_in_flight: usize,
    /// How long delivery records, dead letters and system events are kept.
    pub keep_deliveries: Duration,
    /// Replicas of the buckets and streams.
    pub replicas: usize,
    /// How often a node looks at which endpoints it owns.
    pub ownership_tick: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        let s = Duration::from_secs;
        Settings {
            // Standard Webhooks: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
            schedule: vec![
                s(0),
                s(5),
                s(5 * 60),
                s(30 * 60),
                s(2 * 3600),
                s(5 * 3600),
                s(10 * 3600),
                s(10 * 3600),
            ],
            request_timeout: s(15),
            allow_networks: Vec::new(),
            breaker_threshold: 5,
            breaker_cooldown: s(30),
            disable_after: s(5 * 24 * 3600),
            max_in_flight: 16,
            keep_deliveries: s(7 * 24 * 3600),
            replicas: 1,
            ownership_tick: Duration::from_millis(500),
        }
    }
}

/// Parses a schedule: comma-separated durations (`0,5s,5m,30m,2h`, `100ms`).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, WebhookError> {
    let schedule = text
        .split(',')
        .map(|part| parse_duration(part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if schedule.is_empty() || schedule.len() > 32 {
        return Err(WebhookError::invalid("schedule", "1 to 32 delays"));
    }
    Ok(schedule)
}

/// Parses `0`, `250ms`, `5s`, `5m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, WebhookError> {
    let bad = || {
        WebhookError::invalid(
            "duration",
            format!("{text:?}: use 0, 250ms, 5s, 5m, 2h or 1d"),
        )
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => return Err(bad()),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(bad()),
    };
    Ok(Duration::from_millis(ms))
}

/// What the admin server and the dispatchers share.
pub(crate) struct Deps {
    pub(crate) nats: async_nats::Client,
    pub(crate) store: store::Store,
    pub(crate) settings: Settings,
    pub(crate) http: attempt::Client,
    pub(crate) owns: Owns,
}

impl Deps {
    pub(crate) fn names(&self) -> &Names {
        &self.store.names
    }
}

/// The running webhook service of one node: the admin server and the dispatchers of
/// the endpoints it owns.
pub struct Webhooks {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Opens the buckets and streams and starts serving. `owns` says which endpoints
    /// this node delivers for (the node passes: it holds the lease of the endpoint id's
    /// partition).
    pub async fn start(
        nats: async_nats::Client,
        js: jetstream::Context,
        names: Names,
        owns: Owns,
        settings: Settings,
    ) -> Result<Webhooks, WebhookError> {
        let store = store::Store::open(&js, &names, &settings).await?;
        let http = attempt::client(&settings)?;
        let deps = Arc::new(Deps {
            nats,
            store,
            settings,
            http,
            owns,
        });
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let sub = deps
            .nats
            .queue_subscribe(
                deps.names().webhook_admin(),
                deps.names().webhook_queue_group(),
            )
            .await
            .map_err(|e| WebhookError::Nats(format!("subscribing to webhook admin: {e}")))?;
        tracker.spawn(admin::serve(
            deps.clone(),
            sub,
            tracker.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(dispatch::run(deps, tracker.clone(), shutdown.clone()));
        Ok(Webhooks { shutdown, tracker })
    }

    /// Stops: no new admin requests, dispatchers stop after their current attempt (what
    /// they did not acknowledge is redelivered to the next owner), bounded by `timeout`.
    pub async fn stop(self, timeout: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("webhook service did not stop within the timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse() {
        assert_eq!(
            parse_schedule("0, 100ms,5s,2m,1h").unwrap(),
            vec![
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_secs(5),
                Duration::from_secs(120),
                Duration::from_secs(3600)
            ]
        );
        assert!(parse_schedule("5x").is_err());
        assert!(parse_schedule("").is_err());
        assert_eq!(Settings::default().schedule.len(), 8);
    }
}
