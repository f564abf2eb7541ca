//! Outbound webhooks: endpoints, their deliveries and the event types they receive.
//!
//! An endpoint is a URL that receives, signed as the Standard Webhooks spec (v1) says,
//! every event whose type its filter names. A delivery is one event on its way to one
//! endpoint: its attempts, and where it stands. Types are dotted (`order.confirmed`);
//! [`webhook_type`] maps each domain [`Event`] to one, and [`EVENT_TYPES`] lists them.

use crate::error::DomainError;
use crate::event::Event;
use crate::order::OrderStatus;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Every event type an endpoint can ask for. A filter entry is one of these, or a
/// prefix wildcard (`order.*`), or `*`.
pub const EVENT_TYPES: [&str; 14] = [
    "cart.updated",
    "cart.checked_out",
    "order.created",
    "order.product_reserved",
    "order.confirmed",
    "order.failed",
    "order.completed",
    "order.cancelled",
    "stock.updated",
    "product.created",
    "product.updated",
    "product.price_changed",
    "endpoint.disabled",
    "webhook.test",
];

/// The dotted type of a domain event.
pub fn webhook_type(event: &Event) -> &'static str {
    match event {
        Event::CartUpdated { .. } => "cart.updated",
        Event::CartCheckedOut { .. } => "cart.checked_out",
        Event::OrderCreated { .. } => "order.created",
        Event::OrderStatusUpdated { order, .. } => match order.status {
            OrderStatus::Pending => "order.created",
            OrderStatus::ProductReserved => "order.product_reserved",
            OrderStatus::Confirmed => "order.confirmed",
            OrderStatus::Failed => "order.failed",
            OrderStatus::Completed => "order.completed",
            OrderStatus::Cancelled => "order.cancelled",
        },
        Event::StockUpdated { .. } => "stock.updated",
        Event::ProductCreated { .. } => "product.created",
        Event::ProductUpdated { .. } => "product.updated",
        Event::PriceChanged { .. } => "product.price_changed",
    }
}

/// Checks a filter: every entry a known type, a known prefix with `.*`, or `*`.
pub fn validate_filter(filter: &[String]) -> Result<(), DomainError> {
    if filter.len() > 32 {
        return Err(DomainError::invalid("event_types", "at most 32 entries"));
    }
    for entry in filter {
        let known = entry == "*"
            || EVENT_TYPES.contains(&entry.as_str())
            || entry.strip_suffix(".*").is_some_and(|prefix| {
                EVENT_TYPES
                    .iter()
                    .any(|t| t.split_once('.').is_some_and(|(p, _)| p == prefix))
            });
        if !known {
            return Err(DomainError::invalid(
                "event_types",
                format!(
                    "unknown event type {entry:?}; known: {}, a prefix such as order.*, or *",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `filter` (already validated) accepts `event_type`. An empty filter accepts
/// every type.
pub fn filter_accepts(filter: &[String], event_type: &str) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            f == "*"
                || f == event_type
                || f.strip_suffix(".*").is_some_and(|prefix| {
                    event_type.split_once('.').is_some_and(|(p, _)| p == prefix)
                })
        })
}

/// One signing secret of an endpoint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// `whsec_` and the base64 of the key's bytes.
    pub secret: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// After a rotation, the old secret signs too until this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// A replay asked of an endpoint: every event of the log in `[since, until]` delivered
/// again (with its own webhook-id, so a receiver sees what it already had).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The replay's id.
    pub id: String,
    /// From this moment of the log (inclusive).
    pub since: Timestamp,
    /// To this moment (inclusive).
    pub until: Timestamp,
    /// When it was asked for.
    pub created_at: Timestamp,
}

/// A registered receiver of events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The endpoint's id (`ep_…`).
    pub id: String,
    /// Where deliveries are POSTed (`http` or `https`).
    pub url: String,
    /// What it is for, for people.
    #[serde(default)]
    pub description: String,
    /// The event types it receives (empty: all).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Whether deliveries are made. A disabled endpoint keeps its place in the log and
    /// resumes from it when enabled again.
    pub enabled: bool,
    /// Why it was disabled, when the system did it (`410 Gone`, failing for too long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Its signing secrets, newest first; more than one during a rotation's grace.
    pub secrets: Vec<Secret>,
    /// Since when every delivery attempt has failed (none: the last one succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    /// Replays not yet finished.
    #[serde(default)]
    pub replays: Vec<Replay>,
    /// When it was registered: deliveries start with the events of this moment.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Endpoint {
    /// Whether it receives events of `event_type`.
    pub fn accepts(&self, event_type: &str) -> bool {
        filter_accepts(&self.event_types, event_type)
    }

    /// The secrets that sign at `now`: the current one and any still in its grace.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| s.secret.as_str())
            .collect()
    }
}

/// Where a delivery stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; retried on the schedule.
    Pending,
    /// The endpoint answered 2xx.
    Succeeded,
    /// Every attempt of the schedule failed: it is in the dead-letter stream.
    Dead,
}

/// One HTTP attempt of a delivery.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it was sent.
    pub at: Timestamp,
    /// The HTTP status, when the endpoint answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long until the answer (or the failure), in ms.
    pub latency_ms: u64,
    /// Why it failed, when it did (timeout, refused, the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first KiB of the response body.
    #[serde(default)]
    pub response: String,
    /// Who asked: `schedule`, `manual` (a retry through the API) or `test`.
    pub trigger: String,
}

/// One event on its way to one endpoint.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The delivery's id (unique per endpoint).
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The `webhook-id` header: the event's identity, the same on every retry.
    pub webhook_id: String,
    /// The event type.
    pub event_type: String,
    /// The JSON body sent (`{"type","timestamp","data"}`).
    pub payload: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next scheduled attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// Why it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_reason: Option<String>,
    /// The replay it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_id: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A delivery id from a webhook id: the event's identity with `:` as `.` (a KV key and a
/// URL path segment may hold it).
pub fn delivery_id(webhook_id: &str) -> String {
    webhook_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_known_types_prefixes_and_star() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_filter(&f(&["order.confirmed", "stock.*", "*"])).is_ok());
        assert!(validate_filter(&f(&["order.shipped"])).is_err());
        assert!(validate_filter(&f(&["nope.*"])).is_err());
        assert!(filter_accepts(&[], "order.created"));
        assert!(filter_accepts(&f(&["order.*"]), "order.failed"));
        assert!(!filter_accepts(&f(&["order.*"]), "stock.updated"));
        assert!(filter_accepts(&f(&["stock.updated"]), "stock.updated"));
    }

    #[test]
    fn delivery_ids_are_key_and_path_safe() {
        assert_eq!(
            delivery_id("order:o-1:3:OrderStatusUpdated"),
            "order.o-1.3.OrderStatusUpdated"
        );
    }
}
