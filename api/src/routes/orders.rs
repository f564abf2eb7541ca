//! `/orders`: read, list, cancel, move status. Each order is one actor; lists come from
//! the orders query.

use super::{page_cursor, page_limit, present, valid_id};
use crate::access;
use crate::auth::{self, Caller};
use crate::error::AppError;
use crate::extract::{Json, Path, Query, RequestId};
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use cartwheel_bus::messages::{OrderCommand, OrdersQuery, Page};
use cartwheel_domain::{Order, OrderStatus};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read))
        .routes(routes!(cancel))
        .routes(routes!(set_status))
}

/// Parses a status in its JSON form (`COMPLETED`), naming the legal ones when it is not.
fn status(value: &str) -> Result<OrderStatus, AppError> {
    OrderStatus::parse(value).ok_or_else(|| {
        let all: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        AppError::invalid(format!("status must be one of {}", all.join(", ")))
    })
}

/// The query string of `GET /orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this user's orders. With auth on, a user's own id only (the default).
    user_id: Option<String>,
    /// Only orders in this status.
    status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `{"status":"COMPLETED"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetStatus {
    /// The target status.
    status: String,
}

/// List orders, newest first. With auth on, users see their own orders; admins may name
/// any `user_id` or none (every order).
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListParams),
    responses((status = 200, description = "a page of orders", body = Page<Order>), Errors),
    security(("bearer" = [])))]
async fn list(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Order>>, AppError> {
    let mut user_id = present(params.user_id);
    if let Some(u) = &user_id {
        valid_id("user_id", u)?;
    }
    if let Some(user) = caller.user()? {
        match &user_id {
            _ if user.admin => {}
            None => user_id = Some(user.id.clone()),
            Some(u) if *u == user.id => {}
            Some(_) => return Err(auth::forbidden("you may list only your own orders")),
        }
    }
    let query = OrdersQuery {
        user_id,
        status: present(params.status).as_deref().map(status).transpose()?,
        limit: page_limit(params.limit)?,
        cursor: page_cursor(params.cursor)?,
    };
    Ok(Json(state.bus().orders(&query, rid.as_str()).await?))
}

/// Read an order.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "order id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the order", body = Order), Errors),
    security(("bearer" = [])))]
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Order>, AppError> {
    caller.user()?;
    valid_id("order_id", &id)?;
    let order = state
        .bus()
        .order(&id, &OrderCommand::Get, rid.as_str())
        .await?;
    access::check_order(&state, &caller, &id, &order.user_id)?;
    Ok(Json(order))
}

/// Cancel a confirmed order; its stock is returned.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "order id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the cancelled order", body = Order), Errors),
    security(("bearer" = [])))]
async fn cancel(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Order>, AppError> {
    valid_id("order_id", &id)?;
    access::order_change(&state, &caller, &id, rid.as_str()).await?;
    Ok(Json(
        state
            .bus()
            .order(&id, &OrderCommand::Cancel, rid.as_str())
            .await?,
    ))
}

/// Move an order to a status through a legal transition (admin).
#[utoipa::path(put, path = "/orders/{id}/status", tag = "orders", request_body = SetStatus,
    params(("id" = String, Path, description = "order id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the order", body = Order), Errors),
    security(("bearer" = [])))]
async fn set_status(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SetStatus>,
) -> Result<Json<Order>, AppError> {
    caller.admin()?;
    valid_id("order_id", &id)?;
    let cmd = OrderCommand::SetStatus {
        status: status(&body.status)?,
    };
    Ok(Json(state.bus().order(&id, &cmd, rid.as_str()).await?))
}
