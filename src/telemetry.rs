//! Logs and traces: the `tracing` subscriber of the process.
//!
//! Two layers, each with its own filter. Logs (text or JSON lines) follow `RUST_LOG`
//! (default `info`). The OpenTelemetry layer always sees Cartwheel's own spans at info
//! and above, whatever `RUST_LOG` says, because it is what carries the W3C trace context
//! from the edge through NATS into the nodes: every `http`, `command`, `saga` and
//! `storage` span belongs to a trace, and the `trace_id` field puts its id in every log
//! line of that request. Spans are exported over OTLP/HTTP only when an endpoint is
//! configured; otherwise they are dropped when they end.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use std::io::IsTerminal;

/// Flushes exported spans when dropped (at the end of `main`).
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("trace export shutdown: {e}");
        }
    }
}

/// The OTLP/HTTP traces URL of a collector endpoint (`…/v1/traces` appended if missing).
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Installs the subscriber: logs in `format`, traces of `service` exported to `otlp`
/// when given.
pub fn init(format: LogFormat, otlp: Option<&str>, service: &str) -> anyhow::Result<Telemetry> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    if let Some(endpoint) = otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("cartwheel");

    let logs = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn,ractor=warn"));
    // Colours only on a terminal: log files and collectors get plain text.
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let fmt = match format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // The OpenTelemetry layer gives every command span a trace context: what is exported,
    // what `traceparent` carries to the next hop, and the trace id debug log lines show.
    // It costs every span on every poll (a third of a node's instructions per cart
    // activation in callgrind), so it is installed only when traces are exported or the
    // logs go down to debug; otherwise requests are correlated by their request id.
    let traced = otlp.is_some()
        || logs
            .max_level_hint()
            .is_some_and(|l| l >= tracing_subscriber::filter::LevelFilter::DEBUG);
    let traces = traced.then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("cartwheel", tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(logs))
        .with(traces)
        .init();
    if let Some(endpoint) = otlp {
        tracing::info!(endpoint = %traces_url(endpoint), "exporting traces over OTLP/HTTP");
    }
    // The metrics recorder too, before anything records: until it is installed the
    // `metrics` macros record nothing.
    cartwheel_api::Metrics::global();
    Ok(Telemetry { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_is_completed_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
