//! Logging and metrics for Atlas.
//!
//! Logs are pretty on a terminal and JSON when configured (or when stdout is
//! not a terminal and the format is `auto`); every line inside a request
//! carries the request span's `request_id` and `trace_id`. Metrics are
//! recorded with the `metrics` facade and rendered in the Prometheus text
//! format; names follow `atlas_<area>_<noun>_<unit>`.

pub mod trace;

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

/// The `telemetry` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `atlas=debug,sqlx=warn`.
    pub log_level: String,
    /// OTLP traces endpoint: `http://collector:4318/v1/traces` for the
    /// HTTP protocols, `http://collector:4317` for gRPC. Unset: no spans
    /// are exported.
    pub otlp_endpoint: Option<String>,
    /// How spans are sent: `http/protobuf` (the OTLP default), `http/json`
    /// or `grpc`.
    pub otlp_protocol: OtlpProtocol,
    /// Share of new traces recorded (0.0–1.0); a trace that arrives with a
    /// sampled parent is always recorded.
    pub trace_sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            trace_sample_ratio: 1.0,
        }
    }
}

/// The OTLP transport and encoding of exported spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
    /// OTLP/gRPC (protobuf over HTTP/2), plaintext.
    #[serde(rename = "grpc")]
    Grpc,
}

impl std::fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
            OtlpProtocol::Grpc => "grpc",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_level: {0}")]
    Filter(String),
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
}

static TRACER_PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// The OpenTelemetry tracer provider exporting to `endpoint`.
fn tracer_provider(
    endpoint: &str,
    protocol: OtlpProtocol,
    sample_ratio: f64,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::Sampler;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_ratio.clamp(0.0, 1.0))));
    let builder = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("atlas")
                .build(),
        );
    let http = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        OtlpProtocol::Grpc => {
            let exporter = GrpcSpanExporter::new(endpoint)?;
            return Ok(builder.with_batch_exporter(exporter).build());
        }
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(http)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The OTLP/gRPC span exporter, run on a Tokio runtime of its own.
///
/// The SDK's batch processor exports from a plain thread, while tonic's
/// channel needs a Tokio reactor (to build it and to drive its HTTP/2
/// connection). A one-thread runtime, kept for the life of the process,
/// gives it one without touching the application's runtime: an export
/// neither waits for nor blocks the request handlers.
#[derive(Debug)]
struct GrpcSpanExporter {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: &'static tokio::runtime::Runtime,
}

static GRPC_RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

impl GrpcSpanExporter {
    fn new(endpoint: &str) -> Result<Self, TelemetryError> {
        use opentelemetry_otlp::WithExportConfig;
        if !endpoint.starts_with("http://") {
            return Err(TelemetryError::Exporter(format!(
                "{endpoint:?}: OTLP/gRPC is sent in plaintext to an http:// endpoint (e.g. a collector on \
                 port 4317); for TLS use otlp_protocol = \"http/protobuf\" with an https:// endpoint"
            )));
        }
        let runtime = match GRPC_RUNTIME.get() {
            Some(runtime) => runtime,
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("atlas-otlp-grpc")
                    .enable_all()
                    .build()
                    .map_err(|e| TelemetryError::Exporter(format!("starting the OTLP/gRPC runtime: {e}")))?;
                GRPC_RUNTIME.get_or_init(|| runtime)
            }
        };
        // tonic spawns its connection's worker task when the channel is built.
        let _entered = runtime.enter();
        let inner = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Ok(GrpcSpanExporter { inner, runtime })
    }
}

impl opentelemetry_sdk::trace::SpanExporter for GrpcSpanExporter {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        // Called on the batch processor's own thread, never on a runtime
        // worker, so blocking on the exporter's runtime is allowed.
        self.runtime.block_on(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Export the spans still buffered (call before the process exits).
pub fn shutdown_tracing() {
    if let Some(provider) = TRACER_PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "flushing trace spans failed");
        }
    }
}

/// Install the global log subscriber. `RUST_LOG`, when set, wins over
/// `telemetry.log_level`. Calling it twice is harmless (the first wins).
pub fn init_logging(settings: &TelemetrySettings) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&settings.log_level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let otel = match &settings.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry::trace::TracerProvider as _;
            let provider = tracer_provider(endpoint, settings.otlp_protocol, settings.trace_sample_ratio)?;
            trace::set_sample_ratio(settings.trace_sample_ratio);
            let tracer = provider.tracer("atlas");
            let _ = TRACER_PROVIDER.set(provider);
            // Spans are exported whatever the log level: `log_level = "warn"`
            // quiets the logs, not the traces.
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
        }
        None => None,
    };
    let registry = tracing_subscriber::registry().with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_target(false).with_filter(filter))
            .try_init()
    };
    if result.is_ok() {
        if let Some(endpoint) = &settings.otlp_endpoint {
            tracing::info!(%endpoint, protocol = %settings.otlp_protocol, ratio = settings.trace_sample_ratio, "exporting traces over OTLP");
        }
    }
    Ok(())
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use). `None`
/// only if another metrics recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histograms keep their samples until upkeep folds them into
            // buckets; without it memory grows with every request between
            // scrapes. A plain thread: this may run outside any runtime.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("atlas-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .as_ref()
}

/// Render all metrics in the Prometheus text format.
pub fn render_metrics() -> String {
    prometheus().map(|h| h.render()).unwrap_or_default()
}

/// Whether a metric name follows the `atlas_<area>_<noun>[_<unit>]` convention.
pub fn is_conventional_metric_name(name: &str) -> bool {
    let mut parts = name.split('_');
    parts.next() == Some("atlas")
        && name.split('_').count() >= 3
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.contains("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_name_convention() {
        assert!(is_conventional_metric_name("atlas_http_requests_total"));
        assert!(!is_conventional_metric_name("http_requests_total"));
        assert!(!is_conventional_metric_name("atlas_Http_x"));
        assert!(!is_conventional_metric_name("atlas_x"));
    }

    #[test]
    fn otlp_protocols_are_named_as_in_the_otlp_exporter_settings() {
        for (name, protocol) in [
            ("http/protobuf", OtlpProtocol::HttpProtobuf),
            ("http/json", OtlpProtocol::HttpJson),
            ("grpc", OtlpProtocol::Grpc),
        ] {
            let parsed: OtlpProtocol = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(parsed, protocol);
            assert_eq!(protocol.to_string(), name);
        }
    }

    #[test]
    fn grpc_to_an_https_endpoint_is_refused_with_the_way_out() {
        let err = tracer_provider("https://collector:4317", OtlpProtocol::Grpc, 1.0).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("telemetry.otlp_endpoint:"), "{message}");
        assert!(message.contains("http/protobuf"), "{message}");
        assert!(tracer_provider("http://127.0.0.1:4317", OtlpProtocol::Grpc, 1.0).is_ok());
    }

    #[test]
    fn recorded_metrics_are_rendered() {
        assert!(prometheus().is_some());
        metrics::counter!("atlas_test_events_total").increment(3);
        assert!(render_metrics().contains("atlas_test_events_total 3"));
    }
}
