//! OpenTelemetry export over OTLP (feature `otel`): quicall's spans (and
//! the program's own `tracing` spans) and its servers' and clusters'
//! metrics, sent to an OpenTelemetry Collector (or Jaeger, Tempo, any OTLP
//! receiver) over gRPC.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let otel = quicall::otel::Otel::otlp("http://127.0.0.1:4317", "kv-server")?;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::EnvFilter::new("quicall=debug,info"))
//!     .with(otel.layer())
//!     .init();
//! // ... bind servers, build clusters (after `otlp`: they record their
//! // metrics through the meter provider it installs), serve ...
//! otel.shutdown()?; // exports what is still buffered
//! # Ok(()) }
//! ```
//!
//! quicall's spans carry the ids sent in `traceparent`, so a trace crosses
//! services whatever each one exports to (see the `quicall-rpc` crate's
//! `trace` module). Spans: `quicall.call` and `quicall.attempt` (client),
//! `quicall.serve` (server), at level DEBUG of target `quicall`, with the
//! method, peer or server, status code and latency. Metrics (histograms
//! with the Prometheus endpoint's buckets, in seconds):
//! `quicall.server.call.duration{method, code}`,
//! `quicall.server.calls_in_flight{method}`,
//! `quicall.server.request.size{method}`,
//! `quicall.server.response.size{method}` (bytes),
//! `quicall.client.call.duration{method, code}`,
//! `quicall.client.attempt.duration{server, code}` and their `_in_flight`
//! counts. The export interval of metrics is OpenTelemetry's
//! (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s unless set).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::registry::LookupSpan;

/// Why OpenTelemetry export could not be set up or shut down. Each says
/// what went wrong in its message (no separate source, so that an error
/// chain does not say it twice).
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// An exporter could not be built (a malformed endpoint ...).
    #[error("OTLP exporter: {0}")]
    Build(opentelemetry_otlp::ExporterBuildError),
    /// The exporters' runtime could not be started.
    #[error("OpenTelemetry export runtime: {0}")]
    Runtime(std::io::Error),
    /// Flushing or shutting down failed (the collector did not answer ...).
    #[error("OpenTelemetry shutdown: {0}")]
    Shutdown(opentelemetry_sdk::error::OTelSdkError),
}

impl From<opentelemetry_otlp::ExporterBuildError> for OtelError {
    fn from(e: opentelemetry_otlp::ExporterBuildError) -> Self {
        Self::Build(e)
    }
}

impl From<std::io::Error> for OtelError {
    fn from(e: std::io::Error) -> Self {
        Self::Runtime(e)
    }
}

impl From<opentelemetry_sdk::error::OTelSdkError> for OtelError {
    fn from(e: opentelemetry_sdk::error::OTelSdkError) -> Self {
        Self::Shutdown(e)
    }
}

/// Traces and metrics exported through OpenTelemetry: the tracer provider
/// behind [`Otel::layer`] and the meter provider installed as the global
/// one. [`Otel::shutdown`] exports what is still buffered.
pub struct Otel {
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
    /// Runs the OTLP exporters' I/O (their callers are OpenTelemetry's
    /// own threads, outside any Tokio runtime).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Otel {
    /// Exports over OTLP/gRPC to `endpoint` (a collector's, such as
    /// `http://127.0.0.1:4317`), as service `service` (the `service.name`
    /// resource), and installs the meter provider as OpenTelemetry's global
    /// one: servers bound and clusters built afterwards record into it.
    /// Traces are exported once [`Otel::layer`] is added to the program's
    /// `tracing` subscriber.
    pub fn otlp(endpoint: &str, service: &str) -> Result<Self, OtelError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("quicall-otlp")
            .enable_all()
            .build()?;
        let (spans, metrics) = {
            // The exporters' channels are made on that runtime.
            let _entered = runtime.enter();
            let spans = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            (spans, metrics)
        };
        let handle = runtime.handle().clone();
        let mut otel = Self::with_exporters(
            OnRuntime {
                inner: spans,
                runtime: handle.clone(),
            },
            OnRuntime {
                inner: metrics,
                runtime: handle,
            },
            service,
            None,
        );
        otel.runtime = Some(runtime);
        Ok(otel)
    }

    /// Exports through the given exporters (an in-memory one in tests,
    /// another protocol), metrics every `interval` (OpenTelemetry's
    /// default when `None`), and installs the meter provider as the global
    /// one.
    pub fn with_exporters(
        spans: impl SpanExporter + 'static,
        metrics: impl PushMetricExporter,
        service: &str,
        interval: Option<Duration>,
    ) -> Self {
        let resource = Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let traces = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let mut reader = PeriodicReader::builder(metrics);
        if let Some(interval) = interval {
            reader = reader.with_interval(interval);
        }
        let metrics = SdkMeterProvider::builder()
            .with_reader(reader.build())
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(metrics.clone());
        Self {
            traces,
            metrics,
            runtime: None,
        }
    }

    /// The `tracing` layer that exports spans (quicall's and the
    /// program's) as OpenTelemetry spans.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.traces.tracer("quicall"))
    }

    /// The tracer provider (to make tracers of the program's own).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.traces
    }

    /// The meter provider (also the global one).
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.metrics
    }

    /// Exports the spans and metrics still buffered and stops exporting.
    /// Blocks for as long as that takes (a few seconds at most): from an
    /// asynchronous context, call it in `spawn_blocking`.
    pub fn shutdown(mut self) -> Result<(), OtelError> {
        let traces = self.traces.shutdown();
        let metrics = self.metrics.shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        traces?;
        metrics?;
        Ok(())
    }
}

impl Drop for Otel {
    fn drop(&mut self) {
        // Dropping a runtime from an asynchronous context would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An exporter whose I/O (tonic's) needs a Tokio runtime, called from
/// OpenTelemetry's own threads: each export is run to completion on
/// `runtime`.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: E,
    runtime: tokio::runtime::Handle,
}

impl<E> OnRuntime<E> {
    /// Runs `work` on the runtime, from this thread when it is outside
    /// any runtime (as OpenTelemetry's threads are), else from a thread of
    /// its own (a runtime's thread may not block on another).
    fn run<F>(&self, work: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.runtime.block_on(work);
        }
        let runtime = &self.runtime;
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || runtime.block_on(work));
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.run(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.run(self.inner.export(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
