//! OpenTelemetry traces over OTLP/gRPC, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! The spans are `tracing` spans with the target [`TARGET`], bridged to OpenTelemetry by
//! `tracing-opentelemetry`; only spans of that target reach the exporter (no log events,
//! no spans of the libraries underneath), so what is exported is exactly what this module
//! and its callers name:
//! - one server span per RPC ([`rpc_layer`]), a child of the caller's span when the call
//!   carries W3C `traceparent`/`tracestate` metadata;
//! - one client span per store call made while an RPC is traced ([`store`]);
//! - one span per password hash or check on a hashing thread ([`hashing`]), with the time
//!   it waited in the queue and the time the hash took.
//!
//! None of them records a secret: no password, token, key, hash or code, and no user
//! identifier either: RPC spans carry the method and status code, store spans the
//! operation, hashing spans their timings.
//!
//! When tracing is off nothing here runs on the request path: the RPC layer and the store
//! decorator are not installed, and [`hashing`] hands out `Span::none()`.
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

mod hashing;
pub mod rpc_layer;
pub mod store;

pub use hashing::{HashTiming, hash_span, on_hashing_thread};
pub use rpc_layer::{RpcSpanLayer, wrap_routes};
pub use store::wrap_store;

/// The `tracing` target of every span meant for export.
pub const TARGET: &str = "st_peter::traces";

/// The service name when `OTEL_SERVICE_NAME` (or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`) does not give one.
pub const DEFAULT_SERVICE_NAME: &str = "st-peter";

const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (set once by [`Traces::from_env`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporting tracer provider; [`Traces::shutdown`] flushes what is still batched.
pub struct Traces {
    provider: SdkTracerProvider,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Whether the `OTEL_*` variables (read through `var`) ask for traces, and to where.
/// `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` turn them off whatever the
/// endpoint; a protocol other than `grpc` is refused.
fn wanted_endpoint(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    let Some(endpoint) = ENDPOINT_VARS.iter().find_map(|name| var(name)) else {
        return Ok(None);
    };
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if disabled || no_exporter {
        return Ok(None);
    }
    let protocol = PROTOCOL_VARS.iter().find_map(|name| var(name));
    if let Some(protocol) = protocol.filter(|protocol| protocol.trim() != "grpc") {
        bail!(
            "OTLP protocol {protocol:?}: st-peter exports traces over OTLP/gRPC only; \
             set OTEL_EXPORTER_OTLP_PROTOCOL=grpc (or leave it unset) and point the \
             endpoint at the collector's gRPC port (4317 by default)"
        );
    }
    Ok(Some(endpoint))
}

impl Traces {
    /// Tracing as the standard `OTEL_*` variables configure it: `None` when no OTLP
    /// endpoint is set (or the SDK or the traces exporter is turned off). Needs a Tokio
    /// runtime (the gRPC channel lives on it).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = wanted_endpoint(|name| std::env::var(name).ok())? else {
            return Ok(None);
        };
        // The exporter reads the endpoint, headers, timeout and compression variables
        // itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .with_context(|| format!("OTLP trace exporter for {endpoint}"))?;
        let mut resource = Resource::builder();
        let named = env("OTEL_SERVICE_NAME").is_some()
            || env("OTEL_RESOURCE_ATTRIBUTES")
                .is_some_and(|attributes| attributes.contains("service.name="));
        if !named {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        // Batched on the SDK's own thread; OTEL_BSP_* tune it.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Self { provider }))
    }

    /// The `tracing` layer that turns [`TARGET`] spans into exported OpenTelemetry spans,
    /// and ignores everything else.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer("st-peter");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() && metadata.target() == TARGET
            }))
    }

    /// Exports what is still batched and stops the exporter (at the end of `serve`).
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let provider = self.provider;
        // Blocks until the batch thread has flushed, which needs the runtime's other
        // threads for the gRPC channel: off the async workers.
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "flushing traces at shutdown failed"),
            Err(error) => tracing::warn!(%error, "flushing traces at shutdown failed"),
        }
    }
}

/// Whether a `tracing` metadata belongs to the exported spans (the log output leaves
/// them out, so turning traces on does not change the log lines).
pub fn is_trace_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == TARGET
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(vars: &[(&str, &str)]) -> anyhow::Result<Option<String>> {
        wanted_endpoint(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn on_only_with_an_endpoint_and_not_turned_off() {
        assert_eq!(wanted(&[]).unwrap(), None);
        assert_eq!(
            wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            None
        );
        assert_eq!(wanted(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert_eq!(
            wanted(&[endpoint]).unwrap().as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(
            wanted(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317")
            ])
            .unwrap()
            .as_deref(),
            Some("http://traces:4317")
        );
        assert_eq!(
            wanted(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            wanted(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert!(
            wanted(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn protocols_other_than_grpc_are_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (name, protocol) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ] {
            let error = wanted(&[endpoint, (name, protocol)])
                .unwrap_err()
                .to_string();
            assert!(error.contains(protocol), "{error}");
            assert!(error.contains("OTLP/gRPC only"), "{error}");
        }
        // The traces' own variable wins over the general one.
        assert!(
            wanted(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ])
            .unwrap()
            .is_some()
        );
    }
}
