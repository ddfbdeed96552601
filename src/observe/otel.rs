//! Span export over OTLP, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Then each record gets a `record` span (with `attempt` and `route` spans
//! inside) that joins the record's own trace (its `traceparent`), or starts
//! one; spans leave in batches from the SDK's own thread, over OTLP/HTTP with
//! JSON bodies, to `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`. Unset, no layer
//! is installed and a record without a `traceparent` gets no span at all, so
//! the common path pays nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

use crate::event::trace_context::{TraceContext, TRACEPARENT, TRACESTATE};

/// The variable that turns export on (the OpenTelemetry SDKs' own name).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (the layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes the spans not yet sent when dropped, at exit.
pub struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        let _ = self.0.shutdown();
    }
}

/// The tracing layer that hands spans to the exporter.
pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// The layer that exports spans, when [`ENDPOINT_VAR`] is set.
pub fn layer<S>() -> Result<Option<(Layer<S>, Exporting)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if std::env::var_os(ENDPOINT_VAR).is_none_or(|v| v.is_empty()) {
        return Ok(None);
    }
    // The exporter reads the endpoint (and OTEL_EXPORTER_OTLP_HEADERS,
    // _TIMEOUT) from the environment itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "hookrelay".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("hookrelay");
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer), Exporting(provider))))
}

/// Makes `span` a child of the record's trace context (when exporting).
pub fn set_parent(span: &tracing::Span, context: &TraceContext) {
    struct Headers<'a>(&'a TraceContext);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                TRACEPARENT => self.0.traceparent.to_str().ok(),
                TRACESTATE => self.0.tracestate.as_ref().and_then(|v| v.to_str().ok()),
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT, TRACESTATE]
        }
    }
    let parent = TraceContextPropagator::new().extract(&Headers(context));
    // Fails only without the layer, where there is nothing to join.
    let _ = span.set_parent(parent);
}
