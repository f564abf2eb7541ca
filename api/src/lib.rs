//! Cartwheel's edge: the v1 HTTP and WebSocket contract (DESIGN.md) served by axum over
//! the bus.
//!
//! The edge owns request parsing and validation, the JSON shapes and status codes, request
//! ids, size and time limits, and the live cart pushes of `/ws`. It is stateless: every
//! answer comes from an actor or a query over the bus ([`cartwheel_bus::BusClient`]).
//! It never touches storage, never builds a subject string itself, and keeps no entity
//! state beyond what a socket is watching.
//!
//! * `error` turns every failure into `{"error":{"code","message","request_id"}}`, in one
//!   place; `middleware` assigns request ids and enforces the body limit and deadline.
//! * `extract` wraps axum's extractors so malformed input answers that shape.
//! * `routes` holds one file per resource; `ws` the WebSocket, its protocol, its writer
//!   and the per-edge cart hub.

mod error;
mod extract;
mod middleware;
mod routes;
mod state;
mod ws;

use axum::Router;
use cartwheel_bus::BusClient;
use state::AppState;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use middleware::X_REQUEST_ID;

/// How long shutdown waits for WebSockets to close after sending them 1001.
const SOCKET_DRAIN: Duration = Duration::from_secs(5);

/// Settings of an [`Edge`].
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where to listen (port 0: any free port; see [`Edge::bind`]).
    pub http_addr: SocketAddr,
    /// How long a checkout waits for the saga before answering 202 with a pending order.
    pub checkout_wait: Duration,
    /// Deadline of a whole HTTP request (504 `timeout` after it). Must exceed
    /// `checkout_wait` plus the bus request timeout for checkouts to answer 201/202.
    pub request_timeout: Duration,
    /// Largest request body (413 `payload_too_large` above it).
    pub max_body_bytes: usize,
    /// Largest WebSocket message (the socket is closed with 1009 above it).
    pub max_ws_frame_bytes: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            checkout_wait: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_ws_frame_bytes: 64 * 1024,
        }
    }
}

/// What can stop the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("http server: {0}")]
    Serve(#[source] std::io::Error),
}

/// The HTTP/WebSocket edge.
pub struct Edge {
    state: AppState,
}

impl Edge {
    /// Builds the router state; does not bind.
    pub fn new(bus: BusClient, config: EdgeConfig) -> Edge {
        if config.request_timeout <= config.checkout_wait {
            // A checkout would hit the deadline (504) before it could answer 202.
            tracing::warn!(
                request_timeout_ms = config.request_timeout.as_millis(),
                checkout_wait_ms = config.checkout_wait.as_millis(),
                "request_timeout should exceed checkout_wait"
            );
        }
        Edge {
            state: AppState::new(bus, config),
        }
    }

    /// The full router with its middleware (for tests with `tower::ServiceExt::oneshot`).
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// Binds and serves until `shutdown` is cancelled, then stops accepting, drains
    /// in-flight requests (each bounded by `request_timeout`) and closes WebSockets with
    /// 1001.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let (_, run) = self.bind(shutdown).await?;
        run.await
    }

    /// Binds first (so a caller can learn the port when `http_addr` has port 0) and
    /// returns the bound address and the future that serves until `shutdown`.
    pub async fn bind(
        self,
        shutdown: CancellationToken,
    ) -> Result<
        (
            SocketAddr,
            impl Future<Output = Result<(), EdgeError>> + Send + 'static,
        ),
        EdgeError,
    > {
        let addr = self.state.config().http_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EdgeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| EdgeError::Bind { addr, source })?;
        let router = self.router();
        let state = self.state;
        let run = async move {
            tracing::info!(addr = %local, "edge listening");
            let closing = state.closing().clone();
            let signal = async move {
                shutdown.cancelled().await;
                // Sockets are not HTTP requests: tell them to close now.
                closing.cancel();
            };
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await;
            // Also on a server error: close the sockets rather than leave them running.
            state.closing().cancel();
            state.sockets().close();
            if tokio::time::timeout(SOCKET_DRAIN, state.sockets().wait())
                .await
                .is_err()
            {
                tracing::warn!("websockets still open after the shutdown drain");
            }
            tracing::info!("edge stopped");
            served.map_err(EdgeError::Serve)
        };
        Ok((local, run))
    }
}
