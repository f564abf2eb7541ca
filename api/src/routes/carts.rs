//! `/carts`: create, read, change lines, check out. Each cart is one actor; the WebSocket
//! commands share the validation here ([`quantity`]).

use super::valid_id;
use crate::access;
use crate::auth::{self, Caller};
use crate::error::AppError;
use crate::extract::{Json, Path, RequestId};
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cartwheel_bus::messages::CartCommand;
use cartwheel_domain::{Cart, Order, validate};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The header carrying a checkout's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Namespace of cart ids derived from `(user, Idempotency-Key)` on `POST /carts`.
const CART_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8d2b_41c7_0e5a_4f19_b3d6_7a90_c1e2_f354);

/// The `Idempotency-Key` of a request, if it sent one (validated like a checkout's).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| AppError::invalid("the Idempotency-Key header must be printable ASCII"))?;
    validate::idempotency_key(key)?;
    Ok(Some(key))
}

/// The command id of a cart write under a client's key.
fn key_command_id(key: &str) -> String {
    format!("key:{key}")
}

/// Sends a cart change under the request's `Idempotency-Key` (if any) and answers the cart.
async fn change(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    cmd: &CartCommand,
    rid: &RequestId,
) -> Result<Json<Cart>, AppError> {
    let command_id = idempotency_key(headers)?.map(key_command_id);
    Ok(Json(
        state
            .bus()
            .cart_command(id, cmd, rid.as_str(), command_id.as_deref())
            .await?,
    ))
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read))
        .routes(routes!(add_item))
        .routes(routes!(set_qty, remove_item))
        .routes(routes!(checkout))
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

/// `{"user_id"}`. With auth on, `user_id` may be left out: the cart belongs to the
/// token's `sub`, and naming anyone else is `403` (admins may name anyone).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCart {
    /// The owner; defaults to the token's `sub`. Required when auth is off.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    user_id: Option<String>,
}

/// `{"sku","qty"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddItem {
    /// The product.
    sku: String,
    /// Units to add, at least 1.
    qty: i64,
}

/// `{"qty"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetQty {
    /// New quantity; 0 removes the line.
    qty: i64,
}

/// The owner of a new cart: the body's `user_id` in development mode; the token's `sub`
/// otherwise (a different `user_id` is `403` unless the caller is an admin).
fn owner(caller: &Caller, requested: Option<String>) -> Result<String, AppError> {
    match (caller.user()?, requested) {
        (None, Some(u)) => Ok(u),
        (None, None) => Err(AppError::invalid("user_id is required")),
        (Some(user), None) => Ok(user.id.clone()),
        (Some(user), Some(u)) if u == user.id || user.admin => Ok(u),
        (Some(_), Some(_)) => Err(auth::forbidden(
            "user_id must be the token's subject (or left out)",
        )),
    }
}

/// Create a cart (201) with a fresh id.
#[utoipa::path(post, path = "/carts", tag = "carts", request_body = NewCart,
    params(("Idempotency-Key" = Option<String>, Header, description = "optional: the same key again (per user) answers the cart the first request created")),
    responses((status = 201, description = "the new cart", body = Cart), Errors),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<NewCart>,
) -> Result<(StatusCode, Json<Cart>), AppError> {
    let user_id = owner(&caller, body.user_id)?;
    valid_id("user_id", &user_id)?;
    // A UUID in simple form: 32 hex digits, always a valid id. Under an Idempotency-Key
    // it is derived from (user, key), so a resend reaches the cart the first one made.
    let key = idempotency_key(&headers)?;
    let id = match key {
        Some(key) => uuid::Uuid::new_v5(&CART_ID_NAMESPACE, format!("{user_id}/{key}").as_bytes()),
        None => uuid::Uuid::new_v4(),
    }
    .simple()
    .to_string();
    let cmd = CartCommand::Create { user_id };
    let command_id = key.map(key_command_id);
    let cart = state
        .bus()
        .cart_command(&id, &cmd, rid.as_str(), command_id.as_deref())
        .await?;
    state
        .owners()
        .remember(format!("cart:{}", cart.id), &cart.user_id);
    Ok((StatusCode::CREATED, Json(cart)))
}

