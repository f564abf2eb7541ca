//! `/webhooks` (admin): register endpoints that receive events signed as the Standard
//! Webhooks spec says, read their deliveries, retry one, replay a range, send a test.
//! The edge forwards each request to `{prefix}.webhook.admin`, which any node answers.

use super::{page_limit, present, valid_id};
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{Json, Path, Query, RequestId};
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use cartwheel_bus::messages::WebhookCommand;
use cartwheel_domain::Timestamp;
use cartwheel_domain::webhook::{Delivery, DeliveryStatus, Endpoint, Replay};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, delete))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(retry))
        .routes(routes!(replay))
        .routes(routes!(test))
}

/// Sends an admin command and waits for its answer.
async fn ask<T: DeserializeOwned>(
    state: &AppState,
    rid: &RequestId,
    cmd: WebhookCommand,
) -> Result<T, AppError> {
    // A retry or a test waits for the endpoint's answer: allow for the node's request
    // timeout on top of the edge's own.
    let timeout = state.config().request_timeout;
    Ok(state.bus().webhook(&cmd, rid.as_str(), timeout).await?)
}

/// A new endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    /// Where deliveries are POSTed (`http` or `https`; private addresses are refused
    /// unless the nodes allow them).
    url: String,
    /// What it is for.
    #[serde(default)]
    description: String,
    /// The event types it receives: names such as `order.confirmed`, prefixes such as
    /// `order.*`, or `*`; empty or absent: all.
    #[serde(default)]
    event_types: Vec<String>,
    /// Whether deliveries start at once (default true).
    #[serde(default = "yes")]
    enabled: bool,
    /// Its signing secret (`whsec_` and 24 to 64 bytes of base64); made up when absent.
    #[serde(default)]
    secret: Option<String>,
}

fn yes() -> bool {
    true
}

/// Changes to an endpoint; absent fields stay.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    /// A new URL.
    url: Option<String>,
    /// A new description.
    description: Option<String>,
    /// A new filter.
    event_types: Option<Vec<String>>,
    /// Enable (clears the reason it was disabled) or disable.
    enabled: Option<bool>,
}

/// A list of endpoints.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
struct Endpoints {
    /// The endpoints, oldest first.
    items: Vec<Endpoint>,
}

/// A list of deliveries.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
struct Deliveries {
    /// The deliveries, newest first.
    items: Vec<Delivery>,
}

/// Register an endpoint (admin). The answer carries its secret.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, description = "the endpoint", body = Endpoint), Errors),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Json(body): Json<CreateWebhook>,
) -> Result<(StatusCode, Json<Endpoint>), AppError> {
    caller.admin()?;
    let cmd = WebhookCommand::Create {
        url: body.url,
        description: body.description,
        event_types: body.event_types,
        enabled: body.enabled,
        secret: body.secret,
    };
    Ok((StatusCode::CREATED, Json(ask(&state, &rid, cmd).await?)))
}

/// Every endpoint (admin).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks",
    responses((status = 200, description = "the endpoints", body = Endpoints), Errors),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
) -> Result<Json<Endpoints>, AppError> {
    caller.admin()?;
    let items = ask(&state, &rid, WebhookCommand::List).await?;
    Ok(Json(Endpoints { items }))
}

/// One endpoint (admin).
#[utoipa::path(get, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint")),
    responses((status = 200, description = "the endpoint", body = Endpoint), Errors),
    security(("bearer" = [])))]
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    Ok(Json(ask(&state, &rid, WebhookCommand::Get { id }).await?))
}

/// Change an endpoint (admin): URL, description, filter, enabled.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = String, Path, description = "the endpoint")),
    responses((status = 200, description = "the endpoint", body = Endpoint), Errors),
    security(("bearer" = [])))]
async fn update(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateWebhook>,
) -> Result<Json<Endpoint>, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    let cmd = WebhookCommand::Update {
        id,
        url: body.url,
        description: body.description,
        event_types: body.event_types,
        enabled: body.enabled,
    };
    Ok(Json(ask(&state, &rid, cmd).await?))
}

/// Remove an endpoint and its delivery position (admin).
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint")),
    responses((status = 204, description = "removed"), Errors),
    security(("bearer" = [])))]
