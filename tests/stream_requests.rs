//! Client-streaming and bidirectional calls over real QUIC: every message
//! in order each way, interleaved, a handler that stops reading (its
//! caller held to the stream window), a handler that answers early, a caller
//! that goes away, hostile framing on a raw stream (lying lengths, garbage
//! between messages, a message over the limit), and the server back to its
//! baseline after each.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Pki, bounded, connect, settles};
use quicall::transport::{ClientEndpoint, Connection};
use quicall::wire::{RequestHead, ResponseFlags, decode_response, message_header};
use quicall::{CallOptions, Code, Limits, Method, Router, Server, ServerOptions, Status, stream};
use zerocopy::little_endian::U64;

const SUM: Method<U64, U64> = Method::new("test.Up/Sum").client_streaming();
const FIRST: Method<U64, U64> = Method::new("test.Up/First").client_streaming();
const ECHO: Method<U64, U64> = Method::new("test.Both/Echo").bidi_streaming();
const BYTES: Method<[u8], U64> = Method::new("test.Up/Bytes").client_streaming();
const BYTES_ECHO: Method<[u8], [u8]> = Method::new("test.Both/Bytes").bidi_streaming();
const STALL: Method<U64, U64> = Method::new("test.Up/Stall").client_streaming();
const HOLD: Method<U64, U64> = Method::new("test.Up/Hold").client_streaming();
const UNARY: Method<[u8], [u8]> = Method::new("test.Up/Unary");

/// Lets the STALL handler read on.
static RESUME: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Lets the HOLD handler read on.
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The server's largest request (and so request message).
const MAX_REQUEST: u32 = 64 * 1024;

/// Tells the test how a handler ended: the requests it read, or the code
/// that ended its stream; CANCELLED if it was dropped (the caller went
/// away while it ran).
struct Report(Option<tokio::sync::mpsc::UnboundedSender<Result<u64, Code>>>);

