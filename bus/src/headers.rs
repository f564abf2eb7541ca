//! Header names every message carries, and the W3C trace context (`traceparent`) that
//! travels in them from the edge into every node a request touches.

use async_nats::HeaderMap;

/// The request id, propagated from the edge (or generated there) into every hop and log span.
pub const REQUEST_ID: &str = "Cw-Request-Id";
/// The command id of a cart write: a command delivered again under the same id (a
/// retried request, a client resending after a timeout) changes the entity once; the
/// repeat is answered with the entity as that command left it. When absent, the request
/// id is the command id.
pub const COMMAND_ID: &str = "Cw-Command-Id";
/// Set on a reply that refused a command without applying it because the partition is
/// moving (the node no longer holds its lease): the requester retries like "no responders".
pub const RETRY: &str = "Cw-Retry";

/// W3C trace context, propagated unchanged.
pub const TRACEPARENT: &str = "traceparent";

/// A fresh request id (UUID v4, simple form).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Headers carrying `request_id`.
pub fn with_request_id(request_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(REQUEST_ID, request_id);
    h
}

/// The request id of a message, if it has one.
pub fn request_id(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(REQUEST_ID))
        .map(|v| v.as_str().to_owned())
}

/// The command id of a message, if it has one.
pub fn command_id(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(COMMAND_ID))
        .map(|v| v.as_str().to_owned())
}

/// Writes the W3C trace context of the current `tracing` span (`traceparent`, and
/// `tracestate` when there is one) into `headers`, through the globally installed
/// propagator. Writes nothing when no OpenTelemetry layer is installed (tests) or the
/// span is not sampled into a trace.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        // The current span is not one the trace layer sees (another crate's debug span,
        // say): fall back to the trace this task is working for, if any.
        if let Ok(scoped) = TRACE.try_with(Clone::clone) {
            cx = scoped;
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut NatsInjector(headers));
    });
}

tokio::task_local! {
    /// The trace a task works for, set by [`in_trace`].
    static TRACE: opentelemetry::Context;
}

/// Runs `work` as part of the trace `cx`: requests it sends carry `cx` even when the
/// span current at that point is not seen by the trace layer.
pub async fn in_trace<F: std::future::Future>(cx: opentelemetry::Context, work: F) -> F::Output {
    TRACE.scope(cx, work).await
}

/// The trace context carried by a message's headers (an empty context when it has none),
/// to be set as the parent of the span that handles the message.
pub fn extract_trace_context(headers: Option<&HeaderMap>) -> opentelemetry::Context {
    match headers {
        Some(h) => opentelemetry::global::get_text_map_propagator(|p| p.extract(&NatsExtractor(h))),
        None => opentelemetry::Context::new(),
    }
}

/// The `traceparent` of a message, if it has one.
pub fn traceparent(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get(TRACEPARENT))
        .map(|v| v.as_str().to_owned())
}

/// The trace id (32 hex digits) of the current span, when it belongs to a trace.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&tracing::Span::current())
}

/// The trace id (32 hex digits) of `span`, when it belongs to a trace. Unlike
/// `span.in_scope(current_trace_id)` it does not enter the span (entering and leaving
/// cost every layer a call: measurable per command).
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct NatsInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(k, _)| <_ as AsRef<str>>::as_ref(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_round_trip_and_no_trace_without_a_layer() {
        let mut h = with_request_id("r-1");
        inject_trace_context(&mut h);
        assert_eq!(request_id(Some(&h)).as_deref(), Some("r-1"));
        // No OpenTelemetry layer is installed in unit tests: nothing is injected.
        assert_eq!(traceparent(Some(&h)), None);
        assert_eq!(current_trace_id(), None);
    }
}
