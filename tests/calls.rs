//! Calls over real QUIC on loopback: errors become statuses, deadlines and
//! cancellation reach the handler, panics stay inside their call, and many
//! calls share a connection without waiting on each other.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Pki, bounded, connect, serve, serve_with};
use quicall::demo::{ADD, AddRequest, AddResponse, EACH, ECHO};
use quicall::{CallOptions, Code, Method, Router, ServerOptions, Status};
use tokio::sync::{Notify, oneshot};
use zerocopy::little_endian::I64;

const SLEEP: Method<[u8], [u8]> = Method::new("test.Slow/Sleep");
const PANIC: Method<[u8], [u8]> = Method::new("test.Bad/Panic");

fn add_request(a: i64, b: i64) -> AddRequest {
    AddRequest {
        a: I64::new(a),
        b: I64::new(b),
    }
}

/// Signals when dropped: observes from the handler side that its future was dropped.
struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A router whose SLEEP handler parks forever, announcing its start and, via
/// a drop guard, its cancellation.
fn sleeping_router(started: Arc<Notify>, dropped: oneshot::Sender<()>) -> Router {
    let dropped = std::sync::Mutex::new(Some(dropped));
    Router::new()
        .route(&SLEEP, move |ctx, _req| {
            let started = started.clone();
            let guard = DropSignal(dropped.lock().unwrap().take());
            async move {
                let _guard = guard;
                started.notify_one();
                ctx.cancelled().await;
                Ok::<_, Status>(bytes::Bytes::new())
            }
        })
        .unwrap()
}

#[tokio::test]
async fn unknown_method_is_reported() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    const MISSING: Method<[u8], [u8]> = Method::new("nobody.Home/Here");
    let status = bounded(client.call(&MISSING, "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::UnknownMethod, "{status}");
    assert!(status.was_not_processed());
}

#[tokio::test]
async fn body_shorter_than_request_type_is_invalid_argument() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    // Same id as ADD, but declared with a raw body: send 7 bytes for a 16-byte type.
    const SHORT_ADD: Method<[u8], [u8]> = Method::new("calc.Calc/Add");
    let status = bounded(client.call(&SHORT_ADD, &[1u8; 7][..]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("7 bytes"), "{status}");
    // The connection is still good.
    assert_eq!(
        bounded(client.call(&ADD, &add_request(2, 3)))
            .await
            .unwrap()
            .sum
            .get(),
        5
    );
}

#[tokio::test]
async fn oversized_request_is_refused_from_its_header() {
    let pki = Pki::new();
    let options = ServerOptions {
        max_request_size: 1024,
        ..ServerOptions::default()
    };
    let server = serve_with(&pki, quicall::demo::router(), options);
    let client = connect(&pki, &server).await;
    let big = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let status = bounded(client.call(&ECHO, big)).await.unwrap_err();
    // Not RESOURCE_EXHAUSTED: a retry can never succeed.
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.was_not_processed());
    assert!(status.message().contains("1048576"), "{status}");
    let ok = bounded(client.call(&ECHO, &[1u8; 1024][..])).await.unwrap();
    assert_eq!(ok.len(), 1024);
}

#[tokio::test]
async fn deadline_passing_in_handler_is_deadline_exceeded_and_cancels_it() {
    let pki = Pki::new();
    let started = Arc::new(Notify::new());
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let server = serve(&pki, sleeping_router(started.clone(), dropped_tx));
    let client = connect(&pki, &server).await;
    let status = bounded(client.call_with(
        &SLEEP,
        "",
        CallOptions::deadline(Duration::from_millis(200)),
    ))
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    bounded(dropped_rx)
        .await
        .expect("handler future was dropped");
}

