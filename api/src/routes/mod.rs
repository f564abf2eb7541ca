//! The v1 REST routes (DESIGN.md, "The HTTP and WebSocket contract") and the router that
//! wraps them in the edge's middleware.
//!
//! One file per resource; each exposes `routes()`. Handlers validate every path id before
//! any bus request (ids become NATS subject tokens) and never touch storage.

pub(crate) mod carts;
mod cluster;
mod health;
mod inventory;
mod orders;
mod products;
mod sign_in;
mod webhooks;

use crate::error::AppError;
use crate::openapi::{ApiDoc, Documents};
use crate::state::AppState;
use crate::{auth, limits, metrics, middleware, openapi, ws};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use cartwheel_bus::messages::{DEFAULT_PAGE, MAX_PAGE};
use cartwheel_domain::validate;
use std::sync::Arc;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest page cursor accepted (cursors are opaque strings made by the nodes).
const MAX_CURSOR_LEN: usize = 512;

/// The documented routes: every route here is in the OpenAPI document by construction
/// (`routes!` registers the handler and its `#[utoipa::path]` together).
pub(crate) fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(products::routes())
        .merge(inventory::routes())
        .merge(carts::routes())
        .merge(orders::routes())
        .merge(health::routes())
        .merge(cluster::routes())
        .merge(sign_in::routes())
        .merge(webhooks::routes())
        .routes(routes!(ws::upgrade))
        .routes(routes!(metrics::scrape))
}

/// The OpenAPI document of the edge.
pub(crate) fn openapi_document() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// The whole edge: routes, fallbacks and middleware.
///
/// Middleware, outermost first: request id and trace context → access log → metrics →
/// body limit and deadline → authentication → rate limit → the handler.
pub(crate) fn router(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    let (api, doc) = documented().split_for_parts();
    let asyncapi =
        cartwheel_bus::asyncapi::document(state.bus().names(), env!("CARGO_PKG_VERSION"));
    let docs = Arc::new(Documents::new(&doc, &asyncapi));
    let auth = state.config().auth.clone();
    api.merge(crate::web::routes())
        .merge(openapi::routes(docs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::rate_limit,
        ))
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::authenticate(auth.clone(), req, next)
        }))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::limits,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
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
