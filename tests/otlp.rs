//! `quicall serve --otlp URL` exports over OTLP/gRPC: an OTLP receiver
//! (the collector's gRPC services, from the OpenTelemetry protocol's own
//! definitions) gets the span of every call, continuing the trace the
//! caller sent in `traceparent`, and the server's metrics, under the
//! service name given in `OTEL_SERVICE_NAME`; what is buffered is sent when
//! the server stops.
#![cfg(feature = "otel")]

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::serve_process::{listening_address, write_certs};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;

/// What the receiver was sent.
#[derive(Clone, Default)]
struct Receiver {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_spans_and_metrics_over_otlp() {
    let receiver = Receiver::default();
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let collector = format!("http://{}", incoming.local_addr().unwrap());
    let collecting = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(incoming),
    );

    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let mut server = Command::new(env!("CARGO_BIN_EXE_quicall"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--otlp", &collector])
        .arg("--cert")
        .arg(dir.path().join("node.crt"))
        .arg("--key")
        .arg(dir.path().join("node.key"))
        .arg("--ca")
        .arg(dir.path().join("ca.crt"))
        .env("OTEL_SERVICE_NAME", "otlp-test")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut server);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let call = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quicall"))
            .arg("call")
            .args(["--server", &addr, "--server-name", "localhost"])
            .arg("--ca")
            .arg(dir.path().join("ca.crt"))
            .arg("--cert")
            .arg(dir.path().join("ops.crt"))
            .arg("--key")
            .arg(dir.path().join("ops.key"))
            .args(args)
            .output()
            .unwrap()
    };
    let traceparent = format!("traceparent: 00-{trace_id}-{parent}-01");
    let out = call(&["-H", &traceparent, "echo", "traced"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = call(&["--count", "2", "add", "2", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Metrics come every 300 ms; spans in batches. Wait for both.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metric_names = |receiver: &Receiver| -> Vec<String> {
        let metrics = receiver.metrics.lock().unwrap();
        metrics
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| m.name.clone())
            .collect()
    };
    while !metric_names(&receiver).contains(&"quicall.server.call.duration".to_owned()) {
        assert!(Instant::now() < deadline, "no metrics exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Ctrl-C: the server stops and exports what it still holds.
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || {
        let waited = Instant::now();
        loop {
            if let Some(status) = server.try_wait().unwrap() {
                return status;
            }
            if waited.elapsed() > Duration::from_secs(30) {
                let _ = server.kill();
                panic!("the server did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");

    let traces = receiver.traces.lock().unwrap().clone();
    let mut spans = Vec::new();
    for resource in traces.iter().flat_map(|r| &r.resource_spans) {
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        assert_eq!(
            string(attributes, "service.name").as_deref(),
            Some("otlp-test")
        );
        for scope in &resource.scope_spans {
            spans.extend(scope.spans.iter().cloned());
        }
    }
    let serves: Vec<_> = spans.iter().filter(|s| s.name == "quicall.serve").collect();
    assert_eq!(serves.len(), 3, "{spans:?}");
    let echo = serves
        .iter()
        .find(|s| string(&s.attributes, "method").as_deref() == Some("demo.Echo/Echo"))
        .unwrap();
    // The caller's trace continues, as the child of the span it named.
    assert_eq!(hex(&echo.trace_id), trace_id);
    assert_eq!(hex(&echo.parent_span_id), parent);
    assert_eq!(string(&echo.attributes, "status").as_deref(), Some("OK"));
    assert_eq!(string(&echo.attributes, "peer").as_deref(), Some("ops"));
    assert_eq!(
        string(&echo.attributes, "span_id").as_deref(),
        Some(hex(&echo.span_id).as_str())
    );
    // Calls without a traceparent: traces of their own.
    for add in serves
        .iter()
        .filter(|s| string(&s.attributes, "method").as_deref() == Some("calc.Calc/Add"))
    {
        assert_ne!(hex(&add.trace_id), trace_id);
    }

    // The last export (at shutdown) counts every call, by method and code.
    let metrics = receiver.metrics.lock().unwrap().clone();
    let last = metrics
        .iter()
        .rev()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == "quicall.server.call.duration")
        .unwrap();
    assert_eq!(last.unit, "s");
    let Some(metric::Data::Histogram(histogram)) = &last.data else {
        panic!("{last:?}");
    };
    let count = |method: &str| -> u64 {
        histogram
            .data_points
            .iter()
            .filter(|p| {
                string(&p.attributes, "method").as_deref() == Some(method)
                    && string(&p.attributes, "code").as_deref() == Some("OK")
            })
            .map(|p| p.count)
            .sum()
    };
    assert_eq!(count("demo.Echo/Echo"), 1);
    assert_eq!(count("calc.Calc/Add"), 2);
    // Buckets of the Prometheus endpoint's bounds (50 µs doubling).
    let point = &histogram.data_points[0];
    assert_eq!(point.explicit_bounds.first(), Some(&50e-6));
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    collecting.abort();
}
