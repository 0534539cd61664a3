//! OpenTelemetry (feature `otel`): the ids of the spans that
//! `tracing-opentelemetry` exports are the ids sent in `traceparent`, and
//! servers and clusters record their metrics through the global meter
//! provider as well as for Prometheus.
//!
//! quicall, as a library, only uses the OpenTelemetry API: the program
//! chooses the exporters (the `quicall` crate's `otel` module sets up OTLP).
//! Its spans reach OpenTelemetry through the `tracing-opentelemetry` layer,
//! when the program installs one; its metrics through the meter provider
//! installed with `opentelemetry::global::set_meter_provider` before a
//! server is bound or a cluster built.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Code, TraceContext};

/// The span `span` records as OpenTelemetry knows it, once it is linked to
/// `parent` (the caller's trace, from `traceparent`): its trace and span ids
/// are the ones to send on and to continue in a handler; and `parent` if it
/// became the span's parent. `None` when no OpenTelemetry layer records
/// `span`.
///
/// `parent` becomes the span's parent only where the span has none from
/// OpenTelemetry already (`inherit`: a client's span inside a program's own
/// OpenTelemetry span keeps that span as its parent, which is a descendant
/// of the trace being served anyway).
pub(crate) fn link(
    span: &tracing::Span,
    parent: Option<TraceContext>,
    inherit: bool,
) -> Option<(TraceContext, Option<TraceContext>)> {
    let mut linked = None;
    if let Some(parent) = parent {
        let inherited = inherit && tracing::Span::current().context().has_active_span();
        if !inherited {
            linked = Some(parent);
            let flags = if parent.is_sampled() {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(
                TraceId::from(parent.trace_id()),
                SpanId::from(parent.span_id()),
                flags,
                true,
                TraceState::NONE,
            );
            span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
                .ok()?;
        }
    }
    let cx = span.context();
    let own = cx.span().span_context().clone();
    own.is_valid().then(|| {
        let own = TraceContext::from_ids(
            u128::from_be_bytes(own.trace_id().to_bytes()),
            u64::from_be_bytes(own.span_id().to_bytes()),
            own.is_sampled(),
        );
        (own, linked)
    })
}

/// Latency bucket boundaries, in seconds: those of the Prometheus
/// histograms (50 µs doubling to about 3.3 s).
fn latency_boundaries() -> Vec<f64> {
    (0..17).map(|i| 50e-6 * f64::powi(2.0, i)).collect()
}

/// The instruments of one kind of call (a server's calls, a cluster's calls
/// or its attempts): `quicall.server.call.duration`,
/// `quicall.server.calls_in_flight`, `quicall.server.request.size`,
/// `quicall.server.response.size`; `quicall.client.call.duration` ...
#[derive(Clone)]
pub(crate) struct Instruments {
    key: &'static str,
    duration: Histogram<f64>,
    in_flight: UpDownCounter<i64>,
    request_bytes: Counter<u64>,
    response_bytes: Counter<u64>,
    request_messages: Counter<u64>,
    response_messages: Counter<u64>,
}

impl Instruments {
    /// `side` is `"server"` or `"client"`, `what` is `"call"` or
    /// `"attempt"`, `key` the attribute that names a method or server.
    pub(crate) fn new(side: &str, what: &str, key: &'static str) -> Self {
        let meter = opentelemetry::global::meter_with_scope(
            InstrumentationScope::builder("quicall")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let name =
            |suffix: &str| -> Cow<'static, str> { format!("quicall.{side}.{suffix}").into() };
        Self {
            key,
            duration: meter
                .f64_histogram(name(&format!("{what}.duration")))
                .with_unit("s")
                .with_description(format!(
                    "From a {what}'s start to its end, by {key} and code"
                ))
                .with_boundaries(latency_boundaries())
                .build(),
            in_flight: meter
                .i64_up_down_counter(name(&format!("{what}s_in_flight")))
                .with_description(format!("{what}s started and not ended, by {key}"))
                .build(),
            request_bytes: meter
                .u64_counter(name("request.size"))
                .with_unit("By")
                .with_description("Request bytes (metadata and body) received")
                .build(),
            response_bytes: meter
                .u64_counter(name("response.size"))
                .with_unit("By")
                .with_description("Response bytes (header, metadata and body) sent")
                .build(),
            request_messages: meter
                .u64_counter(name("request.messages"))
                .with_description("Request messages (one per unary call)")
                .build(),
            response_messages: meter
                .u64_counter(name("response.messages"))
                .with_description("Response messages (one per unary call answered OK)")
                .build(),
        }
    }

    /// The instruments of one method (or server), with its attributes made
    /// once.
    pub(crate) fn method(&self, name: &str) -> MethodInstruments {
        let name: Arc<str> = name.into();
        MethodInstruments {
            instruments: self.clone(),
            attributes: [KeyValue::new(self.key, name)],
            by_code: Default::default(),
        }
    }
}

/// One method's (or server's) instruments and attributes.
pub(crate) struct MethodInstruments {
    instruments: Instruments,
    attributes: [KeyValue; 1],
    /// The attributes with each status code, made on first use.
    by_code: [OnceLock<[KeyValue; 2]>; 17],
}

impl MethodInstruments {
    pub(crate) fn begin(&self) {
        self.instruments.in_flight.add(1, &self.attributes);
    }

    pub(crate) fn end(&self) {
        self.instruments.in_flight.add(-1, &self.attributes);
    }

    pub(crate) fn record(&self, code: Code, seconds: f64) {
        let index = usize::from(code.as_u16()).min(16);
        let attributes = self.by_code[index].get_or_init(|| {
            [
                self.attributes[0].clone(),
                KeyValue::new("code", code.name()),
            ]
        });
        self.instruments.duration.record(seconds, attributes);
    }

    pub(crate) fn requests(&self, messages: u64, bytes: usize) {
        let instruments = &self.instruments;
        instruments.request_messages.add(messages, &self.attributes);
        instruments
            .request_bytes
            .add(bytes as u64, &self.attributes);
    }

    pub(crate) fn responses(&self, messages: u64, bytes: usize) {
        let instruments = &self.instruments;
        instruments
            .response_messages
            .add(messages, &self.attributes);
        instruments
            .response_bytes
            .add(bytes as u64, &self.attributes);
    }
}
