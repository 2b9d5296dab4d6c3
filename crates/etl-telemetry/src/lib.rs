//! Telemetry for every file-etl binary: one [`init`] call sets up logs and traces,
//! and the carriers here move the W3C trace context across each hop so that one
//! file is one trace, from the extractor to its Postgres rows.
//!
//! # Layout
//! - [`init`]: tracing subscriber (env filter; text on a terminal, JSON otherwise,
//!   `LOG_FORMAT` overrides) and the OpenTelemetry SDK (OTLP/gRPC export when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set), returning a guard that flushes on drop.
//! - [`context`]: `traceparent` strings to and from spans (Kafka headers, SFTP
//!   announcements, FileReady events all carry one).
//! - [`grpc`]: the tower layer servers use to join the caller's trace, and the
//!   interceptor clients use to send theirs.
//! - [`names`]: span names and attribute keys, in one greppable place.
//! - [`jaeger`]: reading a trace back from the Jaeger query API; the waterfall view.
//! - `collector` (feature `collector`): an in-process OTLP collector with the Jaeger
//!   UI, for the local stack and for tests.

#[cfg(feature = "collector")]
pub mod collector;
pub mod context;
pub mod grpc;
pub mod jaeger;
pub mod names;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

pub use context::{current_traceparent, parent_from_traceparent, trace_id_of};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
}

/// Flushes buffered spans when dropped (or on [`TelemetryGuard::shutdown`]).
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

/// Sets up logs and traces for `service_name` (overridden by `OTEL_SERVICE_NAME`).
///
/// Spans always get real trace ids (rows store them in `_etl_trace_id`); they are
/// exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Default log filter is
/// `info`, changed with `RUST_LOG`.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    let provider = build_provider(service_name)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("file-etl");
    // Traces keep every info span whatever the log level: rows store their trace
    // id, so a quieter RUST_LOG must not cut a file's trace.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(trace_filter());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,tower=warn,hyper=warn,russh=warn,rdkafka=warn")
    });
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()
    };
    result.map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// For tests: installs the propagator and a tracer provider (no subscriber), so
/// spans made in a test process carry real trace ids. Safe to call many times.
pub fn init_for_tests() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if let Ok(provider) = build_provider("file-etl-test") {
            opentelemetry::global::set_tracer_provider(provider.clone());
            let otel = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("file-etl"))
                .with_filter(trace_filter());
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            let _ = tracing_subscriber::registry()
                .with(otel)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_test_writer()
                        .with_filter(filter),
                )
                .try_init();
        }
    });
}

/// Spans worth exporting: ours and the libraries' info-level ones, not the
/// per-frame debug spans of h2/hyper/tower.
fn trace_filter() -> EnvFilter {
    EnvFilter::new("info,h2=off,hyper=off,tower=off,hyper_util=off")
}

fn build_provider(service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_string());
    // Collectors (otlp-embedded, Jaeger) tell processes apart by instance id.
    let instance = format!("{name}-{}", std::process::id());
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance,
        ))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        && !endpoint.is_empty()
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}
