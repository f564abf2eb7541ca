//! Money: integer minor units plus an ISO 4217-shaped currency code. Never floating point.

use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A three-letter upper-case currency code such as `EUR` or `USD`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Validates and builds a currency code.
    pub fn new(code: &str) -> Result<Currency, DomainError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(code.to_owned()))
        } else {
            Err(DomainError::invalid(
                "currency",
                "must be a three-letter upper-case code such as EUR",
            ))
        }
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::new(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest unit price accepted, in minor units (one billion major units at two decimals).
pub const MAX_PRICE: i64 = 100_000_000_000;

/// `qty * unit_price`, refusing overflow.
pub fn line_total(qty: u32, unit_price: i64) -> Result<i64, DomainError> {
    unit_price
        .checked_mul(i64::from(qty))
        .ok_or_else(|| DomainError::invalid("qty", "line total overflows"))
}
