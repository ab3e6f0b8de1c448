//! Distributed traces: W3C trace context carried from an HTTP request into
//! the events it causes and on into every consumer that handles them.
//!
//! With `telemetry.otlp_endpoint` set, spans are OpenTelemetry spans
//! exported over OTLP/HTTP (protobuf); [`continue_trace`] makes a span the
//! child of a trace context that arrived from elsewhere (a `traceparent`
//! header, or an event envelope's `trace_id` and `span_id`). Without an
//! endpoint no OpenTelemetry layer is installed and these calls do nothing:
//! trace and request ids still appear in every log line.

use std::sync::OnceLock;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static SAMPLE_RATIO: OnceLock<f64> = OnceLock::new();

/// Set `telemetry.trace_sample_ratio` (once, when traces are set up).
pub(crate) fn set_sample_ratio(ratio: f64) {
    let _ = SAMPLE_RATIO.set(ratio.clamp(0.0, 1.0));
}

/// Whether the trace `trace` is recorded: OpenTelemetry's
/// `TraceIdRatioBased` rule on the trace id, so every process (the api that
/// took the request, the workers that consume its events and run its jobs)
/// decides the same and a trace is recorded whole or not at all.
pub fn sampled(trace: TraceId) -> bool {
    sampled_at(trace, SAMPLE_RATIO.get().copied().unwrap_or(1.0))
}

fn sampled_at(trace: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bytes = trace.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..16]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

/// Make `span` a child of the remote span `parent_span_id` in trace
/// `trace_id` (32 hex digits), recorded when [`sampled`] says so. Without a
/// parent span id the span joins the trace under a parent that is not
/// recorded anywhere. Invalid ids leave the span as it is.
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
    let flags = if sampled(trace) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(trace, parent, flags, true, TraceState::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The trace id (32 hex digits) of `span`, when traces are on.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// The OpenTelemetry span id (16 hex digits) of `span`, when traces are on.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.span_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_depends_on_the_trace_id_and_the_ratio_only() {
        let ids: Vec<TraceId> = (0..2000u64)
            .map(|i| TraceId::from_bytes(((i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as u128).to_be_bytes()))
            .collect();
        let share = |ratio: f64| ids.iter().filter(|t| sampled_at(**t, ratio)).count() as f64 / ids.len() as f64;
        assert_eq!(share(1.0), 1.0);
        assert_eq!(share(0.0), 0.0);
        assert!((share(0.25) - 0.25).abs() < 0.05, "{}", share(0.25));
        // Every process decides the same for the same trace.
        assert!(ids.iter().all(|t| sampled_at(*t, 0.5) == sampled_at(*t, 0.5)));
        // A trace recorded at a ratio is recorded at every larger one.
        assert!(ids.iter().all(|t| !sampled_at(*t, 0.1) || sampled_at(*t, 0.6)));
    }
}