#[tokio::test]
async fn dropping_the_call_cancels_the_handler() {
    let pki = Pki::new();
    let started = Arc::new(Notify::new());
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let server = serve(&pki, sleeping_router(started.clone(), dropped_tx));
    let client = connect(&pki, &server).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(&SLEEP, "").await }
    });
    bounded(started.notified()).await;
    call.abort();
    bounded(dropped_rx)
        .await
        .expect("handler future was dropped after the caller left");
    // Its admission slot is given back too.
    bounded(async {
        while server.calls_in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn handler_panic_is_internal_and_the_connection_lives_on() {
    let pki = Pki::new();
    let router = quicall::demo::router()
        .route(&PANIC, |_ctx, _req| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, Status>(bytes::Bytes::new())
        })
        .unwrap();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    let status = bounded(client.call(&PANIC, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    for i in 0..10 {
        let sum = bounded(client.call(&ADD, &add_request(i, i)))
            .await
            .unwrap();
        assert_eq!(sum.sum.get(), 2 * i);
    }
}

/// An interceptor that panics in `before` itself (before it makes its
/// future) for BEFORE, and in `after` for AFTER.
struct Panicky;

const BEFORE: Method<[u8], [u8]> = Method::new("test.Bad/Before");
const AFTER: Method<[u8], [u8]> = Method::new("test.Bad/After");
const EARLY: Method<[u8], [u8]> = Method::new("test.Bad/Early");
const GUARDED: Method<[u8], [u8]> = Method::new("test.Bad/Guarded");

impl quicall::Interceptor for Panicky {
    fn before(&self, ctx: quicall::Context) -> quicall::rpc::InterceptFuture {
        assert_ne!(
            ctx.method(),
            BEFORE.name(),
            "interceptor bug before its future"
        );
        Box::pin(async move { Ok(ctx) })
    }

    fn after(&self, outcome: &quicall::Outcome<'_>) {
        assert_ne!(
            outcome.method,
            AFTER.name(),
            "interceptor bug after the call"
        );
    }
}

#[tokio::test]
async fn code_of_its_user_that_panics_outside_a_handlers_future_fails_only_its_call() {
    let pki = Pki::new();
    let router = quicall::demo::router()
        .intercept(Panicky)
        .route(&EARLY, |_ctx, request| {
            // The closure panics before it makes its future.
            assert!(!request.is_empty(), "handler bug before its future");
            async move { Ok::<_, Status>(bytes::Bytes::new()) }
        })
        .unwrap()
        .route(
            &BEFORE,
            |_ctx, request| async move { Ok::<_, Status>(request) },
        )
        .unwrap()
        .route(
            &AFTER,
            |_ctx, request| async move { Ok::<_, Status>(request) },
        )
        .unwrap()
        .route(
            &GUARDED,
            |_ctx, request| async move { Ok::<_, Status>(request) },
        )
        .unwrap()
        .method_access(
            &GUARDED,
            quicall::Access::custom(|_peer, method| panic!("access policy bug for {method}")),
        )
        .unwrap();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    for _ in 0..3 {
        // A handler that panics before its future, and an interceptor that
        // panics in `before`: the call fails with INTERNAL.
        for method in [&EARLY, &BEFORE] {
            let status = bounded(client.call(method, "")).await.unwrap_err();
            assert_eq!(status.code(), Code::Internal, "{}: {status}", method.name());
            assert!(status.message().contains("panicked"), "{status}");
        }
        // One that panics in `after`, which only observes: the answer
        // stands.
        let echo = bounded(client.call(&AFTER, "answered")).await.unwrap();
        assert_eq!(&echo[..], b"answered");
        // An access predicate that panics denies.
        let status = bounded(client.call(&GUARDED, "x")).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status}");
        // The handler that needs a body answers once it has one.
        assert!(bounded(client.call(&EARLY, "x")).await.unwrap().is_empty());
    }
    // Other calls on the connection go on; the server holds nothing.
    let sum = bounded(client.call(&ADD, &add_request(2, 3)))
        .await
        .unwrap();
    assert_eq!(sum.sum.get(), 5);
    common::settles(&server, 1).await;
}

#[tokio::test]
async fn a_thousand_concurrent_calls_on_one_connection() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1000i64 {
        let client = client.clone();
        calls.spawn(async move {
            let reply = client.call(&ADD, &add_request(i, 1000 * i)).await?;
            Ok::<_, Status>((i, reply.sum.get()))
        });
    }
    let mut seen = 0;
    bounded(async {
        while let Some(result) = calls.join_next().await {
            let (i, sum) = result.unwrap().unwrap();
            assert_eq!(sum, 1001 * i);
            seen += 1;
        }
    })
    .await;
    assert_eq!(seen, 1000);
}

#[tokio::test]
async fn slow_call_does_not_hold_up_others() {
    let pki = Pki::new();
    let started = Arc::new(Notify::new());
    let (dropped_tx, _dropped_rx) = oneshot::channel();
    let router = sleeping_router(started.clone(), dropped_tx)
        .route(&ADD, quicall::demo::add)
        .unwrap();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call(&SLEEP, "").await }
    });
    bounded(started.notified()).await;
    // The slow call is parked in its handler; others on the same connection finish.
    for i in 0..20 {
        assert_eq!(
            bounded(client.call(&ADD, &add_request(i, 1)))
                .await
                .unwrap()
                .sum
                .get(),
            i + 1
        );
    }
    assert!(!slow.is_finished());
    slow.abort();
}

