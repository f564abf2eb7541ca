//! Storage errors.

/// What can go wrong reading or writing storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Compare-and-set failed: the record exists (create) or changed since it was read
    /// (update).
    #[error("write conflict on {key}")]
    Conflict {
        /// The key written.
        key: String,
    },
    /// The backend cannot be reached or refused the operation; retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored document could not be decoded, or a value could not be encoded.
    #[error("storage codec: {0}")]
    Codec(String),
    /// A query argument is malformed (e.g. a cursor that was not issued by us).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}