impl Report {
    fn send(mut self, outcome: Result<u64, Code>) {
        if let Some(to) = self.0.take() {
            let _ = to.send(outcome);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(to) = self.0.take() {
            let _ = to.send(Err(Code::Cancelled));
        }
    }
}

fn router(
    ended: tokio::sync::mpsc::UnboundedSender<Result<u64, Code>>,
    read: Arc<AtomicU64>,
) -> Router {
    let on_sum = ended.clone();
    Router::new()
        .route_client_stream(&SUM, move |_ctx, mut numbers| {
            let report = Report(Some(on_sum.clone()));
            let read = read.clone();
            async move {
                let mut sum = 0u64;
                let outcome = loop {
                    match numbers.message().await {
                        Ok(Some(n)) => {
                            sum += n.get();
                            read.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(None) => break Ok(numbers.count()),
                        Err(status) => break Err(status),
                    }
                };
                report.send(outcome.as_ref().copied().map_err(Status::code));
                outcome?;
                Ok::<_, Status>(U64::new(sum))
            }
        })
        .unwrap()
        // Answers after the first request, reading no more.
        .route_client_stream(&FIRST, |_ctx, mut numbers| async move {
            match numbers.message().await? {
                Some(n) if n.get() == 0 => Err(Status::failed_precondition("zero first")),
                Some(n) => Ok(U64::new(n.get())),
                None => Err(Status::invalid_argument("no request")),
            }
        })
        .unwrap()
        .route_client_stream(&BYTES, |_ctx, mut chunks| async move {
            let mut total = 0u64;
            while let Some(chunk) = chunks.message().await? {
                total += chunk.len() as u64;
            }
            Ok::<_, Status>(U64::new(total))
        })
        .unwrap()
        .route_bidi_stream(&ECHO, move |_ctx, mut requests| {
            let report = Report(Some(ended.clone()));
            async move {
                let (replies, out) = stream::channel(16);
                tokio::spawn(async move {
                    let outcome = loop {
                        match requests.message().await {
                            Ok(Some(n)) => {
                                if replies.send(Ok(U64::new(n.get()))).await.is_err() {
                                    break Err(Code::Cancelled);
                                }
                            }
                            Ok(None) => break Ok(requests.count()),
                            Err(status) => {
                                let code = status.code();
                                let _ = replies.send(Err(status)).await;
                                break Err(code);
                            }
                        }
                    };
                    report.send(outcome);
                });
                Ok::<_, Status>(out)
            }
        })
        .unwrap()
        // Reads one request, then no more until the test says so: the
        // caller's writes wait once the windows are full.
        .route_client_stream(&STALL, |_ctx, mut numbers| async move {
            numbers.message().await?;
            RESUME.notified().await;
            let mut sum = 0;
            while let Some(n) = numbers.message().await? {
                sum += n.get();
            }
            Ok::<_, Status>(U64::new(sum))
        })
        .unwrap()
        // The same, for the test of the request window alone.
        .route_client_stream(&HOLD, |_ctx, mut numbers| async move {
            let mut sum = numbers.message().await?.map_or(0, |n| n.get());
            RELEASE.notified().await;
            while let Some(n) = numbers.message().await? {
                sum += n.get();
            }
            Ok::<_, Status>(U64::new(sum))
        })
        .unwrap()
        .route_bidi_stream(&BYTES_ECHO, |_ctx, requests| async move {
            Ok::<_, Status>(requests)
        })
        .unwrap()
        .route(&UNARY, |_ctx, req| async move { Ok::<_, Status>(req) })
        .unwrap()
}

fn options() -> ServerOptions {
    ServerOptions {
        max_request_size: MAX_REQUEST,
        ..ServerOptions::default()
    }
}

type Ended = tokio::sync::mpsc::UnboundedReceiver<Result<u64, Code>>;

/// A server of the test's methods; how its handlers ended, and how many
/// requests its SUM handlers have read.
fn start(pki: &Pki) -> (Server, Ended, Arc<AtomicU64>) {
    let (ended, outcomes) = tokio::sync::mpsc::unbounded_channel();
    let read = Arc::new(AtomicU64::new(0));
    let server = common::serve_with(pki, router(ended, read.clone()), options());
    (server, outcomes, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_delivers_every_request_and_gets_one_answer() {
    let pki = Pki::new();
    let (server, mut ended, _) = start(&pki);
    let client = connect(&pki, &server).await;
    let total = 100_000u64;
    let mut call = bounded(client.client_stream(&SUM, CallOptions::default()))
        .await
        .unwrap();
    bounded(async {
        for n in 0..total {
            call.send(&U64::new(n)).await.unwrap();
        }
    })
    .await;
    assert_eq!(call.count(), total);
    let answer = bounded(call.finish()).await.unwrap();
    assert_eq!(answer.message.get(), total * (total - 1) / 2);
    assert_eq!(bounded(ended.recv()).await, Some(Ok(total)));

    // No request at all is a stream too.
    let call = client
        .client_stream(&SUM, CallOptions::default())
        .await
        .unwrap();
    assert_eq!(bounded(call.finish()).await.unwrap().message.get(), 0);
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_messages_each_way_on_one_bidirectional_call() {
    let pki = Pki::new();
    let (server, mut ended, _) = start(&pki);
    let client = connect(&pki, &server).await;
    let total = 1_000_000u64;
    // Longer than the default 30 s: an unoptimized build on a busy machine
    // may take a while.
    let options = CallOptions::deadline(Duration::from_secs(290));
    let (mut sink, mut replies) = bounded(client.bidi_stream(&ECHO, options)).await.unwrap();
    let began = std::time::Instant::now();
    // Both directions at once: the writer in a task, the reader here.
    let writer = tokio::spawn(async move {
        for n in 0..total {
            sink.send(&U64::new(n)).await?;
        }
        sink.finish();
        Ok::<_, Status>(sink.count())
    });
    let mut next = 0u64;
    let read = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(n) = replies.message().await.unwrap() {
            assert_eq!(n.get(), next, "out of order");
            next += 1;
        }
    })
    .await;
    assert!(read.is_ok(), "stopped after {next} replies");
    eprintln!("{total} messages each way in {:?}", began.elapsed());
    assert_eq!(next, total);
    assert_eq!(writer.await.unwrap().unwrap(), total);
    assert_eq!(bounded(ended.recv()).await, Some(Ok(total)));
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_call_interleaves_one_for_one() {
    let pki = Pki::new();
    let (server, mut ended, _) = start(&pki);
    let client = connect(&pki, &server).await;
    let (mut sink, mut replies) = client
        .bidi_stream(&ECHO, CallOptions::default())
        .await
        .unwrap();
    // Each reply arrives before the next request is sent: nothing waits
    // for the end of the requests.
    bounded(async {
        for n in 0..1000u64 {
            sink.send(&U64::new(n * 7)).await.unwrap();
            assert_eq!(replies.message().await.unwrap().unwrap().get(), n * 7);
        }
    })
    .await;
    sink.finish();
    assert!(bounded(replies.message()).await.unwrap().is_none());
    assert_eq!(bounded(ended.recv()).await, Some(Ok(1000)));
    settles(&server, 1).await;
}

/// The `i`th request of the mixed-size run: short ones (copied into a
/// batch) and long ones (sent apart, uncopied) in an irregular order, each
/// marked with its number.
fn mixed(i: u32) -> bytes::Bytes {
    let len = match i % 7 {
        0 => 4,
        3 => 5000,
        5 => 2048,
        _ => 4 + (i as usize * 31) % 600,
    };
    let mut bytes = vec![(i % 251) as u8; len];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_sends_requests_ready_together_in_order() {
    let pki = Pki::new();
    let (server, mut ended, _) = start(&pki);
    let client = connect(&pki, &server).await;

    // Requests all ready at once, short and long mixed: every one arrives,
    // whole and in order.
    let total = 20_000u32;
    let (mut sink, mut echoes) = bounded(client.bidi_stream(&BYTES_ECHO, CallOptions::default()))
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let sent = sink.send_all(stream::iter((0..total).map(mixed))).await?;
        sink.finish();
        Ok::<_, Status>((sent, sink.count()))
    });
    let mut next = 0u32;
    bounded(async {
        while let Some(echo) = echoes.message().await.unwrap() {
            assert_eq!(&echo[..], &mixed(next)[..], "request {next}");
            next += 1;
        }
    })
    .await;
    assert_eq!(next, total);
    let sent = u64::from(total);
    assert_eq!(bounded(writer).await.unwrap().unwrap(), (sent, sent));

    // A stream that waits: what it yielded is sent before the wait (each
    // request here is sent only after the echo of the one before, which a
    // sender waiting for a fuller batch would never see).
    let (mut sink, mut replies) = bounded(client.bidi_stream(&ECHO, CallOptions::default()))
        .await
        .unwrap();
    let (requests, outgoing) = stream::channel(1);
    let writer = tokio::spawn(async move {
        let sent = sink.send_all(outgoing).await?;
        // More requests after the first stream: the sink is still open.
        sink.send(&U64::new(999)).await?;
        sink.finish();
        Ok::<_, Status>(sent)
    });
    bounded(async {
        for n in 0..500u64 {
            requests.send(U64::new(n * 3)).await.unwrap();
            assert_eq!(replies.message().await.unwrap().unwrap().get(), n * 3);
        }
    })
    .await;
    drop(requests);
    assert_eq!(bounded(writer).await.unwrap().unwrap(), 500);
    assert_eq!(
        bounded(replies.message()).await.unwrap().unwrap().get(),
        999
    );
    assert!(bounded(replies.message()).await.unwrap().is_none());
    assert_eq!(bounded(ended.recv()).await, Some(Ok(501)));

    // After finish, send_all fails without sending.
    let (mut sink, _replies) = bounded(client.bidi_stream(&ECHO, CallOptions::default()))
        .await
        .unwrap();
    sink.finish();
    let status = bounded(sink.send_all(stream::iter([U64::new(1)].into_iter())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert_eq!(bounded(ended.recv()).await, Some(Ok(0)));

    // A handler that answers at its first request: send_all on a client
    // stream fails with that answer, which finish() returns too.
    let mut call = bounded(client.client_stream(&FIRST, CallOptions::default()))
        .await
        .unwrap();
    let status = bounded(call.send_all(stream::iter((0..200_000u64).map(|_| U64::new(0)))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    assert!(call.count() >= 1);
    assert_eq!(
        bounded(call.finish()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_dropped_mid_write_resets_the_requests_instead_of_cutting_a_message() {
    let pki = Pki::new();
    let (server, _ended, _) = start(&pki);
    let client = connect(&pki, &server).await;
    let mut call = bounded(client.client_stream(&STALL, CallOptions::default()))
        .await
        .unwrap();
    // Requests until the windows are full: the last write waits (part of
    // its batch may be on the stream already) and is dropped there.
    let endless = stream::iter((0..u64::MAX).map(U64::new));
    let dropped = tokio::time::timeout(Duration::from_secs(3), call.send_all(endless)).await;
    assert!(dropped.is_err(), "send_all ended: {dropped:?}");
    assert!(call.count() > 0);
    // What is sent next would be read as the rest of a cut message: the
    // requests are reset instead, and the send says why.
    let status = bounded(call.send(&U64::new(1))).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status}");
    assert!(status.message().contains("dropped"), "{status}");
    // The handler, reading on, finds the requests reset (not a message
    // cut short, which would be INVALID_ARGUMENT or a protocol error).
    RESUME.notify_one();
    let answer = bounded(call.finish()).await.unwrap_err();
    assert_eq!(answer.code(), Code::Cancelled, "{answer}");

    // The same through a bidirectional call's sink, whose finish() resets.
    let (mut sink, _replies) = bounded(client.bidi_stream(&ECHO, CallOptions::default()))
        .await
        .unwrap();
    let endless = stream::iter((0..u64::MAX).map(U64::new));
    let dropped = tokio::time::timeout(Duration::from_secs(3), sink.send_all(endless)).await;
    assert!(dropped.is_err(), "send_all ended: {dropped:?}");
    sink.finish();
    let status = bounded(sink.send(&U64::new(1))).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_stops_reading_holds_the_caller_to_the_stream_window() {
    let pki = Pki::new();
    let (server, _ended, _) = start(&pki);
    let client = connect(&pki, &server).await;
    // The server's window for each stream of a loopback client.
    let window = u64::from(Limits::default().loopback_stream_receive_window);
    assert_eq!(window, 512 << 10);
    // Each request is 16 bytes on the stream (8 of header, 8 of body);
    // four windows of them.
    let in_window = window / 16;
    let total = 4 * in_window;
    let mut call = bounded(client.client_stream(&HOLD, CallOptions::default()))
        .await
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        for n in 0..total {
            call.send(&U64::new(n)).await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
        }
        call
    });
    // The handler read one request (and the packet it came in) and stops:
    // the caller's sends fill the window and go no further. Credit for what
    // the handler read goes out once it is an eighth of the window (64 KiB,
    // 4,096 requests); less was read (a packet), so the caller holds to the
    // window as first given, less the stream's first bytes (its request
    // head).
    let stalled = common::held_at(&sent, in_window - 8).await;
    assert!(
        stalled <= in_window,
        "{stalled} requests sent to a handler that read one (the window holds {in_window})"
    );
    // Reading again: every request arrives.
    RELEASE.notify_one();
    let call = bounded(sender).await.unwrap();
    assert_eq!(call.count(), total);
    let answer = bounded(call.finish()).await.unwrap();
    assert_eq!(answer.message.get(), total * (total - 1) / 2);
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_answers_early_stops_the_requests_and_the_caller_gets_its_answer() {
    let pki = Pki::new();
    let (server, _ended, _) = start(&pki);
    let client = connect(&pki, &server).await;

    // OK after the first request: the rest are refused, finish() has the
    // answer.
    let mut call = client
        .client_stream(&FIRST, CallOptions::default())
        .await
        .unwrap();
    let refused = bounded(async {
        for n in 1..=100_000u64 {
            if let Err(status) = call.send(&U64::new(n)).await {
                return (n, status);
            }
        }
        panic!("every request was taken by a handler that reads one");
    })
    .await;
    assert_eq!(refused.1.code(), Code::Cancelled, "{}", refused.1);
    assert!(refused.0 > 1);
    assert_eq!(bounded(call.finish()).await.unwrap().message.get(), 1);

    // An error after the first request: the next send fails with it.
    let mut call = client
        .client_stream(&FIRST, CallOptions::default())
        .await
        .unwrap();
    let status = bounded(async {
        for _ in 0..100_000 {
            if let Err(status) = call.send(&U64::new(0)).await {
                return status;
            }
        }
        panic!("no refusal");
    })
    .await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        bounded(call.finish()).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    settles(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_mid_stream_ends_the_handler() {
    let pki = Pki::new();
    let (server, mut ended, read) = start(&pki);
    let client = connect(&pki, &server).await;

    // The call dropped without finish, once its handler has read what was
    // sent (dropped sooner, the server may never see more than a reset).
    let mut call = client
        .client_stream(&SUM, CallOptions::default())
        .await
        .unwrap();
    for n in 0..10u64 {
        call.send(&U64::new(n)).await.unwrap();
    }
    bounded(async {
        while read.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    drop(call);
    assert_eq!(bounded(ended.recv()).await, Some(Err(Code::Cancelled)));

    // Both halves of a bidirectional call dropped.
    let (mut sink, mut replies) = client
        .bidi_stream(&ECHO, CallOptions::default())
        .await
        .unwrap();
    sink.send(&U64::new(1)).await.unwrap();
    assert_eq!(bounded(replies.message()).await.unwrap().unwrap().get(), 1);
    drop(replies);
    drop(sink);
    assert!(bounded(ended.recv()).await.unwrap().is_err());

    // A deadline that passes while the caller sends nothing.
    let mut call = client
        .client_stream(&SUM, CallOptions::deadline(Duration::from_millis(300)))
        .await
        .unwrap();
    call.send(&U64::new(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = bounded(call.finish()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        bounded(ended.recv()).await.unwrap().unwrap_err(),
        Code::DeadlineExceeded
    );
    settles(&server, 1).await;

    // The connection lost mid-stream: the handler ends, the server settles.
    let (mut sink, mut replies) = client
        .bidi_stream(&ECHO, CallOptions::default())
        .await
        .unwrap();
    sink.send(&U64::new(1)).await.unwrap();
    assert_eq!(bounded(replies.message()).await.unwrap().unwrap().get(), 1);
    client.close();
    assert!(bounded(ended.recv()).await.unwrap().is_err());
    settles(&server, 0).await;
}

#[tokio::test]
async fn shapes_must_match_on_both_sides() {
    let pki = Pki::new();
    let (server, _ended, _) = start(&pki);
    let client = connect(&pki, &server).await;
    // Refused before anything is sent.
    let status = client
        .client_stream(&ECHO, CallOptions::default())
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.was_not_processed());
    // A method declared unary here but streaming there: the server refuses
    // the mismatch from the header.
    const UNARY_AS_STREAM: Method<[u8], [u8]> = Method::new("test.Up/Unary").client_streaming();
    let call = client
        .client_stream(&UNARY_AS_STREAM, CallOptions::default())
        .await
        .unwrap();
    let status = bounded(call.finish()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.was_not_processed());
    const SUM_AS_UNARY: Method<U64, U64> = Method::new("test.Up/Sum");
    let status = bounded(client.call(&SUM_AS_UNARY, &U64::new(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.was_not_processed());
    let _ = UNARY;
    settles(&server, 1).await;
}

async fn raw_connection(pki: &Pki, server: &Server) -> Connection {
    let endpoint = ClientEndpoint::new(pki.client_tls(), Limits::default()).unwrap();
    bounded(endpoint.connect(server.local_addr(), "localhost"))
        .await
        .unwrap()
}

/// The header of a request stream of `method_id`, without metadata.
fn stream_header(method_id: u64) -> Vec<u8> {
    RequestHead {
        method_id,
        body_len: 0,
        deadline: None,
        metadata_len: None,
        stream: true,
    }
    .encode()
    .to_vec()
}

/// Writes `bytes` on a new stream, finishes it, and reads the answer's
/// status and message (or the reset that ended it).
async fn exchange(conn: &Connection, bytes: &[u8]) -> (Code, String) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        out.extend_from_slice(&chunk.bytes);
    }
    let head = decode_response(&out, u32::MAX).expect("an answer");
    assert!(!head.flags.contains(ResponseFlags::MESSAGE));
    let message = String::from_utf8_lossy(&out[8..]).into_owned();
    (Code::from_u16(head.status), message)
}

#[tokio::test]
async fn hostile_framing_ends_the_call_with_a_status() {
    let pki = Pki::new();
    let (server, _ended, _) = start(&pki);
    let conn = raw_connection(&pki, &server).await;
    let message = |len: u32, body: &[u8]| [&message_header(len)[..], body].concat();

    // Well formed, by hand: the wire format of docs/wire.md section 16.
    let mut ok = stream_header(BYTES.id());
    ok.extend(message(3, b"abc"));
    ok.extend(message(0, b""));
    ok.extend(message(2, b"de"));
    let (code, _) = bounded(exchange(&conn, &ok)).await;
    assert_eq!(code, Code::Ok);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a length over the limit, refused from the header",
            [stream_header(BYTES.id()), message(MAX_REQUEST + 1, b"")].concat(),
            "exceeds the server's limit",
        ),
        (
            "a lying length: fewer bytes than announced, then the end",
            [stream_header(BYTES.id()), message(100, b"0123456789")].concat(),
            "ended inside the message",
        ),
        (
            "garbage between messages",
            [
                stream_header(BYTES.id()),
                message(3, b"abc"),
                b"garbage!".to_vec(),
                message(3, b"abc"),
            ]
            .concat(),
            "bad header of request message 2",
        ),
        (
            "a message header cut short by the end",
            [stream_header(BYTES.id()), message_header(3)[..5].to_vec()].concat(),
            "ended inside the message header",
        ),
        (
            "a body after a stream's header",
            {
                let mut h = stream_header(BYTES.id());
                h[4] = 1;
                h.push(0);
                h
            },
            "bad request header",
        ),
    ];
    for (what, bytes, says) in cases {
        let (code, text) = bounded(exchange(&conn, &bytes)).await;
        assert_eq!(code, Code::InvalidArgument, "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
    }
    settles(&server, 1).await;
}

/// One piece of a hostile request stream.
#[derive(Debug, Clone)]
enum Piece {
    /// A well-formed message.
    Message(Vec<u8>),
    /// A header that announces `more` bytes beyond the body that follows.
    Lying(Vec<u8>, u32),
    /// Bytes that are no header.
    Garbage(Vec<u8>),
    /// A message over the server's limit, all of it sent (refused from
    /// its header).
    TooLong,
}

fn piece() -> impl proptest::strategy::Strategy<Value = Piece> {
    use proptest::prelude::*;
    let body = || proptest::collection::vec(any::<u8>(), 0..48);
    prop_oneof![
        6 => body().prop_map(Piece::Message),
        1 => (body(), 1u32..70_000).prop_map(|(b, more)| Piece::Lying(b, more)),
        1 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(Piece::Garbage),
        1 => Just(Piece::TooLong),
    ]
}

fn pieces_bytes(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Message(body) => {
                out.extend(message_header(body.len() as u32));
                out.extend(body);
            }
            Piece::Lying(body, more) => {
                out.extend(message_header(body.len() as u32 + more));
                out.extend(body);
            }
            Piece::Garbage(bytes) => out.extend(bytes),
            Piece::TooLong => {
                out.extend(message_header(MAX_REQUEST + 1));
                out.extend(std::iter::repeat_n(7u8, MAX_REQUEST as usize + 1));
            }
        }
    }
    out
}

/// What docs/wire.md section 16 says the BYTES handler answers to a
/// request stream of `bytes`: the total length of its messages, or `None`
/// where the stream is malformed (INVALID_ARGUMENT).
fn expected_total(bytes: &[u8]) -> Option<u64> {
    let (mut at, mut total) = (0, 0u64);
    while at < bytes.len() {
        let header = bytes.get(at..at + 8)?;
        let len = u32::from_le_bytes(header[4..8].try_into().unwrap());
        if header[..4] != [1, 4, 0, 0] || len > MAX_REQUEST {
            return None;
        }
        at += 8 + len as usize;
        if at > bytes.len() {
            return None;
        }
        total += u64::from(len);
    }
    Some(total)
}

/// Arbitrary request streams (messages, lying lengths, garbage, lengths
/// over the limit), written in arbitrary pieces: the server answers each
/// as the wire format says (OK with what it read, or INVALID_ARGUMENT),
/// the connection carries on, and nothing is left held.
#[test]
fn hostile_request_streams_are_answered_as_the_wire_format_says() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new();
    let (server, conn) = runtime.block_on(async {
        let (server, _ended, _) = start(&pki);
        let conn = raw_connection(&pki, &server).await;
        (server, conn)
    });
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        proptest::collection::vec(piece(), 0..12),
        proptest::collection::vec(1usize..40, 0..6),
    );
    let (oks, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    runner
        .run(&strategy, |(pieces, cuts)| {
            let bytes = pieces_bytes(&pieces);
            let wanted = expected_total(&bytes);
            let got = runtime.block_on(bounded(exchange_in_pieces(&conn, &bytes, &cuts)));
            match wanted {
                Some(total) => {
                    oks.fetch_add(1, Ordering::Relaxed);
                    prop_assert_eq!(got, (Code::Ok, total.to_le_bytes().to_vec()));
                }
                None => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    prop_assert_eq!(
                        got.0,
                        Code::InvalidArgument,
                        "{}",
                        String::from_utf8_lossy(&got.1)
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    // Both kinds of stream were tried.
    let (oks, refused) = (oks.into_inner(), refused.into_inner());
    assert!(oks > 0 && refused > 0, "{oks} accepted, {refused} refused");
    runtime.block_on(async {
        // The connection still serves calls, and the server holds nothing.
        let (code, _) = bounded(exchange(&conn, &stream_header(BYTES.id()))).await;
        assert_eq!(code, Code::Ok);
        settles(&server, 1).await;
    });
}

/// Writes a request stream of BYTES whose messages are `bytes`, cut at
/// `cuts` (each write waits a moment, so that the server sees the pieces
/// apart), and returns the answer's status and body.
async fn exchange_in_pieces(conn: &Connection, bytes: &[u8], cuts: &[usize]) -> (Code, Vec<u8>) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut rest = [&stream_header(BYTES.id())[..], bytes].concat();
    for &cut in cuts {
        let at = cut.min(rest.len());
        if send.write_all(&rest[..at]).await.is_err() {
            break;
        }
        rest.drain(..at);
        tokio::task::yield_now().await;
    }
    let _ = send.write_all(&rest).await;
    let _ = send.finish();
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        out.extend_from_slice(&chunk.bytes);
    }
    let head = decode_response(&out, u32::MAX).expect("an answer");
    assert!(!head.flags.contains(ResponseFlags::MESSAGE));
    (Code::from_u16(head.status), out[8..].to_vec())
}
