//! `/healthz` (the process is alive) and `/readyz` (it can serve: NATS is connected and a
//! node answers a catalog query).

use crate::error::AppError;
use crate::extract::{Json, RequestId};
use crate::openapi::Errors;
use crate::state::AppState;
use async_nats::connection::State as NatsState;
use axum::extract::State;
use cartwheel_bus::messages::CatalogQuery;
use cartwheel_domain::ErrorCode;
use serde_json::{Value, json};
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long `/readyz` waits for a node to answer.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `{"status"}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape of the `json!` replies
pub(crate) struct Status {
    /// `ok` or `ready`.
    status: String,
}

/// Liveness: 200 `{"status":"ok"}` while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "alive", body = Status)), security(()))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 `{"status":"ready"}`, or 503 `unavailable` when NATS is not connected
/// or no node answers a one-item catalog query within a second.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Status), Errors), security(()))]
async fn readyz(State(state): State<AppState>, rid: RequestId) -> Result<Json<Value>, AppError> {
    let conn = state.bus().nats().connection_state();
    if conn != NatsState::Connected {
        return Err(
            AppError::new(ErrorCode::Unavailable, "not connected to NATS")
                .with_detail(format!("connection state: {conn:?}")),
        );
    }
    let probe = CatalogQuery {
        limit: 1,
        ..CatalogQuery::default()
    };
    match tokio::time::timeout(
        READY_PROBE_TIMEOUT,
        state.bus().catalog(&probe, rid.as_str()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(e)) => {
            Err(AppError::new(ErrorCode::Unavailable, "no node is serving")
                .with_detail(e.to_string()))
        }
        Err(_) => Err(AppError::new(
            ErrorCode::Unavailable,
            "no node answered within 1 s",
        )),
    }
}
