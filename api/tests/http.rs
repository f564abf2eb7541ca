//! The edge's HTTP behaviour that never reaches a node: validation, limits, error shape,
//! request ids. The bus client points at a NATS server that does not exist, so anything
//! that did reach the bus would time out instead of answering 400.

// Test helpers outside #[test] fns panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cartwheel_api::{Edge, EdgeConfig, X_REQUEST_ID};
use cartwheel_bus::{BusClient, BusConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

const MAX_BODY: usize = 1024;

async fn edge_with(config: EdgeConfig) -> Router {
    // Returns at once and keeps retrying in the background: nothing listens on port 1.
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:1")
        .await
        .unwrap();
    let bus = BusClient::new(nats, BusConfig::default());
    Edge::new(bus, config).router()
}

async fn edge() -> Router {
    edge_with(EdgeConfig {
        max_body_bytes: MAX_BODY,
        ..EdgeConfig::default()
    })
    .await
}

fn json_request(method: Method, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn empty_request(method: Method, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

/// Sends the request; returns the status, the `x-request-id` header and the JSON body.
async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let rid = res
        .headers()
        .get(X_REQUEST_ID)
        .expect("every response has a request id")
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, rid, body)
}

/// Asserts the error shape and code, and that the body's request id is the header's.
async fn expect_error(app: &Router, req: Request<Body>, status: StatusCode, code: &str) -> Value {
    let (got, rid, body) = send(app, req).await;
    assert_eq!(got, status, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
    assert_eq!(body["error"]["request_id"], rid.as_str(), "body: {body}");
    assert!(!rid.is_empty());
    body
}

#[tokio::test]
async fn malformed_json_is_invalid_input_with_a_request_id() {
    let app = edge().await;
    for body in [
        "{",
        "[]",
        r#"{"user_id": 5}"#,
        "{}",
        r#"{"user_id":"u","x":1}"#,
    ] {
        let req = json_request(Method::POST, "/carts", body);
        expect_error(&app, req, StatusCode::BAD_REQUEST, "invalid_input").await;
    }
    let no_type = Request::builder()
        .method(Method::POST)
        .uri("/carts")
        .body(Body::from(r#"{"user_id":"u1"}"#))
        .unwrap();
    expect_error(&app, no_type, StatusCode::BAD_REQUEST, "invalid_input").await;
}

#[tokio::test]
async fn a_sane_client_request_id_is_kept_and_a_bad_one_replaced() {
    let app = edge().await;
    let mut req = json_request(Method::POST, "/carts", "{");
    req.headers_mut()
        .insert(X_REQUEST_ID, "client-rid-1".parse().unwrap());
    let (_, rid, body) = send(&app, req).await;
    assert_eq!(rid, "client-rid-1");
    assert_eq!(body["error"]["request_id"], "client-rid-1");

    let mut req = json_request(Method::POST, "/carts", "{");
    req.headers_mut()
        .insert(X_REQUEST_ID, "x".repeat(65).parse().unwrap());
    let (_, rid, _) = send(&app, req).await;
    assert_eq!(rid.len(), 32, "a generated id replaces an oversized one");

    let (status, rid, _) = send(&app, empty_request(Method::GET, "/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!rid.is_empty());
}

#[tokio::test]
async fn ids_that_are_not_subject_tokens_never_reach_the_bus() {
    let app = edge().await;
    let gets = [
        "/carts/a.b",
        "/carts/%2A",
        "/carts/a%3Eb",
        "/products/a.b",
        "/products/%2A",
        "/inventory/a.b",
        "/orders/a%2Eb",
    ];
    for uri in gets {
        let req = empty_request(Method::GET, uri);
        expect_error(&app, req, StatusCode::BAD_REQUEST, "invalid_input").await;
    }
    let long = format!("/carts/{}", "x".repeat(65));
    expect_error(
        &app,
        empty_request(Method::GET, &long),
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
    let add = json_request(Method::POST, "/carts/c1/items", r#"{"sku":"a*","qty":1}"#);
    expect_error(&app, add, StatusCode::BAD_REQUEST, "invalid_input").await;
    let patch = json_request(Method::PATCH, "/carts/c1/items/a.b", r#"{"qty":1}"#);
    expect_error(&app, patch, StatusCode::BAD_REQUEST, "invalid_input").await;
    let del = empty_request(Method::DELETE, "/carts/c.1/items/s1");
    expect_error(&app, del, StatusCode::BAD_REQUEST, "invalid_input").await;
    let cancel = empty_request(Method::POST, "/orders/o.1/cancel");
    expect_error(&app, cancel, StatusCode::BAD_REQUEST, "invalid_input").await;
    let user = json_request(Method::POST, "/carts", r#"{"user_id":"u.1"}"#);
    expect_error(&app, user, StatusCode::BAD_REQUEST, "invalid_input").await;
}

#[tokio::test]
async fn checkout_needs_a_valid_idempotency_key() {
    let app = edge().await;
    let missing = empty_request(Method::POST, "/carts/c1/checkout");
    expect_error(&app, missing, StatusCode::BAD_REQUEST, "invalid_input").await;
    let mut spaced = empty_request(Method::POST, "/carts/c1/checkout");
    spaced
        .headers_mut()
        .insert("Idempotency-Key", "has space".parse().unwrap());
    expect_error(&app, spaced, StatusCode::BAD_REQUEST, "invalid_input").await;
    let mut long = empty_request(Method::POST, "/carts/c1/checkout");
    long.headers_mut()
        .insert("Idempotency-Key", "k".repeat(129).parse().unwrap());
    expect_error(&app, long, StatusCode::BAD_REQUEST, "invalid_input").await;
}

#[tokio::test]
async fn page_limits_and_filters_are_checked() {
    let app = edge().await;
    let bad = [
        "/products?limit=0",
        "/products?limit=10000",
        "/products?limit=-1",
        "/products?limit=ten",
        "/products?active=maybe",
        "/products?category=a.b",
        "/orders?limit=0",
        "/orders?limit=201",
        "/orders?status=SHIPPED",
        "/orders?user_id=a*",
    ];
    for uri in bad {
        let req = empty_request(Method::GET, uri);
        expect_error(&app, req, StatusCode::BAD_REQUEST, "invalid_input").await;
    }
}

#[tokio::test]
async fn quantities_must_be_positive_integers() {
    let app = edge().await;
    for qty in ["0", "-1", "1.5", "\"2\"", "4294967296"] {
        let body = format!(r#"{{"sku":"s1","qty":{qty}}}"#);
        let req = json_request(Method::POST, "/carts/c1/items", &body);
        expect_error(&app, req, StatusCode::BAD_REQUEST, "invalid_input").await;
    }
    let negative = json_request(Method::PATCH, "/carts/c1/items/s1", r#"{"qty":-1}"#);
    expect_error(&app, negative, StatusCode::BAD_REQUEST, "invalid_input").await;
    let zero_delta = json_request(Method::POST, "/inventory/s1/adjust", r#"{"delta":0}"#);
    expect_error(&app, zero_delta, StatusCode::BAD_REQUEST, "invalid_input").await;
    let negative_stock = json_request(Method::PUT, "/inventory/s1", r#"{"on_hand":-3}"#);
    expect_error(
        &app,
        negative_stock,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )
    .await;
}

#[tokio::test]
async fn products_are_validated_at_the_edge() {
    let app = edge().await;
    let product =
        json!({"sku":"S1","name":"Mug","price":100,"currency":"EUR","category":"kitchen"});
    let mut unknown = product.clone();
    unknown["colour"] = json!("red");
    let mut bad_price = product.clone();
    bad_price["price"] = json!(-5);
    let mut bad_currency = product.clone();
    bad_currency["currency"] = json!("euro");
    for body in [&unknown, &bad_price, &bad_currency] {
        let req = json_request(Method::POST, "/products", &body.to_string());
        expect_error(&app, req, StatusCode::BAD_REQUEST, "invalid_input").await;
    }
    let other_sku = json_request(Method::PUT, "/products/S2", &product.to_string());
    expect_error(&app, other_sku, StatusCode::BAD_REQUEST, "invalid_input").await;
    let not_object = json_request(Method::PUT, "/products/S1", "[1]");
    expect_error(&app, not_object, StatusCode::BAD_REQUEST, "invalid_input").await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_in_our_shape() {
    let app = edge().await;
    let big = format!(r#"{{"user_id":"{}"}}"#, "u".repeat(MAX_BODY));
    let declared = json_request(Method::POST, "/carts", &big);
    expect_error(
        &app,
        declared,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // No Content-Length: the limit applies while the body is read.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big.clone())];
    let streamed = Request::builder()
        .method(Method::POST)
        .uri("/carts")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    expect_error(
        &app,
        streamed,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = edge().await;
    let req = empty_request(Method::GET, "/nope");
    expect_error(&app, req, StatusCode::NOT_FOUND, "not_found").await;
    let req = empty_request(Method::GET, "/carts/c1/items/s1/extra");
    expect_error(&app, req, StatusCode::NOT_FOUND, "not_found").await;
    let req = empty_request(Method::DELETE, "/carts");
    expect_error(
        &app,
        req,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let req = empty_request(Method::PATCH, "/orders/o1");
    expect_error(
        &app,
        req,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn health_is_ok_and_readiness_needs_nats() {
    let app = edge().await;
    let (status, _, body) = send(&app, empty_request(Method::GET, "/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let req = empty_request(Method::GET, "/readyz");
    expect_error(&app, req, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}

#[tokio::test]
async fn a_request_past_its_deadline_is_504_in_our_shape() {
    let app = edge_with(EdgeConfig {
        request_timeout: Duration::from_millis(200),
        ..EdgeConfig::default()
    })
    .await;
    // A valid request: it goes to the bus, where nothing ever answers.
    let req = empty_request(Method::GET, "/carts/c1");
    expect_error(&app, req, StatusCode::GATEWAY_TIMEOUT, "timeout").await;
}

#[tokio::test]
async fn a_websocket_route_without_an_upgrade_answers_json() {
    let app = edge().await;
    let (status, _, body) = send(&app, empty_request(Method::GET, "/ws")).await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(body["error"]["code"], "invalid_input", "body: {body}");
}
