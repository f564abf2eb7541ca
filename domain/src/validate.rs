//! Shape rules for identifiers and free text shared by every entity.
//!
//! Identifiers end up as NATS subject tokens and storage keys, so they are restricted to
//! `[A-Za-z0-9_-]` (no dots, spaces or wildcards).

use crate::error::DomainError;

/// Longest identifier accepted (sku, cart id, order id, user id, category).
pub const MAX_ID_LEN: usize = 64;
/// Longest product name.
pub const MAX_NAME_LEN: usize = 200;
/// Longest product description.
pub const MAX_DESCRIPTION_LEN: usize = 4_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Checks that `value` is a usable identifier; `field` names it in the error.
pub fn id(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(DomainError::invalid(
            field,
            "may contain only letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// Checks free text: length in characters and no control characters other than newlines.
pub fn text(
    field: &'static str,
    value: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), DomainError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks an idempotency key: printable ASCII, 1..=128 characters.
pub fn idempotency_key(value: &str) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(DomainError::invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid(
            "idempotency_key",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_subject_safe() {
        assert!(id("sku", "SKU-1_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(id("sku", bad).is_err(), "{bad:?}");
        }
    }
}
