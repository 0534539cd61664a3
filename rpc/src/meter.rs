//! Metrics for Prometheus, through `prometheus-client`: per method (a
//! server's calls, a cluster client's calls) or per server (a cluster
//! client's attempts), calls by status code, latency (histogram buckets,
//! so that several processes aggregate), calls in flight, messages and
//! bytes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Code;

/// One label: what is measured (`method="kv.Store/Get"`, `server="..."`).
type Key = [(&'static str, String); 1];

/// That label and the status code.
type KeyCode = [(&'static str, String); 2];

/// Latency buckets: 50 µs doubling to about 3.3 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 17))
}

/// A set of metric families, by one label (`key`).
#[derive(Clone)]
pub(crate) struct Metrics {
    key: &'static str,
    calls: Family<KeyCode, Counter>,
    latency: Family<Key, Histogram, fn() -> Histogram>,
    in_flight: Family<Key, Gauge>,
    request_bytes: Family<Key, Counter>,
    response_bytes: Family<Key, Counter>,
    request_messages: Family<Key, Counter>,
    response_messages: Family<Key, Counter>,
    /// The same through OpenTelemetry's global meter provider.
    #[cfg(feature = "otel")]
    otel: Option<crate::otel::Instruments>,
}

impl Metrics {
    /// Families labelled by `key` (`"method"`, `"server"`).
    pub(crate) fn new(key: &'static str) -> Self {
        Self {
            key,
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            request_messages: Family::default(),
            response_messages: Family::default(),
            #[cfg(feature = "otel")]
            otel: None,
        }
    }

    /// Registers the families of a server's calls in `registry`
    /// (`quicall_server_calls_total{method, code}` ...), and with feature
    /// `otel` makes their OpenTelemetry instruments (`quicall.server.*`).
    /// Before [`Metrics::method`].
    pub(crate) fn register_server(&mut self, registry: &mut Registry) {
        #[cfg(feature = "otel")]
        {
            self.otel = Some(crate::otel::Instruments::new("server", "call", self.key));
        }
        let registry = registry.sub_registry_with_prefix("quicall_server");
        registry.register(
            "calls",
            "Calls answered, by method and status code",
            self.calls.clone(),
        );
        registry.register(
            "call_duration_seconds",
            "From a call's header to its answer",
            self.latency.clone(),
        );
        registry.register(
            "calls_in_flight",
            "Calls being read, handled or answered",
            self.in_flight.clone(),
        );
        registry.register(
            "request_bytes",
            "Request bytes (metadata and body) received",
            self.request_bytes.clone(),
        );
        registry.register(
            "response_bytes",
            "Response bytes (header, metadata and body) sent",
            self.response_bytes.clone(),
        );
        registry.register(
            "request_messages",
            "Request messages received (one per unary call, each message of a request stream)",
            self.request_messages.clone(),
        );
        registry.register(
            "response_messages",
            "Response messages sent (one per unary call answered OK, each message of a response stream)",
            self.response_messages.clone(),
        );
    }

    /// Registers the families of a cluster client in `registry`, as calls
    /// (per method) or attempts (per server): `quicall_client_calls_total`,
    /// `quicall_client_call_duration_seconds`, `quicall_client_calls_in_flight`
    /// or the same with `attempts`.
    pub(crate) fn register_client(&mut self, registry: &mut Registry, what: &str) {
        #[cfg(feature = "otel")]
        {
            self.otel = Some(crate::otel::Instruments::new("client", what, self.key));
        }
        let registry = registry.sub_registry_with_prefix("quicall_client");
        let key = self.key;
        registry.register(
            format!("{what}s"),
            format!("{what}s ended, by {key} and status code"),
            self.calls.clone(),
        );
        registry.register(
            format!("{what}_duration_seconds"),
            format!("from a {what}'s start to its end, by {key}"),
            self.latency.clone(),
        );
        registry.register(
            format!("{what}s_in_flight"),
            format!("{what}s started and not ended, by {key}"),
            self.in_flight.clone(),
        );
        if what == "call" {
            registry.register(
                "request_messages",
                format!("Request messages sent, by {key} (one per unary call)"),
                self.request_messages.clone(),
            );
            registry.register(
                "response_messages",
                format!("Response messages received, by {key} (one per unary call answered OK)"),
                self.response_messages.clone(),
            );
        }
    }

    /// The handles of one method (or server), made once.
    pub(crate) fn method(&self, name: impl Into<String>) -> MethodMeter {
        let name = name.into();
        let label = [(self.key, name.clone())];
        #[cfg(feature = "otel")]
        let otel = self.otel.as_ref().map(|otel| Arc::new(otel.method(&name)));
        MethodMeter {
            flow: Arc::new(Flow {
                request_bytes: self.request_bytes.get_or_create(&label).clone(),
                response_bytes: self.response_bytes.get_or_create(&label).clone(),
                request_messages: self.request_messages.get_or_create(&label).clone(),
                response_messages: self.response_messages.get_or_create(&label).clone(),
                #[cfg(feature = "otel")]
                otel: otel.clone(),
            }),
            #[cfg(feature = "otel")]
            otel,
            name,
            families: self.clone(),
            calls: Default::default(),
            latency: self.latency.get_or_create(&label).clone(),
            in_flight: self.in_flight.get_or_create(&label).clone(),
        }
    }
}

/// One method's messages and bytes, each way: shared by its calls' stream
/// readers and writers, which count as they go.
pub(crate) struct Flow {
    request_bytes: Counter,
    response_bytes: Counter,
    request_messages: Counter,
    response_messages: Counter,
    #[cfg(feature = "otel")]
    otel: Option<Arc<crate::otel::MethodInstruments>>,
}

impl Flow {
    /// Counts `messages` requests of `bytes` bytes (received by a server,
    /// sent by a client).
    pub(crate) fn requests(&self, messages: u64, bytes: usize) {
        self.request_messages.inc_by(messages);
        self.request_bytes.inc_by(bytes as u64);
        #[cfg(feature = "otel")]
        if let Some(otel) = &self.otel {
            otel.requests(messages, bytes);
        }
    }

    /// Counts `messages` responses of `bytes` bytes (sent by a server,
    /// received by a client).
    pub(crate) fn responses(&self, messages: u64, bytes: usize) {
        self.response_messages.inc_by(messages);
        self.response_bytes.inc_by(bytes as u64);
        #[cfg(feature = "otel")]
        if let Some(otel) = &self.otel {
            otel.responses(messages, bytes);
        }
    }
}

/// One method's (or server's) metrics: a few atomic operations and a
/// histogram observation per call, no lookup.
pub(crate) struct MethodMeter {
    name: String,
    families: Metrics,
    /// Per status code, made on its first use.
    calls: [OnceLock<Counter>; 17],
    latency: Histogram,
    in_flight: Gauge,
    flow: Arc<Flow>,
    #[cfg(feature = "otel")]
    otel: Option<Arc<crate::otel::MethodInstruments>>,
}

impl MethodMeter {
    /// The method's message and byte counters.
    pub(crate) fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// A call of this method has begun; its end is recorded by
    /// [`CallMeter::finish`] (or, if it never says how it ended, as
    /// CANCELLED when dropped).
    pub(crate) fn begin(&self, start: std::time::Instant) -> CallMeter<'_> {
        self.in_flight.inc();
        #[cfg(feature = "otel")]
        if let Some(otel) = &self.otel {
            otel.begin();
        }
        CallMeter {
            meter: self,
            start,
            done: false,
        }
    }

    fn record(&self, code: Code, elapsed: Duration) {
        let index = usize::from(code.as_u16()).min(16);
        let counter = self.calls[index].get_or_init(|| {
            let labels = [
                (self.families.key, self.name.clone()),
                ("code", code.name().to_owned()),
            ];
            self.families.calls.get_or_create(&labels).clone()
        });
        counter.inc();
        self.latency.observe(elapsed.as_secs_f64());
        #[cfg(feature = "otel")]
        if let Some(otel) = &self.otel {
            otel.record(code, elapsed.as_secs_f64());
        }
    }
}

/// One call being measured.
pub(crate) struct CallMeter<'a> {
    meter: &'a MethodMeter,
    start: std::time::Instant,
    done: bool,
}

impl CallMeter<'_> {
    /// The method's message and byte counters.
    pub(crate) fn flow(&self) -> &Flow {
        &self.meter.flow
    }

    /// The call ended with `code`.
    pub(crate) fn finish(mut self, code: Code) {
        self.done = true;
        self.meter.record(code, self.start.elapsed());
    }
}

