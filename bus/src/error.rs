//! Errors of the bus: transport failures and errors that travel in replies.

use cartwheel_domain::{DomainError, ErrorCode};
use serde::{Deserialize, Serialize};

/// An error that travels in a reply: a stable code and a message for people.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable, snake_case code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidInput, message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

/// What can go wrong sending a request over the bus.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// No node answered within the retry window (nothing subscribed: down or moving).
    #[error("no node is serving {subject}; retried for {retried_ms} ms")]
    Unavailable {
        /// The subject asked.
        subject: String,
        /// How long we retried.
        retried_ms: u64,
    },
    /// A node took the request but did not answer before the deadline. The request may
    /// or may not have been applied.
    #[error("no reply on {subject} within {timeout_ms} ms")]
    Timeout {
        /// The subject asked.
        subject: String,
        /// The deadline.
        timeout_ms: u64,
    },
    /// A message could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// The NATS connection failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The remote side answered with an error.
    #[error(transparent)]
    Remote(#[from] ApiError),
}

impl BusError {
    /// The stable code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            BusError::Unavailable { .. } | BusError::Nats(_) => ErrorCode::Unavailable,
            BusError::Timeout { .. } => ErrorCode::Timeout,
            BusError::Codec(_) => ErrorCode::Internal,
            BusError::Remote(e) => e.code,
        }
    }

    /// As an [`ApiError`] for a client.
    pub fn to_api(&self) -> ApiError {
        match self {
            BusError::Remote(e) => e.clone(),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

/// Whether opening a KV bucket failed because its stream does not exist (as opposed to
/// the server being unreachable, or the caller not being allowed to read it).
pub fn is_missing_bucket(e: &async_nats::jetstream::context::KeyValueError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind, KeyValueErrorKind};
    e.kind() == KeyValueErrorKind::GetBucket
        && std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<GetStreamError>())
            .is_some_and(|s| {
                matches!(s.kind(), GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
            })
}
