//! Distributed traces: W3C trace context carried from an HTTP request into
//! the events it causes and on into every consumer that handles them.
//!
//! With `telemetry.otlp_endpoint` set, spans are OpenTelemetry spans
//! exported over OTLP/HTTP (protobuf); [`continue_trace`] makes a span the
//! child of a trace context that arrived from elsewhere (a `traceparent`
//! header, or an event envelope's `trace_id` and `span_id`). Without an
//! endpoint no OpenTelemetry layer is installed and these calls do nothing:
//! trace and request ids still appear in every log line.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Make `span` a child of the remote span `parent_span_id` in trace
/// `trace_id` (32 hex digits). Without a parent span id the span joins the
/// trace under a parent that is not recorded anywhere. Invalid ids leave
/// the span as it is.
pub fn continue_trace(span: &tracing::Span, trace_id: &str, parent_span_id: Option<&str>) {
    let Ok(trace) = TraceId::from_hex(trace_id) else {
        return;
    };
    if trace == TraceId::INVALID {
        return;
    }
    let parent = parent_span_id
        .and_then(|s| SpanId::from_hex(s).ok())
        .filter(|s| *s != SpanId::INVALID)
        .unwrap_or_else(|| SpanId::from(rand::random::<u64>().max(1)));
    let remote = SpanContext::new(trace, parent, TraceFlags::SAMPLED, true, TraceState::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The OpenTelemetry span id (16 hex digits) of `span`, when traces are on.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.span_id().to_string())
}
