//! Server-streaming calls over real QUIC: every message in order, a reader
//! that stops stopping the producer (QUIC flow control), a status after the
//! messages, cancellation by the caller reaching the producer, a deadline
//! that passes mid-stream, and the server back to its baseline after each.

mod common;

use std::time::Duration;

use common::{Pki, bounded, connect, serve, settles};
use quicall::rpc::stream;
use quicall::{CallOptions, Code, Limits, Method, Router, Status};
use zerocopy::little_endian::U64;

const COUNT: Method<U64, U64> = Method::new("test.Stream/Count").server_streaming();
const FAIL_AFTER: Method<U64, U64> = Method::new("test.Stream/FailAfter").server_streaming();
const FOREVER: Method<[u8], U64> = Method::new("test.Stream/Forever").server_streaming();
const UNARY: Method<[u8], [u8]> = Method::new("test.Stream/Unary");
const LARGE: Method<U64, [u8]> = Method::new("test.Stream/Large").server_streaming();

/// Size of each message of LARGE.
const KIB: usize = 1024;

fn router(ended: tokio::sync::mpsc::UnboundedSender<u64>) -> Router {
    Router::new()
        .route_server_stream(&COUNT, |_ctx, n| async move {
            let n = n.get();
            Ok::<_, Status>(stream::iter((0..n).map(|i| Ok::<_, Status>(U64::new(i)))))
        })
        .unwrap()
        .route_server_stream(&FAIL_AFTER, |_ctx, n| async move {
            let n = n.get();
            Ok::<_, Status>(stream::iter((0..=n).map(move |i| {
                if i < n {
                    Ok(U64::new(i))
                } else {
                    Err(Status::not_found(format!("nothing after {n}")))
                }
            })))
        })
        .unwrap()
        .route_server_stream(&FOREVER, move |_ctx, _req| {
            let ended = ended.clone();
            async move {
                // A producer task of its own, as real ones are: it learns
                // that the call ended when its send fails.
                let (sender, messages) = stream::channel(4);
                tokio::spawn(async move {
                    // Bounded by the caller's reading (and the test's
                    // deadlines): each send waits for room.
                    let mut sent = 0u64;
                    while sender.send(Ok::<_, Status>(U64::new(sent))).await.is_ok() {
                        sent += 1;
                    }
                    let _ = ended.send(sent);
                });
                Ok::<_, Status>(messages)
            }
        })
        .unwrap()
        .route(&UNARY, |_ctx, req| async move { Ok::<_, Status>(req) })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_delivers_every_message_in_order() {
    let pki = Pki::new();
    let (ended, _) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(&pki, router(ended));
    let client = connect(&pki, &server).await;
    let total = 200_000u64;
    let mut messages =
        bounded(client.server_stream(&COUNT, &U64::new(total), CallOptions::default()))
            .await
            .unwrap();
    let mut next = 0u64;
    bounded(async {
        while let Some(message) = messages.message().await.unwrap() {
            assert_eq!(message.get(), next);
            next += 1;
        }
    })
    .await;
    assert_eq!(next, total);
    // After the end: nothing more, and the server is back to its baseline.
    assert!(messages.message().await.unwrap().is_none());
    // An empty stream ends at once, OK.
    let mut empty = client
        .server_stream(&COUNT, &U64::new(0), CallOptions::default())
        .await
        .unwrap();
    assert!(bounded(empty.message()).await.unwrap().is_none());
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_stops_the_producer_and_everything_arrives_once_it_reads_again() {
    let pki = Pki::new();
    let (ended, _) = tokio::sync::mpsc::unbounded_channel();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let router = router(ended)
        .route_server_stream(&LARGE, move |_ctx, n| {
            let counter = counter.clone();
            async move {
                let n = n.get();
                let (sender, messages) = stream::channel(4);
                tokio::spawn(async move {
                    for i in 0..n {
                        let mut message = vec![0u8; KIB];
                        message[..8].copy_from_slice(&i.to_le_bytes());
                        if sender.send(Ok::<_, Status>(message)).await.is_err() {
                            break;
                        }
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
                Ok::<_, Status>(messages)
            }
        })
        .unwrap();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    // 20 MiB wanted: forty times the stream's receive window towards a
    // loopback server (512 KiB).
    let window = Limits::default().loopback_stream_receive_window;
    assert_eq!(window, 512 << 10);
    let total = 20 * 1024u64;
    let mut messages = client
        .server_stream(&LARGE, &U64::new(total), CallOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        bounded(messages.message()).await.unwrap().unwrap();
    }
    // The reader stops: the producer fills the window (as many messages as
    // the loopback window holds, not the network's 2 MiB)...
    let window = u64::from(window) / (KIB as u64 + 8);
    // ...and stops there, once the window, the server's one message in
    // hand and the channel's 4 are full.
    let stalled = common::held_at(&sent, 3 + window - 2).await;
    assert!(
        stalled <= 3 + window + 4 + 2,
        "{stalled} messages produced for a reader that took 3 (window {window})"
    );
    // What the server holds for the stream beyond QUIC's window: the
    // messages of one write (64 KiB and one message at most), waiting for
    // room (the reason the producer stopped).
    let held = server.gauges().buffered_response_bytes;
    assert!(
        held > 0 && held <= 64 * KIB + KIB + 8,
        "the server holds {held} bytes of responses for a stalled reader"
    );
    // Reading again: every message arrives, in order.
    let mut next = 3u64;
    bounded(async {
        while let Some(message) = messages.message().await.unwrap() {
            assert_eq!(message[..8], next.to_le_bytes());
            assert_eq!(message.len(), KIB);
            next += 1;
        }
    })
    .await;
    assert_eq!(next, total);
    settles(&server, 1).await;
    // Counted as messages (and bytes with their headers) in the metrics.
    let text = server.metrics_text();
    let line = |name: &str, value: u64| {
        format!("quicall_server_{name}_total{{method=\"test.Stream/Large\"}} {value}")
    };
    for wanted in [
        line("request_messages", 1),
        line("response_messages", total),
        line("response_bytes", total * (KIB as u64 + 8) + 8),
    ] {
        assert!(text.lines().any(|l| l == wanted), "no {wanted} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_the_stream_ends_the_call_after_the_messages_before_it() {
    let pki = Pki::new();
    let (ended, _) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(&pki, router(ended));
    let client = connect(&pki, &server).await;
    let mut messages = client
        .server_stream(&FAIL_AFTER, &U64::new(3), CallOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(bounded(messages.message()).await.unwrap().unwrap().get(), i);
    }
    let status = bounded(messages.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "nothing after 3");
    assert!(!status.was_not_processed());
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_response_limit_ends_the_stream_after_those_before_it() {
    const GROWING: Method<[u8], [u8]> = Method::new("test.Stream/Growing").server_streaming();
    let pki = Pki::new();
    let router = Router::new()
        .route_server_stream(&GROWING, |_ctx, _req| async move {
            let sizes = [100usize, 500, 1000, 1001, 10];
            Ok::<_, Status>(stream::iter(
                sizes.into_iter().map(|n| Ok::<_, Status>(vec![n as u8; n])),
            ))
        })
        .unwrap();
    let options = quicall::ServerOptions {
        max_response_size: 1000,
        ..quicall::ServerOptions::default()
    };
    let server = common::serve_with(&pki, router, options);
    let client = connect(&pki, &server).await;
    let mut messages = bounded(client.server_stream(&GROWING, "", CallOptions::default()))
        .await
        .unwrap();
    for n in [100usize, 500, 1000] {
        let message = bounded(messages.message()).await.unwrap().unwrap();
        assert_eq!(&*message, &vec![n as u8; n][..]);
    }
    let status = bounded(messages.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    assert!(status.message().contains("1001 bytes"), "{status}");
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_call_and_its_producer() {
    let pki = Pki::new();
    let (ended, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(&pki, router(ended));
    let client = connect(&pki, &server).await;
    let mut messages = client
        .server_stream(&FOREVER, "", CallOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(bounded(messages.message()).await.unwrap().unwrap().get(), i);
    }
    drop(messages);
    // The server drops the handler's stream: the producer's send fails.
    let sent = bounded(ended_rx.recv()).await.unwrap();
    assert!(sent >= 3, "{sent}");
    settles(&server, 1).await;
    // The other calls on the connection are unaffected.
    let echo = bounded(client.call(&UNARY, "still here")).await.unwrap();
    assert_eq!(&echo[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_mid_stream_ends_it_on_both_sides() {
    let pki = Pki::new();
    let (ended, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(&pki, router(ended));
    let client = connect(&pki, &server).await;
    let options = CallOptions::deadline(Duration::from_millis(500));
    let mut messages = client.server_stream(&FOREVER, "", options).await.unwrap();
    let mut got = 0;
    let status = bounded(async {
        loop {
            match messages.message().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("the stream ended well"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert!(got > 0);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    // The producer learns that the call ended.
    bounded(ended_rx.recv()).await.unwrap();
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_and_a_unary_call_are_not_confused() {
    let pki = Pki::new();
    let (ended, _) = tokio::sync::mpsc::unbounded_channel();
    let server = serve(&pki, router(ended));
    let client = connect(&pki, &server).await;
    const NOT_A_STREAM: Method<[u8], [u8]> = Method::new("test.Stream/Unary").server_streaming();
    // Streaming a unary method from the client: refused before sending.
    let refused = client
        .server_stream(&UNARY, "x", CallOptions::default())
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A server that answers a unary response to a stream's request: the
    // stream ends with the body taken as a malformed end, not a hang.
    let mut confused = client
        .server_stream(&NOT_A_STREAM, "x", CallOptions::default())
        .await
        .unwrap();
    let status = bounded(confused.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status}");
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_panics_ends_the_call_internal_after_the_messages_before_it() {
    const PANICS: Method<U64, U64> = Method::new("test.Stream/Panics").server_streaming();
    let pki = Pki::new();
    let (ended, _) = tokio::sync::mpsc::unbounded_channel();
    let router = router(ended)
        .route_server_stream(&PANICS, |_ctx, n| async move {
            let n = n.get();
            Ok::<_, Status>(stream::iter((0..=n).map(move |i| {
                assert!(i < n, "producer bug at message {i}");
                Ok::<_, Status>(U64::new(i))
            })))
        })
        .unwrap();
    let server = serve(&pki, router);
    let client = connect(&pki, &server).await;
    let mut messages = client
        .server_stream(&PANICS, &U64::new(3), CallOptions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    let status = bounded(async {
        loop {
            match messages.message().await {
                Ok(Some(message)) => got.push(message.get()),
                Ok(None) => panic!("a stream whose producer panicked ended well"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(
        (got, status.code()),
        (vec![0, 1, 2], Code::Internal),
        "{status}"
    );
    settles(&server, 1).await;
    let echo = bounded(client.call(&UNARY, "still here")).await.unwrap();
    assert_eq!(&echo[..], b"still here");
}