async fn delete(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    ask::<()>(&state, &rid, WebhookCommand::Delete { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query string of a secret rotation.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RotateParams {
    /// How long the old secret still signs, in seconds (default 86400).
    grace_secs: Option<String>,
}

/// Rotate an endpoint's secret (admin): deliveries carry both signatures until the
/// grace period ends.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint"), RotateParams),
    responses((status = 200, description = "the endpoint with its new secret first", body = Endpoint), Errors),
    security(("bearer" = [])))]
async fn rotate_secret(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<RotateParams>,
) -> Result<Json<Endpoint>, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    let grace_secs = match present(params.grace_secs) {
        None => 86_400,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= 30 * 86_400)
            .ok_or_else(|| AppError::invalid("grace_secs must be 0 to 2592000"))?,
    };
    let cmd = WebhookCommand::RotateSecret {
        id,
        grace_ms: grace_secs * 1000,
    };
    Ok(Json(ask(&state, &rid, cmd).await?))
}

/// The query string of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveriesParams {
    /// Only `pending`, `succeeded` or `dead` ones.
    status: Option<String>,
    /// At most this many, 1 to 200 (default 50).
    limit: Option<String>,
}

/// An endpoint's deliveries with their attempt logs (admin), newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint"), DeliveriesParams),
    responses((status = 200, description = "the deliveries", body = Deliveries), Errors),
    security(("bearer" = [])))]
async fn deliveries(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<DeliveriesParams>,
) -> Result<Json<Deliveries>, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    let status = match present(params.status).as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some("dead") => Some(DeliveryStatus::Dead),
        Some(other) => {
            return Err(AppError::invalid(format!(
                "status must be pending, succeeded or dead, not {other:?}"
            )));
        }
    };
    let limit = page_limit(params.limit)? as usize;
    let items = ask(
        &state,
        &rid,
        WebhookCommand::Deliveries { id, status, limit },
    )
    .await?;
    Ok(Json(Deliveries { items }))
}

/// A delivery id: letters, digits, `-`, `_` and `.`, at most 300.
fn valid_delivery(id: &str) -> Result<(), AppError> {
    let ok = !id.is_empty()
        && id.len() <= 300
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(AppError::invalid(
            "delivery must be 1 to 300 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// Attempt a delivery again now (admin), e.g. a dead letter once the receiver is fixed.
/// The attempt is added to its log; a 2xx marks it succeeded.
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{delivery}/retry", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint"),
        ("delivery" = String, Path, description = "the delivery")),
    responses((status = 200, description = "the delivery with the new attempt", body = Delivery), Errors),
    security(("bearer" = [])))]
async fn retry(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Json<Delivery>, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    valid_delivery(&delivery)?;
    Ok(Json(
        ask(&state, &rid, WebhookCommand::Retry { id, delivery }).await?,
    ))
}

/// The query string of a replay.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReplayParams {
    /// From this moment of the event log (RFC 3339).
    since: Option<String>,
    /// To this moment (RFC 3339; default now).
    until: Option<String>,
}

fn moment(field: &str, raw: &str) -> Result<Timestamp, AppError> {
    Timestamp::parse_rfc3339(raw).ok_or_else(|| {
        AppError::invalid(format!(
            "{field} must be an RFC 3339 time such as 2026-12-02T10:00:00Z"
        ))
    })
}

/// Deliver again every event of the log between `since` and `until` (admin), under
/// their original `webhook-id`s, in order per entity. Runs in the background.
#[utoipa::path(post, path = "/webhooks/{id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint"), ReplayParams),
    responses((status = 202, description = "the replay, started", body = Replay), Errors),
    security(("bearer" = [])))]
async fn replay(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ReplayParams>,
) -> Result<(StatusCode, Json<Replay>), AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    let since = match present(params.since) {
        Some(raw) => moment("since", &raw)?,
        None => return Err(AppError::invalid("since is required")),
    };
    let until = match present(params.until) {
        Some(raw) => moment("until", &raw)?,
        None => Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        ),
    };
    let cmd = WebhookCommand::Replay {
        id,
        since: since.millis(),
        until: until.millis(),
    };
    Ok((StatusCode::ACCEPTED, Json(ask(&state, &rid, cmd).await?)))
}

/// Send a `webhook.test` event to the endpoint now (admin), once; answers its delivery.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint")),
    responses((status = 200, description = "the test delivery and its attempt", body = Delivery), Errors),
    security(("bearer" = [])))]
async fn test(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, AppError> {
    caller.admin()?;
    valid_id("id", &id)?;
    Ok(Json(ask(&state, &rid, WebhookCommand::Test { id }).await?))
}
