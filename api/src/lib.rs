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
//!   place; `middleware` assigns request ids, continues the caller's trace and enforces
//!   the body limit and deadline.
//! * `auth` verifies JWT bearer tokens and says what a caller may do; `access` keeps
//!   each user to their own carts and orders; `limits` rate-limits callers (in memory or
//!   through Redis) and caps sockets per user.
//! * `openapi` serves the OpenAPI and AsyncAPI documents and the `/docs` page; `metrics`
//!   the Prometheus text at `/metrics`.
//! * `extract` wraps axum's extractors so malformed input answers that shape.
//! * `routes` holds one file per resource; `ws` the WebSocket, its protocol, its writer
//!   and the per-edge cart hub.

mod access;
pub mod auth;
mod error;
mod extract;
pub mod jwks;
pub mod limits;
pub mod metrics;
mod middleware;
mod openapi;
mod routes;
mod state;
mod web;
mod ws;

use axum::Router;
use cartwheel_bus::BusClient;
use state::AppState;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, JwtSettings, JwtVerifier};
pub use limits::{Rate, RateLimiter};
pub use metrics::Metrics;
pub use middleware::X_REQUEST_ID;

/// The OpenAPI 3.1 document of the edge, as served at `/openapi.json`.
pub fn openapi_json() -> String {
    routes::openapi_document()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

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
    /// Who may do what: off (development) or JWT bearer tokens.
    pub auth: Auth,
    /// Requests per caller (user, or IP when anonymous).
    pub rate_limit: RateLimiter,
    /// Take the client IP from the last `X-Forwarded-For` entry (behind a load balancer).
    pub trust_forwarded_for: bool,
    /// Browser origins that may open `/ws` besides the edge's own (`*`: any).
    pub allowed_origins: Vec<String>,
    /// Most live WebSockets per authenticated user.
    pub ws_max_per_user: usize,
    /// How browsers sign in when auth is on (`GET /auth/config`, `POST /auth/demo`).
    pub sign_in: SignIn,
}

/// How a browser gets a token.
#[derive(Clone, Debug, Default)]
pub struct SignIn {
    /// Development only: `POST /auth/demo` issues tokens for new demo shoppers and admins
    /// under the edge's HS256 secret.
    pub demo: Option<std::sync::Arc<auth::TokenIssuer>>,
    /// The identity provider's login URL the shop page sends people to; the provider
    /// sends them back to the page with the token in the URL fragment.
    pub login_url: Option<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            checkout_wait: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_ws_frame_bytes: 64 * 1024,
            auth: Auth::Off,
            rate_limit: RateLimiter::off(),
            trust_forwarded_for: false,
            allowed_origins: Vec::new(),
            ws_max_per_user: 16,
            sign_in: SignIn::default(),
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
        // Installs the process's recorder if nobody did yet, so requests are counted
        // from the first one.
        Metrics::global();
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
        // At zero from the start, so dashboards and alerts find the series.
        ::metrics::gauge!("cartwheel_ws_connections").increment(0.0);
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
            // The peer address feeds the per-IP rate limit.
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            let served = axum::serve(listener, app)
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
