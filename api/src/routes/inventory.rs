//! `/inventory/{sku}`: set, adjust and read stock on the sku's inventory actor.

use super::valid_id;
use crate::error::AppError;
use crate::extract::{Json, Path, RequestId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::{post, put};
use cartwheel_bus::messages::InventoryCommand;
use cartwheel_domain::InventoryView;
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/inventory/{sku}", put(set).get(read))
        .route("/inventory/{sku}/adjust", post(adjust))
}

/// `{"on_hand": n}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    on_hand: u64,
}

/// `{"delta": n}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Adjust {
    delta: i64,
}

/// `PUT /inventory/{sku}` → inventory.
async fn set(
    State(state): State<AppState>,
    rid: RequestId,
    Path(sku): Path<String>,
    Json(body): Json<SetStock>,
) -> Result<Json<InventoryView>, AppError> {
    valid_id("sku", &sku)?;
    let cmd = InventoryCommand::SetStock {
        on_hand: body.on_hand,
    };
    Ok(Json(state.bus().stock(&sku, &cmd, rid.as_str()).await?))
}

/// `POST /inventory/{sku}/adjust` → inventory (never below what is reserved).
async fn adjust(
    State(state): State<AppState>,
    rid: RequestId,
    Path(sku): Path<String>,
    Json(body): Json<Adjust>,
) -> Result<Json<InventoryView>, AppError> {
    valid_id("sku", &sku)?;
    if body.delta == 0 {
        return Err(AppError::invalid("delta must not be zero"));
    }
    let cmd = InventoryCommand::AdjustStock { delta: body.delta };
    Ok(Json(state.bus().stock(&sku, &cmd, rid.as_str()).await?))
}

/// `GET /inventory/{sku}` → inventory.
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
