//! The one place where errors become responses.
//!
//! Every handler, extractor and middleware fails with an [`AppError`]: a status, a stable
//! snake_case code, a message for the client and, separately, a detail for the log. Its
//! `IntoResponse` leaves the error itself in the response extensions; the request-id
//! middleware ([`finish`]) then logs it and renders the body
//! `{"error":{"code","message","request_id"}}` — the request id is only known there.
//! [`finish`] also turns any other error status without our body (a 405 from the router,
//! a rejection we did not wrap) into the same shape, so no client ever sees a bare
//! status. WebSocket error frames reuse [`ErrorBody`].

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cartwheel_bus::BusError;
use cartwheel_domain::{DomainError, ErrorCode};
use serde::Serialize;

/// The code of a 405 answer; not an [`ErrorCode`] because no node ever produces it.
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// What the log gets in addition to the message (never sent to the client).
    detail: Option<String>,
}

impl AppError {
    /// An error with a domain code; the status follows from the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.as_str(),
            message: message.into(),
            detail: None,
        }
    }

    /// An error with a code of the edge's own (`unauthorized`, `forbidden`) that no node
    /// ever produces.
    pub fn custom(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// `429 rate_limited`.
    pub fn rate_limited(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::RateLimited, message)
    }

    /// `400 invalid_input`.
    pub fn invalid(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::InvalidInput, message)
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> AppError {
        AppError::new(ErrorCode::NotFound, message)
    }

    /// `405 method_not_allowed`.
    pub fn method_not_allowed() -> AppError {
        AppError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: METHOD_NOT_ALLOWED,
            message: "this method is not allowed on this path".to_owned(),
            detail: None,
        }
    }

    /// `413 payload_too_large`.
    pub fn payload_too_large(limit: usize) -> AppError {
        AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body must be at most {limit} bytes"),
        )
    }

    /// Adds a detail for the log.
    pub fn with_detail(mut self, detail: impl Into<String>) -> AppError {
        self.detail = Some(detail.into());
        self
    }

    /// The HTTP status.
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    #[cfg(test)]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message the client sees.
    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs the error: server-side failures loudly, client mistakes quietly.
    pub fn log(&self, request_id: Option<&str>) {
        let detail = self.detail.as_deref().unwrap_or("");
        let rid = request_id.unwrap_or("");
        if self.status.is_server_error() {
            tracing::warn!(
                request_id = rid,
                code = self.code,
                status = self.status.as_u16(),
                detail,
                "{}",
                self.message
            );
        } else {
            tracing::debug!(
                request_id = rid,
                code = self.code,
                status = self.status.as_u16(),
                detail,
                "{}",
                self.message
            );
        }
    }

    /// The body a client sees, with its request id.
    pub fn body<'a>(&'a self, request_id: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            code: self.code,
            message: &self.message,
            request_id,
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AppError {}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> AppError {
        AppError::new(e.code(), e.to_string())
    }
}

impl From<BusError> for AppError {
    fn from(e: BusError) -> AppError {
        // Remote errors are already meant for clients. Transport errors name subjects and
        // internals: the client gets a stable sentence, the log gets the detail.
        let message = match &e {
            BusError::Remote(api) => return AppError::new(api.code, api.message.clone()),
            BusError::Unavailable { .. } => {
                "no node is serving this request right now; retry shortly"
            }
            BusError::Timeout { .. } => {
                "no answer in time; the request may or may not have been applied"
            }
            BusError::Nats(_) => "the message bus is unavailable; retry shortly",
            BusError::Codec(_) => "internal error",
        };
        AppError::new(e.code(), message).with_detail(e.to_string())
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> AppError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return AppError::new(ErrorCode::PayloadTooLarge, "the body is too large");
        }
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a body with `Content-Type: application/json`".to_owned()
            }
            other => other.body_text(),
        };
        AppError::invalid(message)
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> AppError {
        AppError::invalid(format!("bad path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> AppError {
        AppError::invalid(r.body_text())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        // The request id is not known here; `finish` logs with it and renders the body.
        let mut res = Response::new(Body::empty());
        *res.status_mut() = self.status;
        res.extensions_mut().insert(self);
        res
    }
}

/// `{"code","message","request_id"}`: the inside of every error body and error frame.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Stable, snake_case code.
    pub code: &'a str,
    /// For people.
    pub message: &'a str,
    /// The request id, also in the `x-request-id` header.
    pub request_id: &'a str,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: ErrorBody<'a>,
}

/// Renders the error body of `res` with `request_id`, logging the error once.
///
/// Responses that carry an [`AppError`] get its code and message; any other response with
/// an error status and no JSON body (the router's 405, an unwrapped rejection) gets a code
/// derived from the status. Successful responses pass through untouched.
pub fn finish(mut res: Response, request_id: &str) -> Response {
    let err = match res.extensions_mut().remove::<AppError>() {
        Some(err) => err,
        None => {
            let status = res.status();
            if !(status.is_client_error() || status.is_server_error()) || is_json(&res) {
                return res;
            }
            from_status(status)
        }
    };
    err.log(Some(request_id));
    let json = serde_json::to_vec(&Envelope {
        error: err.body(request_id),
    })
    .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec());
    let (mut parts, _) = res.into_parts();
    parts.status = err.status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}

fn is_json(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The error for a bare status produced outside our handlers.
fn from_status(status: StatusCode) -> AppError {
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let code = match status.as_u16() {
        404 => ErrorCode::NotFound,
        405 => return AppError::method_not_allowed(),
        408 | 504 => ErrorCode::Timeout,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        400..=499 => ErrorCode::InvalidInput,
        _ => ErrorCode::Internal,
    };
    let mut err = AppError::new(code, reason);
    // Keep the original status (e.g. 415, 426) rather than the code's default.
    err.status = status;
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use cartwheel_bus::ApiError;

    #[test]
    fn bus_errors_keep_remote_codes_and_hide_transport_details() {
        let remote = BusError::Remote(ApiError::new(ErrorCode::InsufficientStock, "only 2 left"));
        let e = AppError::from(remote);
        assert_eq!(e.code(), "insufficient_stock");
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let down = BusError::Unavailable {
            subject: "cw.cart.1.c".into(),
            retried_ms: 3000,
        };
        let e = AppError::from(down);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message().contains("cw.cart"));
        let slow = BusError::Timeout {
            subject: "s".into(),
            timeout_ms: 1,
        };
        assert_eq!(AppError::from(slow).status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn bare_statuses_get_our_shape() {
        let res = finish(StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(), "r1");
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(is_json(&res));
        let ok = finish(StatusCode::NO_CONTENT.into_response(), "r1");
        assert!(!is_json(&ok));
    }
}