impl Drop for CallMeter<'_> {
    fn drop(&mut self) {
        self.meter.in_flight.dec();
        #[cfg(feature = "otel")]
        if let Some(otel) = &self.meter.otel {
            otel.end();
        }
        if !self.done {
            self.meter.record(Code::Cancelled, self.start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code_with_buckets() {
        let mut metrics = Metrics::new("method");
        let mut registry = Registry::default();
        metrics.register_server(&mut registry);
        let meter = metrics.method("kv.Store/Get");
        meter.begin(std::time::Instant::now()).finish(Code::Ok);
        meter.begin(std::time::Instant::now()).finish(Code::Ok);
        meter
            .begin(std::time::Instant::now())
            .finish(Code::NotFound);
        let call = meter.begin(std::time::Instant::now());
        call.flow().requests(1, 100);
        call.flow().responses(1, 8);
        meter.flow().responses(3, 24);
        drop(call);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"quicall_server_calls_total{method="kv.Store/Get",code="OK"} 2"#,
            r#"quicall_server_calls_total{method="kv.Store/Get",code="NOT_FOUND"} 1"#,
            r#"quicall_server_calls_total{method="kv.Store/Get",code="CANCELLED"} 1"#,
            r#"quicall_server_call_duration_seconds_count{method="kv.Store/Get"} 4"#,
            r#"quicall_server_calls_in_flight{method="kv.Store/Get"} 0"#,
            r#"quicall_server_request_bytes_total{method="kv.Store/Get"} 100"#,
            r#"quicall_server_response_bytes_total{method="kv.Store/Get"} 32"#,
            r#"quicall_server_request_messages_total{method="kv.Store/Get"} 1"#,
            r#"quicall_server_response_messages_total{method="kv.Store/Get"} 4"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        // Real buckets (cumulative), up to +Inf.
        assert!(
            text.contains(
                r#"quicall_server_call_duration_seconds_bucket{le="+Inf",method="kv.Store/Get"} 4"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"quicall_server_call_duration_seconds_bucket{le="0.00005",method="kv.Store/Get"}"#
        ));
    }
}
