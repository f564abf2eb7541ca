//! The v1 REST routes (DESIGN.md, "The HTTP and WebSocket contract") and the router that
//! wraps them in the edge's middleware.
//!
//! One file per resource; each exposes `routes()`. Handlers validate every path id before
//! any bus request (ids become NATS subject tokens) and never touch storage.

pub(crate) mod carts;
mod health;
mod inventory;
mod orders;
mod products;

use crate::error::AppError;
use crate::middleware;
use crate::state::AppState;
use crate::ws;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use cartwheel_bus::messages::{DEFAULT_PAGE, MAX_PAGE};
use cartwheel_domain::validate;
use tower_http::trace::TraceLayer;

/// Longest page cursor accepted (cursors are opaque strings made by the nodes).
const MAX_CURSOR_LEN: usize = 512;

/// The whole edge: routes, fallbacks and middleware.
pub(crate) fn router(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    Router::new()
        .merge(products::routes())
        .merge(inventory::routes())
        .merge(carts::routes())
        .merge(orders::routes())
        .merge(health::routes())
        .route("/ws", get(ws::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::limits,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::not_found("no such route")
}

async fn method_not_allowed() -> AppError {
    AppError::method_not_allowed()
}

/// Checks a path or body id (cart id, sku, order id, user id).
pub(crate) fn valid_id(field: &'static str, value: &str) -> Result<(), AppError> {
    validate::id(field, value).map_err(AppError::from)
}

/// `None` for an absent or empty query parameter.
pub(crate) fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// The `limit` query parameter: 1..=MAX_PAGE, DEFAULT_PAGE when absent.
pub(crate) fn page_limit(value: Option<String>) -> Result<u32, AppError> {
    let Some(raw) = present(value) else {
        return Ok(DEFAULT_PAGE);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(AppError::invalid(format!(
            "limit must be an integer from 1 to {MAX_PAGE}"
        ))),
    }
}

/// The `cursor` query parameter, bounded in length.
pub(crate) fn page_cursor(value: Option<String>) -> Result<Option<String>, AppError> {
    let cursor = present(value);
    if cursor.as_ref().is_some_and(|c| c.len() > MAX_CURSOR_LEN) {
        return Err(AppError::invalid(format!(
            "cursor must be at most {MAX_CURSOR_LEN} characters"
        )));
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(String::new())).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some("1".into())).unwrap(), 1);
        assert_eq!(page_limit(Some(MAX_PAGE.to_string())).unwrap(), MAX_PAGE);
        for bad in ["0", "201", "-1", "x", "10000"] {
            assert!(page_limit(Some(bad.into())).is_err(), "{bad}");
        }
    }
}
