//! `/carts`: create, read, change lines, check out. Each cart is one actor; the WebSocket
//! commands share the validation here ([`quantity`]).

use super::valid_id;
use crate::error::AppError;
use crate::extract::{Json, Path, RequestId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use cartwheel_bus::messages::CartCommand;
use cartwheel_domain::{Cart, Order, validate};
use serde::Deserialize;

/// The header carrying a checkout's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/carts", post(create))
        .route("/carts/{id}", get(read))
        .route("/carts/{id}/items", post(add_item))
        .route(
            "/carts/{id}/items/{sku}",
            patch(set_qty).delete(remove_item),
        )
        .route("/carts/{id}/checkout", post(checkout))
}

/// Checks a line quantity: an integer from 1 (0 too when `allow_zero`, meaning "remove")
/// to `u32::MAX`. The node enforces the per-line maximum.
pub(crate) fn quantity(value: i64, allow_zero: bool) -> Result<u32, AppError> {
    let min = if allow_zero { 0 } else { 1 };
    match u32::try_from(value) {
        Ok(q) if q >= min => Ok(q),
        _ => Err(AppError::invalid(format!(
            "qty must be an integer from {min} to {}",
            u32::MAX
        ))),
    }
}

/// `{"user_id"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCart {
    user_id: String,
}

/// `{"sku","qty"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    sku: String,
    qty: i64,
}

/// `{"qty"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQty {
    qty: i64,
}

/// `POST /carts` → 201 cart with a fresh id.
async fn create(
    State(state): State<AppState>,
    rid: RequestId,
    Json(body): Json<NewCart>,
) -> Result<(StatusCode, Json<Cart>), AppError> {
    valid_id("user_id", &body.user_id)?;
    // A v4 UUID in simple form: 32 hex digits, always a valid id.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let cmd = CartCommand::Create {
        user_id: body.user_id,
    };
    let cart = state.bus().cart(&id, &cmd, rid.as_str()).await?;
    Ok((StatusCode::CREATED, Json(cart)))
}

/// `GET /carts/{id}` → cart.
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    Ok(Json(
        state
            .bus()
            .cart(&id, &CartCommand::Get, rid.as_str())
            .await?,
    ))
}

/// `POST /carts/{id}/items` → cart (adds to an existing line).
async fn add_item(
    State(state): State<AppState>,
    rid: RequestId,
    Path(id): Path<String>,
    Json(body): Json<AddItem>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    valid_id("sku", &body.sku)?;
    let cmd = CartCommand::AddItem {
        sku: body.sku,
        qty: quantity(body.qty, false)?,
    };
    Ok(Json(state.bus().cart(&id, &cmd, rid.as_str()).await?))
}

/// `PATCH /carts/{id}/items/{sku}` → cart (0 removes the line).
async fn set_qty(
    State(state): State<AppState>,
    rid: RequestId,
    Path((id, sku)): Path<(String, String)>,
    Json(body): Json<SetQty>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    valid_id("sku", &sku)?;
    let cmd = CartCommand::SetQty {
        sku,
        qty: quantity(body.qty, true)?,
    };
    Ok(Json(state.bus().cart(&id, &cmd, rid.as_str()).await?))
}

/// `DELETE /carts/{id}/items/{sku}` → cart.
async fn remove_item(
    State(state): State<AppState>,
    rid: RequestId,
    Path((id, sku)): Path<(String, String)>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    valid_id("sku", &sku)?;
    let cmd = CartCommand::RemoveItem { sku };
    Ok(Json(state.bus().cart(&id, &cmd, rid.as_str()).await?))
}

/// `POST /carts/{id}/checkout` with `Idempotency-Key` → the order.
///
/// * `201 Created`: this request placed the order and its saga settled (`CONFIRMED`, or
///   `FAILED` with `failure_reason`) within `checkout_wait`;
/// * `202 Accepted`: this request placed the order but the saga is still running; poll
///   `GET /orders/{id}`;
/// * `200 OK`: the key was used before on this cart; the answer is that same order, in
///   whatever state it is now.
async fn checkout(
    State(state): State<AppState>,
    rid: RequestId,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Order>), AppError> {
    valid_id("cart_id", &id)?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| AppError::invalid("the Idempotency-Key header is required"))?
        .to_str()
        .map_err(|_| AppError::invalid("the Idempotency-Key header must be printable ASCII"))?;
    validate::idempotency_key(key)?;
    let wait = state.config().checkout_wait;
    let reply = state.bus().checkout(&id, key, wait, rid.as_str()).await?;
    let status = if !reply.created {
        StatusCode::OK
    } else if reply.order.status.saga_settled() {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(reply.order)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_bounded() {
        assert_eq!(quantity(1, false).unwrap(), 1);
        assert!(quantity(0, false).is_err());
        assert_eq!(quantity(0, true).unwrap(), 0);
        assert!(quantity(-1, true).is_err());
        assert_eq!(quantity(i64::from(u32::MAX), false).unwrap(), u32::MAX);
        assert!(quantity(i64::from(u32::MAX) + 1, false).is_err());
    }
}