/// Read a cart.
#[utoipa::path(get, path = "/carts/{id}", tag = "carts",
    params(("id" = String, Path, description = "cart id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the cart", body = Cart), Errors),
    security(("bearer" = [])))]
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Cart>, AppError> {
    caller.user()?;
    valid_id("cart_id", &id)?;
    let cart = state
        .bus()
        .cart(&id, &CartCommand::Get, rid.as_str())
        .await?;
    access::check_cart(&state, &caller, &id, &cart.user_id)?;
    Ok(Json(cart))
}

/// Add units of a sku (adds to an existing line).
#[utoipa::path(post, path = "/carts/{id}/items", tag = "carts", request_body = AddItem,
    params(("id" = String, Path, description = "cart id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("Idempotency-Key" = Option<String>, Header, description = "optional: the same key again (per cart) changes the cart once and answers the cart")),
    responses((status = 200, description = "the cart", body = Cart), Errors),
    security(("bearer" = [])))]
async fn add_item(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<AddItem>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    valid_id("sku", &body.sku)?;
    access::cart_change(&state, &caller, &id, rid.as_str()).await?;
    let cmd = CartCommand::AddItem {
        sku: body.sku,
        qty: quantity(body.qty, false)?,
    };
    change(&state, &headers, &id, &cmd, &rid).await
}

/// Set a line's quantity (0 removes the line).
#[utoipa::path(patch, path = "/carts/{id}/items/{sku}", tag = "carts", request_body = SetQty,
    params(("id" = String, Path, description = "cart id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("Idempotency-Key" = Option<String>, Header, description = "optional: the same key again (per cart) changes the cart once and answers the cart")),
    responses((status = 200, description = "the cart", body = Cart), Errors),
    security(("bearer" = [])))]
async fn set_qty(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    headers: HeaderMap,
    Path((id, sku)): Path<(String, String)>,
    Json(body): Json<SetQty>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    valid_id("sku", &sku)?;
    access::cart_change(&state, &caller, &id, rid.as_str()).await?;
    let cmd = CartCommand::SetQty {
        sku,
        qty: quantity(body.qty, true)?,
    };
    change(&state, &headers, &id, &cmd, &rid).await
}

/// Remove a line.
#[utoipa::path(delete, path = "/carts/{id}/items/{sku}", tag = "carts",
    params(("id" = String, Path, description = "cart id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("Idempotency-Key" = Option<String>, Header, description = "optional: the same key again (per cart) changes the cart once and answers the cart")),
    responses((status = 200, description = "the cart", body = Cart), Errors),
    security(("bearer" = [])))]
async fn remove_item(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    headers: HeaderMap,
    Path((id, sku)): Path<(String, String)>,
) -> Result<Json<Cart>, AppError> {
    valid_id("cart_id", &id)?;
    valid_id("sku", &sku)?;
    access::cart_change(&state, &caller, &id, rid.as_str()).await?;
    let cmd = CartCommand::RemoveItem { sku };
    change(&state, &headers, &id, &cmd, &rid).await
}

/// Check the cart out under an `Idempotency-Key`.
///
/// * `201 Created`: this request placed the order and its saga settled (`CONFIRMED`, or
///   `FAILED` with `failure_reason`) within `checkout_wait`;
/// * `202 Accepted`: this request placed the order but the saga is still running; poll
///   `GET /orders/{id}`;
/// * `200 OK`: the key was used before on this cart; the answer is that same order, in
///   whatever state it is now.
#[utoipa::path(post, path = "/carts/{id}/checkout", tag = "carts",
    params(("id" = String, Path, description = "cart id", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("Idempotency-Key" = String, Header, description = "the same key again answers the same order")),
    responses(
        (status = 201, description = "placed; the saga settled", body = Order),
        (status = 202, description = "placed; the saga is still running", body = Order),
        (status = 200, description = "a replayed key: the same order", body = Order),
        Errors),
    security(("bearer" = [])))]
async fn checkout(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Order>), AppError> {
    valid_id("cart_id", &id)?;
    access::cart_change(&state, &caller, &id, rid.as_str()).await?;
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| AppError::invalid("the Idempotency-Key header is required"))?
        .to_str()
        .map_err(|_| AppError::invalid("the Idempotency-Key header must be printable ASCII"))?;
    validate::idempotency_key(key)?;
    let wait = state.config().checkout_wait;
    let reply = state.bus().checkout(&id, key, wait, rid.as_str()).await?;
    state
        .owners()
        .remember(format!("order:{}", reply.order.id), &reply.order.user_id);
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
