//! The OpenAPI document and the router agree: every route the router serves is in the
//! document (except the pages that are not API: the shop page, its assets, `/docs`, and
//! the documents themselves), and every documented operation is routed.
//!
//! The router's paths are read from its `Debug` output, which lists every registered
//! path: crude, but it sees routes added by any module, documented or not. If axum ever
//! stops printing them, the first assertion fails loudly rather than passing vacuously.

// Test helpers outside #[test] fns panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use cartwheel_api::{Edge, EdgeConfig};
use cartwheel_bus::{BusClient, BusConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use tower::ServiceExt;

/// Served, deliberately not in the OpenAPI document: pages and documents, not API.
const NOT_API: &[&str] = &[
    "/",
    "/assets/{*path}",
    "/assets/{file}",
    "/assets/{*file}",
    "/docs",
    "/docs/scalar.js",
    "/openapi.json",
    "/asyncapi.json",
];

async fn router() -> Router {
    // Returns at once and keeps retrying in the background: nothing listens on port 1.
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:1")
        .await
        .unwrap();
    // Requests that reach the bus fail fast: only the routing matters here.
    let bus = BusConfig {
        request_timeout: Duration::from_millis(50),
        retry_window: Duration::from_millis(10),
        ..BusConfig::default()
    };
    Edge::new(BusClient::new(nats, bus), EdgeConfig::default()).router()
}

/// Every quoted string in `text` that looks like a route path.
fn paths_in(text: &str) -> BTreeSet<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/') && !s.contains(' '))
        .map(str::to_owned)
        .collect()
}

fn document() -> Value {
    serde_json::from_str(&cartwheel_api::openapi_json()).unwrap()
}

#[tokio::test]
async fn every_route_is_documented() {
    let served = paths_in(&format!("{:?}", router().await));
    assert!(
        served.contains("/carts/{id}/checkout") && served.contains("/healthz"),
        "the router's Debug output no longer lists its paths: {served:?}"
    );
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let missing: Vec<&String> = served
        .iter()
        .filter(|p| !documented.contains(*p) && !NOT_API.contains(&p.as_str()))
        // axum's own catch-all for the fallback
        .filter(|p| !p.contains("__private__"))
        .collect();
    assert!(
        missing.is_empty(),
        "served but not in /openapi.json: {missing:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_described() {
    let doc = document();
    let app = router().await;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            if path != "/healthz" && path != "/metrics" && path != "/ws" {
                assert!(
                    responses.contains_key("4XX") || path == "/readyz",
                    "{method} {path} documents no errors"
                );
            }
            assert!(
                op["summary"].is_string() || op["description"].is_string(),
                "{method} {path} undocumented"
            );
            let uri = path.replace("{id}", "x1").replace("{sku}", "S-1");
            let res = app
                .clone()
                .oneshot(
                    Request::builder()
                        .method(m)
                        .uri(&uri)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_ne!(
                res.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if res.status() == StatusCode::NOT_FOUND {
                let body = axum::body::to_bytes(res.into_body(), 1 << 16)
                    .await
                    .unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
            }
        }
    }
    assert!(operations >= 20, "only {operations} operations documented");
}

#[tokio::test]
async fn documents_and_the_docs_page_are_served_without_a_cdn() {
    let app = router().await;
    for (uri, kind) in [
        ("/openapi.json", "application/json"),
        ("/asyncapi.json", "application/json"),
        ("/docs", "text/html"),
        ("/docs/scalar.js", "text/javascript"),
    ] {
        let res = app
            .clone()
            .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{uri}: {ct}");
        if uri == "/docs" {
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let html = String::from_utf8_lossy(&body);
            assert!(html.contains("/docs/scalar.js"), "{html}");
            assert!(
                !html.contains("https://"),
                "the page loads something from elsewhere: {html}"
            );
        }
    }
    let res = app
        .oneshot(
            Request::builder()
                .uri("/asyncapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    let asyncapi: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
    assert_eq!(
        asyncapi["channels"]["cartCommands"]["address"],
        "cw.cart.{partition}.{id}"
    );
}
