//! The crate's errors.

use thiserror::Error;

/// What can go wrong in the webhook service.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// A URL, filter or secret breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such endpoint or delivery.
    #[error("{0} not found")]
    NotFound(String),
    /// NATS or JetStream failed.
    #[error("nats: {0}")]
    Nats(String),
    /// A bucket failed.
    #[error("storage: {0}")]
    Store(#[from] cartwheel_storage::StoreError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
    /// A stored record is unreadable.
    #[error("codec: {0}")]
    Codec(String),
}

impl WebhookError {
    /// Shorthand for [`WebhookError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> WebhookError {
        WebhookError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The bus error a requester sees.
    pub fn api(&self) -> cartwheel_bus::ApiError {
        use cartwheel_bus::ApiError;
        use cartwheel_domain::ErrorCode;
        match self {
            WebhookError::Invalid { .. } => ApiError::invalid(self.to_string()),
            WebhookError::NotFound(_) => ApiError::new(ErrorCode::NotFound, self.to_string()),
            WebhookError::Store(cartwheel_storage::StoreError::Conflict { .. }) => {
                ApiError::new(ErrorCode::Conflict, self.to_string())
            }
            WebhookError::Nats(_) | WebhookError::Store(_) => {
                ApiError::unavailable(self.to_string())
            }
            WebhookError::Client(_) | WebhookError::Codec(_) => {
                ApiError::internal(self.to_string())
            }
        }
    }
}
