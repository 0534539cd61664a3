//! Metadata both ways, its limits, hostile blocks, and interceptors on
//! both sides, over real QUIC.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Pki, bounded, cluster_of, connect, serve, serve_with};
use quicall::rpc::{ClientInterceptor, Interceptor, MetadataError, Outcome};
use quicall::transport::{ClientEndpoint, Connection};
use quicall::wire::{self, RequestHead};
use quicall::{
    CallOptions, ClientOptions, ClusterOptions, Code, Context, Hedge, Limits, Metadata, Method,
    Router, Server, ServerOptions, Status,
};

const ECHO_META: Method<[u8], [u8]> = Method::new("test.Meta/Echo");
const FAIL: Method<[u8], [u8]> = Method::new("test.Meta/Fail");

/// Answers with the request's metadata as text, and sends it back as
/// response metadata with a key added; FAIL does the same and fails.
fn echo_router() -> Router {
    fn describe(ctx: &Context) -> String {
        let mut pairs: Vec<String> = ctx
            .metadata()
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        pairs.sort();
        for (key, value) in ctx.metadata().iter() {
            ctx.set_reply_metadata(key, value).unwrap();
        }
        ctx.set_reply_metadata("served-by", "echo").unwrap();
        pairs.join(",")
    }
    Router::new()
        .route(&ECHO_META, |ctx: Context, _req| async move {
            Ok::<_, Status>(describe(&ctx))
        })
        .and_then(|r| {
            r.route(&FAIL, |ctx: Context, _req| async move {
                let text = describe(&ctx);
                Err::<Vec<u8>, _>(Status::not_found(text))
            })
        })
        .unwrap()
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    let mut metadata = Metadata::new();
    for (k, v) in pairs {
        metadata.insert(k, v).unwrap();
    }
    metadata
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_travels_both_ways_with_answers_and_failures() {
    let pki = Pki::new();
    let server = serve(&pki, echo_router());
    let client = connect(&pki, &server).await;
    let options = CallOptions::default().with_metadata(metadata(&[
        ("authorization", "Bearer 7f3a"),
        ("tenant", "acme"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]));
    let response = bounded(client.call_full(&ECHO_META, "", options.clone()))
        .await
        .unwrap();
    assert_eq!(
        &response.message[..],
        b"authorization=Bearer 7f3a,tenant=acme,traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(response.metadata.get_str("tenant"), Some("acme"));
    assert_eq!(response.metadata.get_str("served-by"), Some("echo"));

    // A failure carries its metadata too.
    let status = bounded(client.call_full(&FAIL, "", options.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("tenant=acme"), "{status}");
    assert_eq!(
        status.metadata().and_then(|m| m.get_str("served-by")),
        Some("echo")
    );

    // Without metadata, and without asking for the response's: nothing.
    let reply = bounded(client.call(&ECHO_META, "")).await.unwrap();
    assert!(reply.is_empty());
    let response = bounded(client.call_full(&ECHO_META, "", CallOptions::default()))
        .await
        .unwrap();
    assert_eq!(response.metadata.get_str("served-by"), Some("echo"));
}

async fn raw_connection(pki: &Pki, server: &Server) -> Connection {
    let endpoint = ClientEndpoint::new(pki.client_tls(), Limits::default()).unwrap();
    bounded(endpoint.connect(server.local_addr(), "localhost"))
        .await
        .unwrap()
}

/// Writes `bytes` on a new stream, finishes it, and reads the whole answer.
async fn exchange(conn: &Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        out.extend_from_slice(&chunk.bytes);
    }
    out
}

fn request(metadata: Option<&[u8]>, body: &[u8]) -> Vec<u8> {
    let head = RequestHead {
        method_id: ECHO_META.id(),
        body_len: body.len() as u32,
        deadline: None,
        metadata_len: metadata.map(|m| m.len() as u16),
        stream: false,
    };
    [&head.encode()[..], metadata.unwrap_or_default(), body].concat()
}

#[tokio::test]
async fn a_version_1_call_without_metadata_is_unchanged_byte_for_byte() {
    let pki = Pki::new();
    let server = serve(&pki, echo_router());
    let conn = raw_connection(&pki, &server).await;
    // The old format: flags and reserved 0. The handler sets response
    // metadata, but this caller did not say it reads any: the answer is
    // in the old format too.
    let old = request(None, b"x");
    assert_eq!(&old[..4], &[1, 0, 0, 0]);
    let answer = bounded(exchange(&conn, &old)).await;
    assert_eq!(
        &answer[..],
        &[1, 0, 0, 0, 0, 0, 0, 0],
        "OK, no flag, empty body"
    );

    // With the flag: the block between header and body, and the answer's
    // block after its header, byte for byte (docs/wire.md section 13).
    let block = metadata(&[("k", "v")]);
    let answer = bounded(exchange(&conn, &request(Some(block.as_bytes()), b"x"))).await;
    let expected_block = metadata(&[("k", "v"), ("served-by", "echo")]);
    let mut expected = vec![1, 2, 0, 0, 3, 0, 0, 0];
    expected.extend_from_slice(&(expected_block.as_bytes().len() as u16).to_le_bytes());
    expected.extend_from_slice(expected_block.as_bytes());
    expected.extend_from_slice(b"k=v");
    assert_eq!(answer, expected);
}

#[tokio::test]
async fn limits_hold_at_and_one_byte_over() {
    let pki = Pki::new();
    let server = serve(&pki, echo_router());
    let client = connect(&pki, &server).await;
    // A block of exactly 8 KiB: one entry of 3 + 1 + 8188 bytes.
    let at = Metadata::new().with("k", "v".repeat(8188)).unwrap();
    assert_eq!(at.as_bytes().len(), 8192);
    let ok = bounded(client.call_with(&ECHO_META, "", CallOptions::default().with_metadata(at)))
        .await
        .unwrap();
    assert_eq!(ok.len(), 2 + 8188);
    let over = Metadata::new().with("k", "v".repeat(8189)).unwrap();
    let status =
        bounded(client.call_with(&ECHO_META, "", CallOptions::default().with_metadata(over)))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.was_not_processed());
    assert!(status.message().contains("8193"), "{status}");

    // 64 entries, and 65.
    let mut many = Metadata::new();
    for i in 0..64 {
        many.insert(&format!("k{i}"), "").unwrap();
    }
    bounded(client.call_with(
        &ECHO_META,
        "",
        CallOptions::default().with_metadata(many.clone()),
    ))
    .await
    .unwrap();
    many.insert("k64", "").unwrap();
    let status =
        bounded(client.call_with(&ECHO_META, "", CallOptions::default().with_metadata(many)))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.was_not_processed());

    // A client's own limit is the protocol's: 65,535 bytes.
    let huge = Metadata::new().with("k", vec![0; 65_535]).unwrap();
    let status =
        bounded(client.call_with(&ECHO_META, "", CallOptions::default().with_metadata(huge)))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
}

#[tokio::test]
async fn hostile_blocks_are_refused_and_the_server_serves_on() {
    let pki = Pki::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let router = Router::new()
        .route(&ECHO_META, move |_ctx, _req| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, Status>(Vec::new()) }
        })
        .unwrap();
    let server = serve(&pki, router);
    let conn = raw_connection(&pki, &server).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // A value length running past the block.
        ("truncated entry", request(Some(&[1, 200, 0, b'k', 1]), b"")),
        (
            "duplicate keys",
            request(Some(&[1, 1, 0, b'k', 1, 1, 1, 0, b'k', 2]), b""),
        ),
        ("upper-case key", request(Some(&[1, 0, 0, b'K']), b"")),
        ("empty key", request(Some(&[0, 0, 0]), b"")),
        // The header says 100 bytes of metadata; the stream ends after 10.
        ("lying length", {
            let mut bytes = request(Some(&[0; 100]), b"");
            bytes.truncate(wire::REQUEST_HEADER_LEN + 10);
            bytes
        }),
        // 60,000 bytes announced: refused from the header alone.
        ("over the limit", {
            let mut bytes = request(None, b"");
            bytes[1] = 1;
            bytes[2..4].copy_from_slice(&60_000u16.to_le_bytes());
            bytes
        }),
    ];
    for (what, bytes) in cases {
        let answer = bounded(exchange(&conn, &bytes)).await;
        let head = wire::decode_response(&answer, u32::MAX).unwrap();
        let code = Code::from_u16(head.status);
        assert!(
            matches!(code, Code::InvalidArgument | Code::ResourceExhausted),
            "{what}: {code:?} {}",
            String::from_utf8_lossy(&answer[8..])
        );
        assert!(
            head.flags.contains(wire::ResponseFlags::NOT_PROCESSED),
            "{what}"
        );
    }
    assert_eq!(handled.load(Ordering::Relaxed), 0);
    let client = connect(&pki, &server).await;
    bounded(client.call(&ECHO_META, "")).await.unwrap();
    assert_eq!(handled.load(Ordering::Relaxed), 1);
    assert_eq!(common::settles(&server, 2).await.streams, 0);
}

