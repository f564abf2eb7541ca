//! The admin subject: register, change, list and remove endpoints; read deliveries;
//! retry one, replay a range, send a test. Any node answers (one queue group).

use crate::attempt::{self, Outcome};
use crate::dispatch;
use crate::error::WebhookError;
use crate::{Deps, sign, ssrf};
use async_nats::{Message, Subscriber};
use bytes::Bytes;
use cartwheel_bus::ApiError;
use cartwheel_bus::codec;
use cartwheel_bus::messages::{Reply, WebhookCommand};
use cartwheel_domain::webhook::{self, Delivery, DeliveryStatus, Endpoint, Replay, Secret};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most deliveries one listing answers.
const MAX_LISTED: usize = 500;

/// Serves admin requests until `shutdown`, then unsubscribes.
pub(crate) async fn serve(
    deps: Arc<Deps>,
    mut sub: Subscriber,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else { break };
        let deps = deps.clone();
        tracker.spawn(async move { answer(&deps, msg).await });
    }
    let _ = sub.unsubscribe().await;
}

fn encode<T: Serialize>(reply: Result<T, WebhookError>) -> Bytes {
    let reply: Reply<T> = reply.map_err(|e| e.api());
    codec::encode(&reply).unwrap_or_else(|e| {
        let err: Reply<()> = Err(ApiError::internal(format!("reply not encodable: {e}")));
        codec::encode(&err).unwrap_or_default()
    })
}

async fn answer(deps: &Deps, msg: Message) {
    let Some(reply_to) = msg.reply.clone() else {
        return;
    };
    let body = match codec::decode::<WebhookCommand>(&msg.payload) {
        Ok(cmd) => run(deps, cmd).await,
        Err(e) => encode::<()>(Err(WebhookError::invalid("command", e.to_string()))),
    };
    if let Err(e) = deps.nats.publish(reply_to, body).await {
        tracing::debug!(error = %e, "webhook admin reply not sent");
    }
}

async fn run(deps: &Deps, cmd: WebhookCommand) -> Bytes {
    match cmd {
        WebhookCommand::Create {
            url,
            description,
            event_types,
            enabled,
            secret,
        } => encode(create(deps, url, description, event_types, enabled, secret).await),
        WebhookCommand::List => encode(deps.store.endpoints().await),
        WebhookCommand::Get { id } => encode(deps.store.existing(&id).await.map(|(e, _)| e)),
        WebhookCommand::Update {
            id,
            url,
            description,
            event_types,
            enabled,
        } => encode(update(deps, &id, url, description, event_types, enabled).await),
        WebhookCommand::Delete { id } => encode(delete(deps, &id).await),
        WebhookCommand::RotateSecret { id, grace_ms } => encode(rotate(deps, &id, grace_ms).await),
        WebhookCommand::Deliveries { id, status, limit } => {
            encode(deliveries(deps, &id, status, limit).await)
        }
        WebhookCommand::Retry { id, delivery } => encode(retry(deps, &id, &delivery).await),
        WebhookCommand::Replay { id, since, until } => {
            encode(replay(deps, &id, since, until).await)
        }
        WebhookCommand::Test { id } => encode(test(deps, &id).await),
    }
}

fn check_filter(event_types: &[String]) -> Result<(), WebhookError> {
    webhook::validate_filter(event_types)
        .map_err(|e| WebhookError::invalid("event_types", e.to_string()))
}

fn check_description(description: &str) -> Result<(), WebhookError> {
    if description.len() > 512 {
        return Err(WebhookError::invalid(
            "description",
            "must be at most 512 characters",
        ));
    }
    Ok(())
}

async fn create(
    deps: &Deps,
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
    secret: Option<String>,
) -> Result<Endpoint, WebhookError> {
    ssrf::check_url(&url, &deps.settings.allow_networks).await?;
    check_filter(&event_types)?;
    check_description(&description)?;
    let secret = match secret {
        Some(s) => {
            sign::key(&s)?;
            s
        }
        None => sign::new_secret(),
    };
    let now = attempt::now();
    let endpoint = Endpoint {
        id: format!("ep_{}", uuid::Uuid::new_v4().simple()),
        url,
        description,
        event_types,
        enabled,
        disabled_reason: None,
        secrets: vec![Secret {
            secret,
            created_at: now,
            expires_at: None,
        }],
        failing_since: None,
        replays: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    deps.store.create_endpoint(&endpoint).await?;
    tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, "webhook endpoint registered");
    Ok(endpoint)
}

async fn update(
    deps: &Deps,
    id: &str,
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    enabled: Option<bool>,
) -> Result<Endpoint, WebhookError> {
    if let Some(url) = &url {
        ssrf::check_url(url, &deps.settings.allow_networks).await?;
    }
    if let Some(types) = &event_types {
        check_filter(types)?;
    }
    if let Some(d) = &description {
        check_description(d)?;
    }
    let now = attempt::now();
    deps.store
        .change_endpoint(id, |e| {
            if let Some(url) = &url {
                e.url.clone_from(url);
            }
            if let Some(d) = &description {
                e.description.clone_from(d);
            }
            if let Some(types) = &event_types {
                e.event_types.clone_from(types);
            }
            if let Some(on) = enabled {
                if on && !e.enabled {
                    // Enabled again: a fresh start for the failure clock.
                    e.disabled_reason = None;
                    e.failing_since = None;
                }
                e.enabled = on;
            }
            e.updated_at = now;
            Ok(true)
        })
        .await
}

