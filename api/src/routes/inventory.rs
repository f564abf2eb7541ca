//! `/inventory/{sku}`: set, adjust and read stock on the sku's inventory actor.

use super::valid_id;
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{Json, Path, RequestId};
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use cartwheel_bus::messages::InventoryCommand;
use cartwheel_domain::InventoryView;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set, read))
        .routes(routes!(adjust))
}

/// `{"on_hand": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetStock {
    /// Units on hand (never below what is reserved).
    on_hand: u64,
}

/// `{"delta": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Adjust {
    /// Change of stock on hand, not zero.
    delta: i64,
}

/// Set stock on hand (admin).
#[utoipa::path(put, path = "/inventory/{sku}", tag = "inventory", request_body = SetStock,
    params(("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the stock", body = InventoryView), Errors),
    security(("bearer" = [])))]
async fn set(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(sku): Path<String>,
    Json(body): Json<SetStock>,
) -> Result<Json<InventoryView>, AppError> {
    caller.admin()?;
    valid_id("sku", &sku)?;
    let cmd = InventoryCommand::SetStock {
        on_hand: body.on_hand,
    };
    Ok(Json(state.bus().stock(&sku, &cmd, rid.as_str()).await?))
}

/// Add to or take from stock on hand (admin); never below what is reserved.
#[utoipa::path(post, path = "/inventory/{sku}/adjust", tag = "inventory", request_body = Adjust,
    params(("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the stock", body = InventoryView), Errors),
    security(("bearer" = [])))]
async fn adjust(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(sku): Path<String>,
    Json(body): Json<Adjust>,
) -> Result<Json<InventoryView>, AppError> {
    caller.admin()?;
    valid_id("sku", &sku)?;
    if body.delta == 0 {
        return Err(AppError::invalid("delta must not be zero"));
    }
    let cmd = InventoryCommand::AdjustStock { delta: body.delta };
    Ok(Json(state.bus().stock(&sku, &cmd, rid.as_str()).await?))
}

/// Read stock (public).
#[utoipa::path(get, path = "/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the stock", body = InventoryView), Errors),
    security(()))]
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    Path(sku): Path<String>,
) -> Result<Json<InventoryView>, AppError> {
    valid_id("sku", &sku)?;
    let view = state
        .bus()
        .stock(&sku, &InventoryCommand::GetStock, rid.as_str())
        .await?;
    Ok(Json(view))
}
