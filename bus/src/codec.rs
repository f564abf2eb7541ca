//! The one wire codec: MessagePack with named fields (`rmp_serde::to_vec_named`).
//!
//! Named fields let a newer node add a field that an older node ignores, and let an older
//! message decode on a newer node when the new field has a serde default.

use crate::error::BusError;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// Encodes `value` as named MessagePack.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, BusError> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| BusError::Codec(e.to_string()))
}

/// Decodes named MessagePack.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BusError> {
    rmp_serde::from_slice(bytes).map_err(|e| BusError::Codec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize)]
    struct V1 {
        sku: String,
        qty: u32,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct V2 {
        sku: String,
        qty: u32,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn an_older_message_decodes_on_a_newer_node_and_back() {
        let old = encode(&V1 {
            sku: "A".into(),
            qty: 2,
        })
        .unwrap();
        let new: V2 = decode(&old).unwrap();
        assert_eq!(
            new,
            V2 {
                sku: "A".into(),
                qty: 2,
                note: None
            }
        );
    }

    #[test]
    fn garbage_is_a_codec_error() {
        assert!(matches!(decode::<V2>(&[0xc1]), Err(BusError::Codec(_))));
    }
}
