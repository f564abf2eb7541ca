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
//! * [`connect`] connects every process to NATS the same way (credentials, TLS, waits);
//!   [`redact`] hides passwords in URLs.
//! * [`events`] sets up the JetStream event streams and publishes events with
//!   `Nats-Msg-Id` de-duplication.

#[cfg(feature = "openapi")]
pub mod asyncapi;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod connect;
pub mod error;
pub mod events;
pub mod headers;
pub mod messages;
pub mod names;
pub mod redact;

pub use client::{BusClient, BusConfig, Resend};
pub use error::{ApiError, BusError};
pub use names::Names;

/// How long a process waits at start for a JetStream bucket or stream to open and answer
/// before it gives up with an error. A fresh replicated cluster, one electing a leader,
/// or several nodes creating the same buckets at once on a busy machine answer the first
/// requests with timeouts (each up to the JetStream request timeout), so this is several
/// of those long: a node that starts beside its NATS servers waits for them instead of
/// exiting.
pub const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `attempt` every 250 ms until it succeeds or [`STARTUP_WAIT`] has passed (then its
/// last error); each failure is logged with `what` (e.g. `event stream cart`). For the
/// set-up steps a node takes at start against JetStream.
pub async fn retry_at_startup<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = std::time::Instant::now();
    loop {
        match attempt().await {
            Ok(t) => return Ok(t),
            Err(e) if started.elapsed() >= STARTUP_WAIT => return Err(format!("{what}: {e}")),
            Err(e) => {
                tracing::info!(%what, error = %e, "not available yet; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}
