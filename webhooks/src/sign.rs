//! Standard Webhooks (v1) signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` of
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the bytes of a `whsec_` secret.
//! During a rotation every current secret signs, space-separated.

use crate::error::WebhookError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh secret: 32 random bytes (two v4 UUIDs' worth of the OS's randomness).
pub fn new_secret() -> String {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a secret; checks its shape (`whsec_` and 24 to 64 bytes of base64).
pub fn key(secret: &str) -> Result<Vec<u8>, WebhookError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| WebhookError::invalid("secret", "must start with whsec_"))?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| WebhookError::invalid("secret", format!("not base64 after whsec_: {e}")))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(WebhookError::invalid(
            "secret",
            "must hold 24 to 64 bytes of key",
        ));
    }
    Ok(bytes)
}

/// The `v1,<signature>` of one message under one key.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret, space-separated.
/// Unreadable secrets (none pass validation) are skipped.
pub fn header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| key(s).ok())
        .map(|k| signature(&k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = new_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(key(&s).unwrap().len(), 32);
        assert!(key("nope").is_err());
        assert!(key("whsec_%%%").is_err());
        assert!(key("whsec_AAAA").is_err());
    }

    #[test]
    fn signatures_verify_with_the_standard_webhooks_crate() {
        let secret = new_secret();
        let old = new_secret();
        let body = br#"{"type":"order.confirmed","timestamp":"2026-12-02T00:00:00Z","data":{}}"#;
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let value = header(&[&secret, &old], "msg_1", ts, body);
        assert_eq!(value.split(' ').count(), 2);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", value.parse().unwrap());
        for s in [&secret, &old] {
            let wh = standardwebhooks::Webhook::new(s).unwrap();
            wh.verify(body, &headers).unwrap();
        }
        let stranger = standardwebhooks::Webhook::new(&new_secret()).unwrap();
        assert!(stranger.verify(body, &headers).is_err());
    }
}