#[tokio::test]
async fn calls_in_flight_limit_answers_resource_exhausted() {
    let pki = Pki::new();
    let started = Arc::new(Notify::new());
    let (dropped_tx, _dropped_rx) = oneshot::channel();
    let router = sleeping_router(started.clone(), dropped_tx)
        .route(&ADD, quicall::demo::add)
        .unwrap();
    let options = ServerOptions {
        max_calls_in_flight: 1,
        ..ServerOptions::default()
    };
    let server = serve_with(&pki, router, options);
    let client = connect(&pki, &server).await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.call(&SLEEP, "").await }
    });
    bounded(started.notified()).await;
    let status = bounded(client.call(&ADD, &add_request(1, 1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.was_not_processed() && status.is_retry_safe(false));
    slow.abort();
}

#[tokio::test]
async fn handler_statuses_and_overflow_reach_the_caller() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    let status = bounded(client.call(&ADD, &add_request(i64::MAX, 1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    assert!(!status.was_not_processed());
}

#[tokio::test]
async fn echo_returns_large_payloads_intact() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let reply = bounded(client.call(&ECHO, bytes::Bytes::from(payload.clone())))
        .await
        .unwrap();
    assert_eq!(&*reply, &payload[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_echoes_each_message_of_a_bidirectional_call() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    let (mut sink, mut echoes) = bounded(client.bidi_stream(&EACH, CallOptions::default()))
        .await
        .unwrap();
    for n in 0..1000u32 {
        let message = vec![(n % 251) as u8; (n % 700) as usize];
        bounded(sink.send(message.clone())).await.unwrap();
        if n % 10 == 9 {
            // Read behind the writes: several are in flight at once.
            for m in n - 9..=n {
                let echo = bounded(echoes.message()).await.unwrap().unwrap();
                assert_eq!(&*echo, &vec![(m % 251) as u8; (m % 700) as usize][..]);
            }
        }
    }
    sink.finish();
    assert!(bounded(echoes.message()).await.unwrap().is_none());
    common::settles(&server, 1).await;
}

#[tokio::test]
async fn duplicate_method_id_is_an_error_at_registration() {
    const ALSO_ADD: Method<AddRequest, AddResponse> = Method::new("calc.Calc/Add");
    let err = quicall::demo::router()
        .route(&ALSO_ADD, quicall::demo::add)
        .unwrap_err();
    assert!(err.to_string().contains("calc.Calc/Add"), "{err}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_calls_in_flight_and_refuses_new_ones() {
    let pki = Pki::new();
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let router = Router::new()
        .route(&SLEEP, {
            let finished = finished.clone();
            let started = started.clone();
            move |_ctx, _req| {
                let finished = finished.clone();
                let started = started.clone();
                async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Status>("done")
                }
            }
        })
        .unwrap();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(&SLEEP, "").await }
    });
    bounded(started.notified()).await;
    let report = bounded(server.shutdown(Duration::from_secs(10))).await;
    assert_eq!(report.unfinished_calls, 0);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    let reply = bounded(call).await.unwrap().unwrap();
    assert_eq!(&*reply, b"done");
    let status = bounded(client.call(&SLEEP, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
}

/// Generic over anything that makes calls.
async fn sum_of(caller: &impl quicall::Caller, a: i64, b: i64) -> Result<i64, Status> {
    let request = AddRequest {
        a: I64::new(a),
        b: I64::new(b),
    };
    Ok(caller.call(&ADD, &request).await?.sum.get())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_generic_caller_works_over_a_client_and_a_cluster() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let client = connect(&pki, &server).await;
    assert_eq!(bounded(sum_of(&client, 2, 3)).await.unwrap(), 5);
    let cluster = common::cluster_of(&pki, &[&server], quicall::ClusterOptions::default()).await;
    assert_eq!(bounded(sum_of(&cluster, 20, 3)).await.unwrap(), 23);
    // The futures are Send: they can be spawned.
    let handle = tokio::spawn(async move { sum_of(&cluster, 1, 1).await });
    assert_eq!(bounded(handle).await.unwrap().unwrap(), 2);
}
