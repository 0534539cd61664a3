//! OpenTelemetry (feature `otel`, on by default): the spans exported for a
//! trace that crosses client -> server A -> server B share one trace id,
//! with the right parent links, and carry the ids sent in `traceparent`;
//! servers and clusters record their metrics through the global meter
//! provider. In-memory exporters catch what would be sent.
#![cfg(feature = "otel")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, bounded, cluster_of, connect, serve};
use opentelemetry::trace::{SpanId, SpanKind, Status as SpanStatus};
use opentelemetry_sdk::metrics::InMemoryMetricExporter;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use quicall::otel::Otel;
use quicall::rpc::{TRACEPARENT, TraceContext};
use quicall::{ClusterOptions, Code, Context, Method, Router, Status};
use tracing_subscriber::prelude::*;

const FRONT: Method<[u8], [u8]> = Method::new("otel.A/Front").idempotent();
const LEAF: Method<[u8], [u8]> = Method::new("otel.B/Leaf");

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_opentelemetry_with_the_ids_on_the_wire() {
    let spans = InMemorySpanExporter::default();
    let metrics = InMemoryMetricExporter::default();
    let otel = Otel::with_exporters(spans.clone(), metrics.clone(), "otel-test", None);
    tracing_subscriber::registry()
        .with(
            otel.layer()
                .with_filter(tracing_subscriber::EnvFilter::new("quicall=debug,info")),
        )
        .init();

    let pki = Pki::new();
    // B's handler keeps the traceparent it was sent.
    let leaf_saw: Arc<Mutex<Option<String>>> = Arc::default();
    let saw = leaf_saw.clone();
    let b = serve(
        &pki,
        Router::new()
            .route(&LEAF, move |ctx: Context, _req| {
                let sent = ctx.metadata().get(TRACEPARENT).map(|v| v.to_vec());
                *saw.lock().unwrap() = sent.map(|v| String::from_utf8(v).unwrap());
                async { Ok::<_, Status>("leaf") }
            })
            .unwrap(),
    );
    let to_b = connect(&pki, &b).await;
    let a = serve(
        &pki,
        Router::new()
            .route(&FRONT, move |_ctx: Context, req| {
                let to_b = to_b.clone();
                async move {
                    if &req[..] == b"fail" {
                        return Err(Status::not_found("no such thing"));
                    }
                    let leaf = to_b.call(&LEAF, "").await?;
                    Ok::<_, Status>(format!("front+{}", String::from_utf8_lossy(&leaf)))
                }
            })
            .unwrap(),
    );
    let cluster = cluster_of(&pki, &[&a], ClusterOptions::default()).await;

    // The program's own span: quicall's continue its trace.
    let request = tracing::info_span!("request");
    let reply = bounded(tracing::Instrument::instrument(
        cluster.call(&FRONT, ""),
        request.clone(),
    ))
    .await
    .unwrap();
    assert_eq!(&reply[..], b"front+leaf");
    drop(request);
    // A failing call, outside any span: a trace of its own.
    let failed = bounded(cluster.call(&FRONT, "fail")).await.unwrap_err();
    assert_eq!(failed.code(), Code::NotFound);

    // Spans end when their answers are sent: wait for the 9 of both calls.
    let spans = bounded(async {
        loop {
            otel.tracer_provider().force_flush().unwrap();
            let finished = spans.get_finished_spans().unwrap();
            if finished.len() >= 9 {
                break finished;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let find = |name: &str, method: &str| -> Vec<SpanData> {
        spans
            .iter()
            .filter(|s| {
                s.name == name
                    && (attribute(s, "method").as_deref() == Some(method)
                        || attribute(s, "server").is_some() && method.is_empty())
            })
            .cloned()
            .collect()
    };
    let request = spans.iter().find(|s| s.name == "request").unwrap().clone();
    let [call_front, failed_call] = <[SpanData; 2]>::try_from(find("quicall.call", "otel.A/Front"))
        .unwrap_or_else(|s| panic!("{s:?}"));
    let (call_front, failed_call) = if attribute(&call_front, "status").as_deref() == Some("OK") {
        (call_front, failed_call)
    } else {
        (failed_call, call_front)
    };
    let attempts = find("quicall.attempt", "");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let serves = find("quicall.serve", "otel.A/Front");
    assert_eq!(serves.len(), 2, "{serves:?}");
    let serve_front = serves
        .iter()
        .find(|s| s.span_context.trace_id() == request.span_context.trace_id())
        .unwrap()
        .clone();
    let [call_leaf] = <[SpanData; 1]>::try_from(find("quicall.call", "otel.B/Leaf")).unwrap();
    let [serve_leaf] = <[SpanData; 1]>::try_from(find("quicall.serve", "otel.B/Leaf")).unwrap();

    // One trace, the program's, from its span to B's handler.
    let trace = request.span_context.trace_id();
    let attempt_front = attempts
        .iter()
        .find(|s| s.span_context.trace_id() == trace)
        .unwrap();
    for span in [
        &call_front,
        attempt_front,
        &serve_front,
        &call_leaf,
        &serve_leaf,
    ] {
        assert_eq!(span.span_context.trace_id(), trace, "{span:?}");
        assert_eq!(attribute(span, "status").as_deref(), Some("OK"), "{span:?}");
        assert_eq!(span.status, SpanStatus::Ok, "{span:?}");
    }
    // Parent links: request <- call <- attempt; call <- A's serve (the id
    // sent in traceparent) <- A's call <- B's serve.
    assert_eq!(request.parent_span_id, SpanId::INVALID);
    assert_eq!(call_front.parent_span_id, request.span_context.span_id());
    assert_eq!(
        attempt_front.parent_span_id,
        call_front.span_context.span_id()
    );
    assert_eq!(
        serve_front.parent_span_id,
        call_front.span_context.span_id()
    );
    assert!(serve_front.parent_span_is_remote);
    assert_eq!(call_leaf.parent_span_id, serve_front.span_context.span_id());
    assert_eq!(serve_leaf.parent_span_id, call_leaf.span_context.span_id());
    assert_eq!(
        (call_front.span_kind.clone(), serve_front.span_kind.clone()),
        (SpanKind::Client, SpanKind::Server)
    );
    assert_eq!(attribute(&serve_front, "peer").as_deref(), Some("alice"));
    // What went on the wire is what was exported.
    let sent = leaf_saw.lock().unwrap().clone().unwrap();
    assert_eq!(
        sent,
        format!("00-{}-{}-01", trace, call_leaf.span_context.span_id())
    );
    let parsed = TraceContext::parse(sent.as_bytes()).unwrap();
    assert_eq!(
        parsed.span_id().to_be_bytes(),
        call_leaf.span_context.span_id().to_bytes()
    );
    // The failed call: a trace of its own, its status an error on both sides.
    assert_ne!(failed_call.span_context.trace_id(), trace);
    assert_eq!(failed_call.parent_span_id, SpanId::INVALID);
    assert_eq!(
        attribute(&failed_call, "status").as_deref(),
        Some("NOT_FOUND")
    );
    assert!(matches!(failed_call.status, SpanStatus::Error { .. }));
    let failed_serve = serves
        .iter()
        .find(|s| s.span_context.trace_id() == failed_call.span_context.trace_id())
        .unwrap();
    assert_eq!(
        failed_serve.parent_span_id,
        failed_call.span_context.span_id()
    );

    // Metrics: A's and B's servers and the cluster recorded through the
    // global meter provider.
    otel.meter_provider().force_flush().unwrap();
    let exported = metrics.get_finished_metrics().unwrap();
    let count = |name: &str, key: &str, value: &str, code: Option<&str>| -> u64 {
        let mut total = 0;
        for resource in &exported {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data()
                    else {
                        panic!("{name} is not a histogram");
                    };
                    for point in histogram.data_points() {
                        let has = |k: &str, v: &str| {
                            point
                                .attributes()
                                .any(|kv| kv.key.as_str() == k && kv.value.as_str() == v)
                        };
                        if has(key, value) && code.is_none_or(|code| has("code", code)) {
                            total = point.count();
                        }
                    }
                }
            }
        }
        total
    };
    assert_eq!(
        count(
            "quicall.server.call.duration",
            "method",
            "otel.A/Front",
            Some("OK")
        ),
        1
    );
    assert_eq!(
        count(
            "quicall.server.call.duration",
            "method",
            "otel.A/Front",
            Some("NOT_FOUND")
        ),
        1
    );
    assert_eq!(
        count(
            "quicall.server.call.duration",
            "method",
            "otel.B/Leaf",
            Some("OK")
        ),
        1
    );
    assert_eq!(
        count(
            "quicall.client.call.duration",
            "method",
            "otel.A/Front",
            Some("OK")
        ),
        1
    );
    assert_eq!(
        count(
            "quicall.client.attempt.duration",
            "server",
            &a.local_addr().to_string(),
            Some("NOT_FOUND")
        ),
        1
    );
    // Messages: a request for each call of Front, a response only for the
    // one answered OK.
    let sum = |name: &str, method: &str| -> u64 {
        let mut total = 0;
        for resource in &exported {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
                        panic!("{name} is not a sum");
                    };
                    for point in sum.data_points() {
                        if point
                            .attributes()
                            .any(|kv| kv.key.as_str() == "method" && kv.value.as_str() == method)
                        {
                            total += point.value();
                        }
                    }
                }
            }
        }
        total
    };
    assert_eq!(sum("quicall.server.request.messages", "otel.A/Front"), 2);
    assert_eq!(sum("quicall.server.response.messages", "otel.A/Front"), 1);
    assert_eq!(sum("quicall.client.response.messages", "otel.A/Front"), 1);
    otel.shutdown().unwrap();
}
