//! Domain errors and the stable error codes clients see.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A stable, snake_case error code. The HTTP status and the JSON `code` follow from it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a field breaks a rule (400).
    InvalidInput,
    /// The entity does not exist (404).
    NotFound,
    /// The change conflicts with the entity's current state (409).
    Conflict,
    /// Not enough available stock (409).
    InsufficientStock,
    /// The product exists but is not for sale (409).
    ProductInactive,
    /// The body is too large (413).
    PayloadTooLarge,
    /// Too many requests (429).
    RateLimited,
    /// A dependency is down or a partition is moving; retry later (503).
    Unavailable,
    /// The request could not be answered in time (504).
    Timeout,
    /// A bug or an unexpected failure (500).
    Internal,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InsufficientStock => "insufficient_stock",
            ErrorCode::ProductInactive => "product_inactive",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code maps to.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::InsufficientStock | ErrorCode::ProductInactive => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule of the domain was broken. Each variant maps to one stable [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field is missing, malformed or out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The named thing does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `item SKU-1 in cart`.
        what: String,
    },
    /// The change is not allowed in the entity's current state.
    #[error("{0}")]
    Conflict(String),
    /// Not enough stock to reserve.
    #[error("insufficient stock for {sku}: requested {requested}, available {available}")]
    InsufficientStock {
        /// The sku.
        sku: String,
        /// Quantity asked for.
        requested: u64,
        /// Quantity available.
        available: u64,
    },
    /// The product is deactivated.
    #[error("product {0} is not active")]
    ProductInactive(String),
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: &str, reason: impl Into<String>) -> DomainError {
        DomainError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DomainError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> DomainError {
        DomainError::NotFound { what: what.into() }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::Invalid { .. } => ErrorCode::InvalidInput,
            DomainError::NotFound { .. } => ErrorCode::NotFound,
            DomainError::Conflict(_) => ErrorCode::Conflict,
            DomainError::InsufficientStock { .. } => ErrorCode::InsufficientStock,
            DomainError::ProductInactive(_) => ErrorCode::ProductInactive,
        }
    }
}