#[derive(Clone, Debug, PartialEq)]
struct Tenant(String);

/// Demands a token; attaches the tenant it names; counts outcomes.
#[derive(Default)]
struct Auth {
    outcomes: Mutex<Vec<(&'static str, Code)>>,
}

/// The interceptor: the shared `Auth`.
struct AuthInterceptor(Arc<Auth>);

impl Interceptor for AuthInterceptor {
    fn before(&self, mut ctx: Context) -> quicall::rpc::InterceptFuture {
        Box::pin(async move {
            let token = ctx
                .metadata()
                .get_str("authorization")
                .ok_or_else(|| Status::unauthenticated("no token"))?;
            let tenant = token
                .strip_prefix("Bearer tenant-")
                .ok_or_else(|| Status::unauthenticated("unknown token"))?
                .to_owned();
            ctx.extensions_mut().insert(Tenant(tenant));
            Ok(ctx)
        })
    }

    fn after(&self, outcome: &Outcome<'_>) {
        self.0
            .outcomes
            .lock()
            .unwrap()
            .push((outcome.method, outcome.code));
    }
}

/// Adds the token to every call.
struct Token(&'static str);

impl ClientInterceptor for Token {
    fn before(&self, _method: &'static str, metadata: &mut Metadata) -> Result<(), MetadataError> {
        metadata.insert("authorization", self.0)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interceptor_demands_a_token_and_hands_the_tenant_to_the_handler() {
    let pki = Pki::new();
    let auth = Arc::new(Auth::default());
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    const WHO: Method<[u8], [u8]> = Method::new("test.Tenant/Who");
    let router = Router::new()
        .intercept(AuthInterceptor(auth.clone()))
        .route(&WHO, move |ctx: Context, _req| {
            counter.fetch_add(1, Ordering::Relaxed);
            let tenant = ctx.extensions().get::<Tenant>().cloned();
            async move {
                let Tenant(name) = tenant.ok_or_else(|| Status::internal("no tenant"))?;
                Ok::<_, Status>(name)
            }
        })
        .unwrap();
    let server = serve(&pki, router);

    // Without a token, or with a bad one: UNAUTHENTICATED, not processed,
    // and the handler never runs.
    let client = connect(&pki, &server).await;
    let status = bounded(client.call(&WHO, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.was_not_processed());
    let bad = CallOptions::default().with_metadata(metadata(&[("authorization", "Basic x")]));
    let status = bounded(client.call_with(&WHO, "", bad)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(handled.load(Ordering::Relaxed), 0);

    // With a client interceptor adding the token: the tenant reaches the
    // handler.
    let mut options = ClientOptions::default();
    options.interceptors.push(Token("Bearer tenant-acme"));
    let client = common::connect_with(&pki, &server, options).await;
    let reply = bounded(client.call(&WHO, "")).await.unwrap();
    assert_eq!(&reply[..], b"acme");
    assert_eq!(handled.load(Ordering::Relaxed), 1);
    assert_eq!(
        *auth.outcomes.lock().unwrap(),
        [
            ("test.Tenant/Who", Code::Unauthenticated),
            ("test.Tenant/Who", Code::Unauthenticated),
            ("test.Tenant/Who", Code::Ok),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_sends_the_same_metadata_with_every_hedge() {
    const SLOW_ON_ONE: Method<[u8], [u8]> = Method::new("test.Meta/Hedged")
        .idempotent()
        .hedged(Hedge::After(Duration::from_millis(20)));
    let pki = Pki::new();
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            let seen = seen.clone();
            let router = Router::new()
                .route(&SLOW_ON_ONE, move |ctx: Context, _req| {
                    let id = ctx
                        .metadata()
                        .get_str("request-id")
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().unwrap().push((i, id));
                    async move {
                        if i == 0 {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Ok::<_, Status>(format!("server {i}"))
                    }
                })
                .unwrap();
            serve_with(&pki, router, ServerOptions::default())
        })
        .collect();
    let options = ClusterOptions {
        policy: quicall::Policy::RoundRobin,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &[&servers[0], &servers[1]], options).await;
    for call in 0..6 {
        let id = format!("call-{call}");
        let options = CallOptions::default().with_metadata(metadata(&[("request-id", &id)]));
        let reply = bounded(cluster.call_with(&SLOW_ON_ONE, "", options))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"server 1");
    }
    // Calls that went first to the slow server were hedged to the other:
    // both saw the same request id.
    let seen = seen.lock().unwrap();
    let hedged = (0..6)
        .map(|call| format!("call-{call}"))
        .filter(|id| seen.iter().filter(|(_, s)| s == id).count() == 2)
        .count();
    assert!(hedged > 0, "{seen:?}");
    assert!(
        seen.iter().all(|(_, id)| id.starts_with("call-")),
        "{seen:?}"
    );
}

/// Records the end of every call it sees.
#[derive(Clone, Default)]
struct Ends(Arc<Mutex<Vec<(&'static str, Code)>>>);

impl ClientInterceptor for Ends {
    fn after(&self, method: &'static str, code: Code, _elapsed: Duration) {
        self.0.lock().unwrap().push((method, code));
    }
}

impl Ends {
    fn take(&self) -> Vec<(&'static str, Code)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_interceptors_see_every_stream_end_once() {
    use quicall::demo::{COUNT, EACH};
    use quicall::zerocopy::little_endian::U64;
    const TOTAL: Method<U64, U64> = Method::new("test.Meta/Total").client_streaming();
    let pki = Pki::new();
    let router = quicall::demo::router()
        .route_client_stream(&TOTAL, |_ctx, mut numbers| async move {
            let mut total = 0;
            while let Some(n) = numbers.message().await? {
                total += n.get();
            }
            Ok::<_, Status>(U64::new(total))
        })
        .unwrap();
    let server = serve(&pki, router);
    let ends = Ends::default();
    let mut options = ClientOptions::default();
    options.interceptors.push(ends.clone());
    let client = common::connect_with(&pki, &server, options.clone()).await;
    let none = CallOptions::default;

    // A server stream read to its end, then one dropped after a message.
    let mut numbers = bounded(client.server_stream(&COUNT, U64::new(5), none()))
        .await
        .unwrap();
    assert_eq!(ends.take(), []);
    while bounded(numbers.message()).await.unwrap().is_some() {}
    assert_eq!(ends.take(), [("demo.Count/Up", Code::Ok)]);
    drop(numbers);
    let mut numbers = bounded(client.server_stream(&COUNT, U64::new(1 << 40), none()))
        .await
        .unwrap();
    bounded(numbers.message()).await.unwrap().unwrap();
    drop(numbers);
    assert_eq!(ends.take(), [("demo.Count/Up", Code::Cancelled)]);

    // A bidirectional echo to its end.
    let (mut sink, mut echoes) = bounded(client.bidi_stream(&EACH, none())).await.unwrap();
    for word in ["a", "b", "c"] {
        bounded(sink.send(word)).await.unwrap();
    }
    sink.finish();
    while bounded(echoes.message()).await.unwrap().is_some() {}
    assert_eq!(ends.take(), [("demo.Echo/Each", Code::Ok)]);

    // A client stream finished, then one dropped unfinished.
    let mut total = bounded(client.client_stream(&TOTAL, none())).await.unwrap();
    for n in 1..=3 {
        bounded(total.send(U64::new(n))).await.unwrap();
    }
    let answer = bounded(total.finish()).await.unwrap();
    assert_eq!(answer.message.get(), 6);
    assert_eq!(ends.take(), [("test.Meta/Total", Code::Ok)]);
    let mut total = bounded(client.client_stream(&TOTAL, none())).await.unwrap();
    bounded(total.send(U64::new(1))).await.unwrap();
    drop(total);
    assert_eq!(ends.take(), [("test.Meta/Total", Code::Cancelled)]);

    // The same through a cluster, whose client options carry them.
    let cluster_options = ClusterOptions {
        client: options,
        ..ClusterOptions::default()
    };
    let cluster = cluster_of(&pki, &[&server], cluster_options).await;
    let mut numbers = bounded(cluster.server_stream(&COUNT, U64::new(3), none()))
        .await
        .unwrap();
    while bounded(numbers.message()).await.unwrap().is_some() {}
    assert_eq!(ends.take(), [("demo.Count/Up", Code::Ok)]);
    let (mut sink, mut echoes) = bounded(cluster.bidi_stream(&EACH, none())).await.unwrap();
    bounded(sink.send("x")).await.unwrap();
    sink.finish();
    while bounded(echoes.message()).await.unwrap().is_some() {}
    let mut total = bounded(cluster.client_stream(&TOTAL, none()))
        .await
        .unwrap();
    bounded(total.send(U64::new(4))).await.unwrap();
    assert_eq!(bounded(total.finish()).await.unwrap().message.get(), 4);
    assert_eq!(
        ends.take(),
        [("demo.Echo/Each", Code::Ok), ("test.Meta/Total", Code::Ok)]
    );
}

/// Panics in `after`, for one method.
struct PanicsAfter;

impl ClientInterceptor for PanicsAfter {
    fn after(&self, method: &'static str, _code: Code, _elapsed: Duration) {
        assert_ne!(method, "demo.Count/Up", "client interceptor bug");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_interceptor_that_panics_after_a_call_changes_nothing_of_it() {
    use quicall::demo::COUNT;
    use quicall::zerocopy::little_endian::U64;
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    let ends = Ends::default();
    let mut options = ClientOptions::default();
    options.interceptors.push(PanicsAfter);
    options.interceptors.push(ends.clone());
    let client = common::connect_with(&pki, &server, options).await;
    let none = CallOptions::default;
    // Read to its end: the messages and the end stand, and the interceptor
    // after the one that panicked is told too.
    let mut numbers = bounded(client.server_stream(&COUNT, U64::new(3), none()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(n) = bounded(numbers.message()).await.unwrap() {
        got.push(n.get());
    }
    assert_eq!(got.len(), 3);
    assert_eq!(ends.take(), [("demo.Count/Up", Code::Ok)]);
    // Given up while the caller's own code unwinds from a panic: the stream
    // is dropped then, and the interceptor's panic inside that drop would
    // abort the process; the caller's panic is what comes out.
    let numbers = bounded(client.server_stream(&COUNT, U64::new(1 << 40), none()))
        .await
        .unwrap();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _numbers = numbers;
        panic!("caller bug");
    }));
    let panic = unwound.unwrap_err();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"caller bug"));
    assert_eq!(ends.take(), [("demo.Count/Up", Code::Cancelled)]);
    // The client goes on.
    let mut numbers = bounded(client.server_stream(&COUNT, U64::new(2), none()))
        .await
        .unwrap();
    while bounded(numbers.message()).await.unwrap().is_some() {}
    common::settles(&server, 1).await;
}
