//! The edge's documents: the OpenAPI 3.1 document of the HTTP contract, generated from
//! the handlers (`#[utoipa::path]` on each, collected by `utoipa_axum::routes!` as the
//! router is built, so a route cannot be served without being documented), the AsyncAPI
//! 3.0 document of the NATS subjects (built by `cartwheel_bus::asyncapi`), and a
//! browsable page at `/docs`.
//!
//! `/docs` is Scalar's API reference with its script embedded in the binary (the
//! `scalar_api_reference` crate ships it), served from `/docs/scalar.js`: no CDN, nothing
//! loaded from elsewhere. Every error response is documented once, as the `4XX` and `5XX`
//! ranges of [`Errors`], with the one error shape `{"error":{"code","message","request_id"}}`.

use crate::state::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document's fixed parts; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cartwheel",
        description = "The v1 HTTP and WebSocket contract of Cartwheel, a commerce backend \
            built as an actor system on NATS. Money is an integer `price` in minor units with \
            a `currency`. Every error is `{\"error\":{\"code\",\"message\",\"request_id\"}}`; \
            every response carries `x-request-id`. With auth on, send \
            `Authorization: Bearer <JWT>`: carts and orders belong to the token's `sub` \
            (anyone else gets 404), catalog and stock writes and order status changes need \
            the `admin` role. Over the rate limit: 429 with `Retry-After`.",
    ),
    components(schemas(ErrorResponse, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "catalog", description = "Products"),
        (name = "inventory", description = "Stock per sku"),
        (name = "carts", description = "Carts and checkout"),
        (name = "orders", description = "Orders"),
        (name = "websocket", description = "Live carts, orders and stock"),
        (name = "webhooks", description = "Signed event deliveries to your endpoints (Standard Webhooks), with retries, dead letters and replay (admin)"),
        (name = "identity", description = "How to sign in"),
        (name = "operations", description = "Probes, metrics and documents"),
    )
)]
pub(crate) struct ApiDoc;

/// Adds the `bearer` security scheme the operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every error body: `{"error":{"code","message","request_id"}}`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents `error::Envelope`
pub(crate) struct ErrorResponse {
    error: ErrorDetail,
}

/// The inside of an error body.
#[derive(ToSchema)]
#[allow(dead_code)] // documents `error::ErrorBody`
pub(crate) struct ErrorDetail {
    /// Stable snake_case code: `invalid_input`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `insufficient_stock`, `product_inactive`,
    /// `payload_too_large`, `rate_limited`, `internal`, `unavailable`, `timeout`, …
    code: String,
    /// For people.
    message: String,
    /// Also in the `x-request-id` header.
    request_id: String,
}

/// The error responses of every operation: any 4xx or 5xx, with the one error shape.
pub(crate) struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build()
                .into()
        };
        BTreeMap::from([
            (
                "4XX".to_owned(),
                error("the request was refused (see `code`); 429 carries `Retry-After`"),
            ),
            (
                "5XX".to_owned(),
                error("the edge or a node could not answer (see `code`)"),
            ),
        ])
    }
}

/// What `/openapi.json` and `/asyncapi.json` serve, rendered once.
#[derive(Debug)]
pub(crate) struct Documents {
    openapi: String,
    asyncapi: String,
}

impl Documents {
    /// Renders both documents.
    pub(crate) fn new(openapi: &Document, asyncapi: &serde_json::Value) -> Documents {
        Documents {
            openapi: openapi.to_json().unwrap_or_else(|_| "{}".to_owned()),
            asyncapi: asyncapi.to_string(),
        }
    }
}

/// `/openapi.json`, `/asyncapi.json`, `/docs` and its script.
pub(crate) fn routes(docs: Arc<Documents>) -> Router<AppState> {
    let openapi = docs.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { json(openapi.openapi.clone()) }),
        )
        .route(
            "/asyncapi.json",
            get(move || async move { json(docs.asyncapi.clone()) }),
        )
        .route("/docs", get(page))
        .route("/docs/scalar.js", get(script))
}

fn json(body: String) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The API reference page; the document and the script come from this edge.
async fn page() -> Html<String> {
    let config = serde_json::json!({
        "url": "/openapi.json",
        "withDefaultFonts": false,
        "hideClientButton": true,
        "telemetry": false,
    });
    Html(scalar_api_reference::scalar_html(
        &config,
        Some("/docs/scalar.js"),
    ))
}

/// Scalar's script, embedded in the binary.
async fn script() -> Response {
    match scalar_api_reference::get_asset_with_mime("scalar.js") {
        Some((_, body)) => {
            let mut res = body.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            res
        }
        None => crate::error::AppError::not_found("no such file").into_response(),
    }
}
