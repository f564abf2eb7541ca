//! Money: integer minor units plus an ISO 4217-shaped currency code. Never floating point.

use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A three-letter upper-case currency code such as `EUR` or `USD`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);

/// Serialized as the plain code. Written by hand rather than `into = "String"`, which
/// clones the code into a fresh `String` on every serialization: every line of a cart is
/// serialized several times per cart change (stored record, event, reply).
impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

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

#[cfg(test)]
mod currency_serde_tests {
    use super::*;

    #[test]
    fn currency_is_a_plain_string_on_the_wire_and_is_validated_when_read() {
        let eur = Currency::new("EUR").unwrap();
        assert_eq!(serde_json::to_string(&eur).unwrap(), r#""EUR""#);
        let packed = rmp_serde::to_vec_named(&eur).unwrap();
        assert_eq!(packed, rmp_serde::to_vec_named("EUR").unwrap());
        assert_eq!(rmp_serde::from_slice::<Currency>(&packed).unwrap(), eur);
        assert_eq!(
            serde_json::from_str::<Currency>(r#""USD""#)
                .unwrap()
                .as_str(),
            "USD"
        );
        assert!(serde_json::from_str::<Currency>(r#""usd""#).is_err());
        assert!(serde_json::from_str::<Currency>(r#""EURO""#).is_err());
    }
}
