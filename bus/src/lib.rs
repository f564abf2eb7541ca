//! Cartwheel's wire contract and NATS plumbing.
//!
//! * [`names`] builds every subject, stream, bucket and queue-group name. Nothing else in
//!   the workspace spells one out.
//! * [`codec`] is the one MessagePack codec (named fields, so fields can be added in a
//!   rolling upgrade).
//! * [`messages`] holds the request and reply types per entity kind.
//! * [`headers`] names the headers every message carries (request id, trace context).
//! * [`client`] is the request client: deadline, bounded retry on "no responders", typed
//!   errors.
//! * `asyncapi` (feature `openapi`) is the AsyncAPI document of all of the above.
//! * [`events`] sets up the JetStream event streams and publishes events with
//!   `Nats-Msg-Id` de-duplication.

#[cfg(feature = "openapi")]
pub mod asyncapi;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod error;
pub mod events;
pub mod headers;
pub mod messages;
pub mod names;

pub use client::{BusClient, BusConfig, Resend};
pub use error::{ApiError, BusError};
pub use names::Names;
