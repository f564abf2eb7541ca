//! `/orders`: read, list, cancel, move status. Each order is one actor; lists come from
//! the orders query.

use super::{page_cursor, page_limit, present, valid_id};
use crate::error::AppError;
use crate::extract::{Json, Path, Query, RequestId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post, put};
use cartwheel_bus::messages::{OrderCommand, OrdersQuery, Page};
use cartwheel_domain::{Order, OrderStatus};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders", get(list))
        .route("/orders/{id}", get(read))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/orders/{id}/status", put(set_status))
}

/// Parses a status in its JSON form (`COMPLETED`), naming the legal ones when it is not.
fn status(value: &str) -> Result<OrderStatus, AppError> {
    OrderStatus::parse(value).ok_or_else(|| {
        let all: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        AppError::invalid(format!("status must be one of {}", all.join(", ")))
    })
}

/// The query string of `GET /orders`.
#[derive(Debug, Deserialize)]
struct ListParams {
    user_id: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `{"status":"COMPLETED"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStatus {
    status: String,
}

/// `GET /orders?user_id=&status=&limit=&cursor=` → a page of orders, newest first.
async fn list(
    State(state): State<AppState>,
    rid: RequestId,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Order>>, AppError> {
    let user_id = present(params.user_id);
    if let Some(u) = &user_id {
        valid_id("user_id", u)?;
    }
    let query = OrdersQuery {
        user_id,
        status: present(params.status).as_deref().map(status).transpose()?,
        limit: page_limit(params.limit)?,
        cursor: page_cursor(params.cursor)?,
    };
    Ok(Json(state.bus().orders(&query, rid.as_str()).await?))
}

/// `GET /orders/{id}` → order.
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Order>, AppError> {
    valid_id("order_id", &id)?;
    Ok(Json(
        state
            .bus()
            .order(&id, &OrderCommand::Get, rid.as_str())
            .await?,
    ))
}

/// `POST /orders/{id}/cancel` → the `CANCELLED` order (its stock returned).
async fn cancel(
    State(state): State<AppState>,
    rid: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Order>, AppError> {
    valid_id("order_id", &id)?;
    Ok(Json(
        state
            .bus()
            .order(&id, &OrderCommand::Cancel, rid.as_str())
            .await?,
    ))
}

/// `PUT /orders/{id}/status` `{"status"}` → order, through a legal transition only.
async fn set_status(
    State(state): State<AppState>,
    rid: RequestId,
    Path(id): Path<String>,
    Json(body): Json<SetStatus>,
) -> Result<Json<Order>, AppError> {
    valid_id("order_id", &id)?;
    let cmd = OrderCommand::SetStatus {
        status: status(&body.status)?,
    };
    Ok(Json(state.bus().order(&id, &cmd, rid.as_str()).await?))
}