async fn delete(deps: &Deps, id: &str) -> Result<(), WebhookError> {
    let (e, _) = deps.store.existing(id).await?;
    deps.store.delete_endpoint(id).await?;
    dispatch::delete_consumers(deps, &e).await;
    tracing::info!(endpoint = %id, "webhook endpoint deleted");
    Ok(())
}

async fn rotate(deps: &Deps, id: &str, grace_ms: u64) -> Result<Endpoint, WebhookError> {
    let now = attempt::now();
    let until = now.plus_millis(i64::try_from(grace_ms).unwrap_or(i64::MAX));
    let fresh = sign::new_secret();
    deps.store
        .change_endpoint(id, |e| {
            // The current secret signs until the grace ends; older ones already ended.
            e.secrets.retain(|s| s.expires_at.is_none_or(|at| at > now));
            for s in &mut e.secrets {
                s.expires_at = Some(s.expires_at.map_or(until, |at| at.min(until)));
            }
            e.secrets.insert(
                0,
                Secret {
                    secret: fresh.clone(),
                    created_at: now,
                    expires_at: None,
                },
            );
            e.updated_at = now;
            Ok(true)
        })
        .await
}

async fn deliveries(
    deps: &Deps,
    id: &str,
    status: Option<DeliveryStatus>,
    limit: usize,
) -> Result<Vec<Delivery>, WebhookError> {
    deps.store.existing(id).await?;
    let mut all = deps.store.deliveries(id).await?;
    if let Some(s) = status {
        all.retain(|d| d.status == s);
    }
    all.truncate(limit.clamp(1, MAX_LISTED));
    Ok(all)
}

/// One attempt now, recorded in the delivery; a success marks it delivered.
async fn retry(deps: &Deps, id: &str, delivery_id: &str) -> Result<Delivery, WebhookError> {
    let (endpoint, _) = deps.store.existing(id).await?;
    let mut d = deps
        .store
        .delivery(id, delivery_id)
        .await?
        .ok_or_else(|| WebhookError::NotFound(format!("delivery {delivery_id} of {id}")))?;
    let (attempt, outcome) =
        attempt::send(&deps.http, &endpoint, &d.webhook_id, &d.payload, "manual").await;
    d.attempts.push(attempt);
    d.updated_at = attempt::now();
    if outcome == Outcome::Delivered {
        d.status = DeliveryStatus::Succeeded;
        d.next_attempt_at = None;
    }
    deps.store.put_delivery(&d).await?;
    if outcome == Outcome::Gone {
        dispatch::disable(deps, id, "the endpoint answered 410 Gone").await;
    }
    Ok(d)
}

async fn replay(deps: &Deps, id: &str, since: i64, until: i64) -> Result<Replay, WebhookError> {
    if until < since {
        return Err(WebhookError::invalid("until", "must not be before since"));
    }
    let now = attempt::now();
    let r = Replay {
        id: format!("rp_{}", uuid::Uuid::new_v4().simple()),
        since: cartwheel_domain::Timestamp(since),
        until: cartwheel_domain::Timestamp(until),
        created_at: now,
    };
    deps.store
        .change_endpoint(id, |e| {
            if e.replays.len() >= 8 {
                return Err(WebhookError::invalid(
                    "replay",
                    "at most 8 replays of one endpoint at once",
                ));
            }
            e.replays.push(r.clone());
            e.updated_at = now;
            Ok(true)
        })
        .await?;
    Ok(r)
}

/// A `webhook.test` event sent now (once, no retries), recorded as a delivery.
async fn test(deps: &Deps, id: &str) -> Result<Delivery, WebhookError> {
    let (endpoint, _) = deps.store.existing(id).await?;
    let now = attempt::now();
    let webhook_id = format!("webhook.test:{id}:{}", uuid::Uuid::new_v4().simple());
    let payload = json!({
        "type": "webhook.test",
        "timestamp": now,
        "data": {"endpoint_id": id, "message": "a test delivery from Cartwheel"},
    })
    .to_string();
    let (attempt, outcome) =
        attempt::send(&deps.http, &endpoint, &webhook_id, &payload, "test").await;
    let d = Delivery {
        id: webhook::delivery_id(&webhook_id),
        endpoint_id: id.to_owned(),
        webhook_id,
        event_type: "webhook.test".to_owned(),
        payload,
        status: if outcome == Outcome::Delivered {
            DeliveryStatus::Succeeded
        } else {
            DeliveryStatus::Dead
        },
        attempts: vec![attempt],
        next_attempt_at: None,
        dead_reason: (outcome != Outcome::Delivered).then(|| "a test is not retried".to_owned()),
        replay_id: None,
        created_at: now,
        updated_at: now,
    };
    deps.store.put_delivery(&d).await?;
    Ok(d)
}
