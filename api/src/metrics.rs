//! Prometheus metrics: the process-wide recorder, `/metrics` in the text format, the
//! per-request series, and the operations listener of processes without an edge (nodes: `/metrics`,
//! `/healthz`, `/readyz`).
//!
//! Every crate records through the `metrics` facade (`counter!`, `histogram!`, …); this
//! module installs the one recorder of the process ([`Metrics::global`]) and renders it.
//! In `cartwheel up` the node and the edge share the process, so the edge's `/metrics`
//! has the node's series too. Values kept elsewhere (actor counters) are copied in by
//! collectors ([`Metrics::add_collector`]) just before each render.
//!
//! Series recorded here: `cartwheel_http_requests_total` and
//! `cartwheel_http_request_duration_seconds` by `method`, `route` (the route template,
//! never the raw path) and `status`. Others: `cartwheel_ws_connections` (ws),
//! `cartwheel_nats_request_duration_seconds` (bus), `cartwheel_rate_limited_total`
//! (limits), `cartwheel_auth_refused_total` (auth), the actor, saga and storage series
//! (actors).

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Latency buckets (seconds) of every `*_seconds` histogram: 250 µs to 30 s.
const BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// How often histograms are compacted between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

type Collector = Box<dyn Fn() + Send + Sync>;

/// The process's metrics: a handle to render them and the collectors to run first.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    collectors: Arc<Mutex<Vec<Collector>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    /// The process-wide metrics, installing the recorder on first use. If another
    /// recorder was installed first, this one still renders (only what it records).
    pub fn global() -> &'static Metrics {
        GLOBAL.get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let h = handle.clone();
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(UPKEEP_EVERY);
                    loop {
                        tick.tick().await;
                        h.run_upkeep();
                    }
                });
            }
            Metrics {
                handle,
                collectors: Arc::new(Mutex::new(Vec::new())),
            }
        })
    }

    /// Runs `collect` before every render (to copy values kept elsewhere into gauges).
    pub fn add_collector(&self, collect: impl Fn() + Send + Sync + 'static) {
        self.collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(collect));
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        for collect in self
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            collect();
        }
        self.handle.render()
    }
}

/// Prometheus metrics of this process, in the text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)),
    security(()))]
pub(crate) async fn scrape() -> Response {
    let body = Metrics::global().render();
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Counts every request and its latency by route template and status.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("cartwheel_http_requests_total", &labels).increment(1);
    metrics::histogram!("cartwheel_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    res
}

/// Keeps `cartwheel_nats_connected` (1 while `client` is connected to a server, else 0)
/// current at every scrape.
pub fn watch_nats(client: async_nats::Client) {
    Metrics::global().add_collector(move || {
        let up = client.connection_state() == async_nats::connection::State::Connected;
        metrics::gauge!("cartwheel_nats_connected").set(if up { 1.0 } else { 0.0 });
    });
}

/// Whether a process without an edge (a node) can serve: `Ok`, or why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The operations listener of a process without an edge (a node): `GET /metrics`,
/// `GET /healthz` (200 while the process runs, also while it hands over) and
/// `GET /readyz` (200 `{"status":"ready"}` while `ready` says so, else 503 with a JSON
/// error naming why). Binds now; the returned future serves until `shutdown`.
pub async fn listener(
    addr: SocketAddr,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<(
    SocketAddr,
    impl Future<Output = std::io::Result<()>> + Send + 'static,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => {
                            axum::Json(serde_json::json!({"status": "ready"})).into_response()
                        }
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({
                                "error": {"code": "unavailable", "message": why}
                            })),
                        )
                            .into_response(),
                    }
                }
            }),
        );
    let run = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    };
    Ok((local, run))
}
