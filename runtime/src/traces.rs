//! OpenTelemetry traces. With an OTLP endpoint (`--otlp-endpoint`, or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) the node exports, over OTLP/gRPC, a span
//! per gRPC call with children for its store reads and writes, its handler
//! call, each host call the handler makes, and each call to a peer. W3C
//! trace context (`traceparent`) is read from a call's metadata and written
//! into every call to a peer, so a call forwarded through the mesh is one
//! trace across nodes.
//!
//! The spans are ordinary `tracing` spans under the target [`TARGET`]; only
//! the layer `install` returns enables that target (and the log filter,
//! when it asks for that level), so without an endpoint a span site costs
//! one cached check and nothing is exported.

use crate::error::{Error, Result};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::sync::Arc;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span the node exports.
pub const TARGET: &str = "collector::trace";

/// The exporting pipeline; dropping it (or `shutdown`) flushes what is
/// buffered.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Exporting {
    /// Exports what is buffered and stops (blocking: call it off the
    /// async runtime).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

/// The layer that turns the node's spans into OpenTelemetry spans sent to
/// `endpoint` (e.g. `http://127.0.0.1:4317`), and the pipeline behind it.
/// Call inside the Tokio runtime: exports run on it.
pub fn install<S>(endpoint: &str) -> Result<(impl tracing_subscriber::Layer<S>, Exporting)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error::invalid(format!("--otlp-endpoint {endpoint:.100}: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(OnRuntime {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
        })
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("collector")
                .build(),
        )
        .build();
    let tracer = provider.tracer("collector");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO),
        );
    Ok((layer, Exporting { provider }))
}

/// Runs the OTLP exporter's calls on the node's runtime: the SDK's batch
/// processor exports from a thread of its own, where tonic finds no
/// reactor.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let sent = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            sent.await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // Called once, while the pipeline is built and nothing else holds it.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// A call's trace context, read through the caller's lookup of its
/// metadata (`traceparent`, `tracestate`).
struct Incoming<'a, F>(F, std::marker::PhantomData<&'a ()>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Incoming<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// A call's trace context, written through the caller's setter.
struct Outgoing<F>(F);

impl<F: FnMut(&str, String)> Injector for Outgoing<F> {
    fn set(&mut self, key: &str, value: String) {
        (self.0)(key, value)
    }
}

/// The span of a gRPC call this node serves, the child of the caller's
/// span when its metadata (read through `get`) carries one.
pub fn server_span<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    method: &str,
    node: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "grpc",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        collector.node = node,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent =
            TraceContextPropagator::new().extract(&Incoming(get, std::marker::PhantomData));
        let _ = span.set_parent(parent);
    }
    span
}

/// Records a finished call's gRPC status code on its span (0 is OK).
pub fn record_status(span: &tracing::Span, code: i32) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "error");
    }
}

/// The span of a call to a peer at `address`.
pub fn peer_span(what: &str, address: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "peer",
        otel.name = what,
        otel.kind = "client",
        rpc.system = "grpc",
        server.address = address,
    )
}

/// Writes `span`'s trace context through `set` (into a call's metadata,
/// replacing any the caller sent: the peer's span is the child of ours).
/// Without tracing it writes nothing, so the caller's context passes on as
/// it came and the trace still joins up through a node that does not
/// export.
pub fn propagate(span: &tracing::Span, set: impl FnMut(&str, String)) {
    if span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut Outgoing(set));
}

/// The span of a store operation (`sqlite.read`, `sqlite.write`) on a
/// collection: from the call's queueing to its answer.
pub fn store_span(op: &'static str, namespace: &str, collection: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "store",
        otel.name = op,
        db.system = "sqlite",
        collector.namespace = namespace,
        collector.collection = collection,
    )
}

/// The span of a handler call.
pub fn handler_span(namespace: &str, service: &str, method: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "handler",
        otel.name = format!("handler {service}/{method}"),
        collector.namespace = namespace,
        collector.service = service,
        collector.method = method,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// Marks `span` as failed (a handler call that ended in an error).
pub fn record_error(span: &tracing::Span, message: &str) {
    if !span.is_disabled() {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", message);
    }
}

/// The span of a host call a handler makes (`collection.get`, `invoke`, …).
pub fn host_span(call: &'static str) -> tracing::Span {
    tracing::info_span!(target: TARGET, "host", otel.name = call)
}
