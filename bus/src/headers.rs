//! Header names every message carries.

use async_nats::HeaderMap;

/// The request id, propagated from the edge (or generated there) into every hop and log span.
pub const REQUEST_ID: &str = "Cw-Request-Id";
/// W3C trace context, propagated unchanged.
pub const TRACEPARENT: &str = "traceparent";

/// A fresh request id (UUID v4, simple form).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Headers carrying `request_id`.
pub fn with_request_id(request_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(REQUEST_ID, request_id);
    h
}

/// The request id of a message, if it has one.
pub fn request_id(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(REQUEST_ID))
        .map(|v| v.as_str().to_owned())
}
