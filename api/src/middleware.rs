//! Cross-cutting request handling: request ids and trace context, body size and the
//! request deadline.
//!
//! The request-id middleware is the outermost layer: it also renders every error body
//! (through [`crate::error::finish`]), because only it knows the request id.

use crate::error::{self, AppError};
use crate::extract::RequestId;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cartwheel_bus::headers::{self, new_request_id};
use cartwheel_domain::ErrorCode;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The request id header, read from requests and set on every response.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client.
const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's request id can be used as is: 1..=64 printable ASCII characters
/// (it travels in NATS headers and logs).
pub(crate) fn sane_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads W3C trace context from HTTP headers.
struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Takes or makes the request id, runs the request in a span carrying it, renders error
/// bodies and sets `x-request-id` on the response.
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let rid = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map_or_else(new_request_id, str::to_owned);
    req.extensions_mut().insert(RequestId(rid.clone()));
    let span = tracing::info_span!(
        "http",
        request_id = %rid,
        method = %req.method(),
        path = %req.uri().path(),
        trace_id = tracing::field::Empty,
    );
    // Continue the caller's W3C trace (`traceparent`), or start one; the bus client
    // carries it on into every node this request reaches.
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    if let Some(trace_id) = headers::trace_id_of(&span) {
        span.record("trace_id", trace_id.as_str());
    }
    let cx = span.context();
    let res = headers::in_trace(cx, next.run(req).instrument(span)).await;
    let mut res = error::finish(res, &rid);
    if let Ok(v) = HeaderValue::from_str(&rid) {
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
    res
}

/// Rejects a declared body over the limit before reading it, and bounds the whole request
/// by the request deadline. (Bodies without a length are bounded by `DefaultBodyLimit`
/// while they are read.)
pub(crate) async fn limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let max = state.config().max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        return AppError::payload_too_large(max).into_response();
    }
    let deadline = state.config().request_timeout;
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(res) => res,
        Err(_) => AppError::new(
            ErrorCode::Timeout,
            format!(
                "the request did not finish within {} ms; it may or may not have been applied",
                deadline.as_millis()
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_short_and_printable() {
        assert!(sane_request_id("abc-123"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id(&"x".repeat(65)));
        assert!(!sane_request_id("é"));
    }
}
