//! Tracing across services: a caller's trace continues through server A,
//! the call A's handler makes, and server B; the `tracing` spans of all
//! of them share one trace id with the right parent links.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, bounded, connect, serve};
use quicall::rpc::TraceContext;
use quicall::{Context, Method, Router, Status};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

type Fields = HashMap<String, String>;

/// Keeps every closed `quicall.*` span's fields, in memory, with an `id`
/// unique to the span and its `parent`'s (when that is a `quicall.*` span).
#[derive(Clone, Default)]
struct Capture {
    open: Arc<Mutex<HashMap<u64, (String, Fields)>>>,
    closed: Arc<Mutex<Vec<(String, Fields)>>>,
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl<S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>> Layer<S>
    for Capture
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let name = attrs.metadata().name();
        if name.starts_with("quicall.") {
            let mut fields = Fields::new();
            attrs.record(&mut Visitor(&mut fields));
            // The subscriber reuses a closed span's `Id` for a later span:
            // each captured span gets an id of its own, and its parent's.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            fields.insert("id".into(), unique.to_string());
            let mut open = self.open.lock().unwrap();
            let parent = ctx.span(id).and_then(|span| span.parent());
            if let Some((_, parent)) = parent.and_then(|p| open.get(&p.id().into_u64())) {
                let parent = parent["id"].clone();
                fields.insert("parent".into(), parent);
            }
            open.insert(id.into_u64(), (name.to_owned(), fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        if let Some((_, fields)) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_close(&self, id: Id, _: LayerContext<'_, S>) {
        if let Some(span) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(span);
        }
    }
}

const FRONT: Method<[u8], [u8]> = Method::new("test.A/Front");
const LEAF: Method<[u8], [u8]> = Method::new("test.B/Leaf");

/// One capture for the process (a global subscriber is set once).
fn capture() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let subscriber = Registry::default()
                .with(capture.clone())
                .with(tracing_subscriber::filter::LevelFilter::DEBUG);
            tracing::subscriber::set_global_default(subscriber).unwrap();
            capture
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_continues_through_two_services() {
    let capture = capture();

    let pki = Pki::new();
    let leaf_saw: Arc<Mutex<Option<TraceContext>>> = Arc::default();
    let saw = leaf_saw.clone();
    let b = serve(
        &pki,
        Router::new()
            .route(&LEAF, move |_ctx: Context, _req| {
                if let Some(trace) = TraceContext::current() {
                    *saw.lock().unwrap() = Some(trace);
                }
                async { Ok::<_, Status>("leaf") }
            })
            .unwrap(),
    );
    let to_b = connect(&pki, &b).await;
    let a = serve(
        &pki,
        Router::new()
            .route(&FRONT, move |_ctx: Context, _req| {
                let to_b = to_b.clone();
                async move {
                    // A call made while serving: a child of this call's span.
                    let leaf = to_b.call(&LEAF, "").await?;
                    Ok::<_, Status>(format!("front+{}", String::from_utf8_lossy(&leaf)))
                }
            })
            .unwrap(),
    );
    let to_a = connect(&pki, &a).await;

    let root = TraceContext::root();
    let reply = bounded(root.scope(to_a.call(&FRONT, ""))).await.unwrap();
    assert_eq!(&reply[..], b"front+leaf");
    // And a call outside any trace sends none.
    bounded(to_a.call(&FRONT, "")).await.unwrap();

    // The servers' spans close once their answers are sent.
    let spans = bounded(async {
        loop {
            let spans = capture.closed.lock().unwrap().clone();
            let traced: Vec<_> = spans
                .into_iter()
                .filter(|(_, f)| f.get("trace_id").is_some())
                .collect();
            if traced.len() >= 4 {
                break traced;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let find = |name: &str, method: &str| -> Fields {
        let found: Vec<_> = spans
            .iter()
            .filter(|(n, f)| n == name && f.get("method").map(String::as_str) == Some(method))
            .collect();
        assert_eq!(found.len(), 1, "{name} {method}: {spans:?}");
        found[0].1.clone()
    };
    let call_front = find("quicall.call", "test.A/Front");
    let serve_front = find("quicall.serve", "test.A/Front");
    let call_leaf = find("quicall.call", "test.B/Leaf");
    let serve_leaf = find("quicall.serve", "test.B/Leaf");
    let trace_id = format!("{:032x}", root.trace_id());
    for span in [&call_front, &serve_front, &call_leaf, &serve_leaf] {
        assert_eq!(span["trace_id"], trace_id, "{span:?}");
        assert_eq!(span["status"], "OK", "{span:?}");
        assert!(span.contains_key("latency_us"), "{span:?}");
    }
    assert_eq!(call_front["parent_id"], format!("{:016x}", root.span_id()));
    assert_eq!(serve_front["parent_id"], call_front["span_id"]);
    assert_eq!(call_leaf["parent_id"], serve_front["span_id"]);
    assert_eq!(serve_leaf["parent_id"], call_leaf["span_id"]);
    assert_eq!(serve_front["peer"], "alice");
    // B's handler ran inside its span of the trace.
    let leaf_trace = leaf_saw.lock().unwrap().unwrap();
    assert_eq!(
        format!("{:016x}", leaf_trace.span_id()),
        serve_leaf["span_id"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_cluster_call_has_a_span_per_attempt_inside_its_own() {
    const HEDGED: Method<[u8], [u8]> = Method::new("test.Hedge/Slow")
        .idempotent()
        .hedged(quicall::Hedge::After(Duration::from_millis(20)));
    let capture = capture();
    let pki = Pki::new();
    let servers: Vec<_> = (0..2)
        .map(|i| {
            serve(
                &pki,
                Router::new()
                    .route(&HEDGED, move |_ctx: Context, _req| async move {
                        if i == 0 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        Ok::<_, Status>(format!("server {i}"))
                    })
                    .unwrap(),
            )
        })
        .collect();
    let options = quicall::ClusterOptions {
        policy: quicall::Policy::RoundRobin,
        ..quicall::ClusterOptions::default()
    };
    let cluster = common::cluster_of(&pki, &[&servers[0], &servers[1]], options).await;
    // Calls until one had two attempts (the first on the slow server,
    // hedged to the other), both spans inside the call's span, the winner
    // OK. Round robin skips a server whose connection is not up yet, so on
    // a busy machine the first calls may all go to the fast one.
    let found = bounded(async {
        loop {
            let reply = cluster.call(&HEDGED, "").await.unwrap();
            assert_eq!(&reply[..], b"server 1");
            let spans = capture.closed.lock().unwrap().clone();
            let calls: Vec<_> = spans
                .iter()
                .filter(|(n, f)| n == "quicall.call" && f["method"] == "test.Hedge/Slow")
                .collect();
            let hedged = calls.iter().find(|(_, call)| {
                let attempts: Vec<_> = spans
                    .iter()
                    .filter(|(n, f)| n == "quicall.attempt" && f.get("parent") == Some(&call["id"]))
                    .collect();
                attempts.len() == 2
                    && attempts
                        .iter()
                        .any(|(_, a)| a.get("status").map(String::as_str) == Some("OK"))
            });
            if let Some((_, call)) = hedged {
                break call.clone();
            }
        }
    })
    .await;
    assert_eq!(found["status"], "OK");
}
