//! The attack suite: each attack runs over real QUIC on loopback while a
//! well-behaved client keeps calling; every good call must succeed, and the
//! server's gauges must come back to their baseline afterwards.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::{GoodClient, Pki, bounded, connect, serve_with, settles};
use quicall::certs::{CertificateAuthority, NodeSpec};
use quicall::demo::{ADD, AddRequest, ECHO};
use quicall::transport::quinn::{self, VarInt};
use quicall::transport::{ClientEndpoint, Connection, Limits};
use quicall::wire::{REQUEST_HEADER_LEN, RequestHead};
use quicall::{
    Access, CallOptions, Client, ClientOptions, ClientTls, Code, Server, ServerOptions, Status,
};
use zerocopy::little_endian::I64;

/// Small limits, so that attacks reach them quickly.
fn options() -> ServerOptions {
    ServerOptions {
        transport: Limits {
            max_concurrent_streams: 64,
            max_connections: 16,
            handshake_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(2),
            keep_alive: Some(Duration::from_millis(500)),
            ..Limits::default()
        },
        max_request_size: 64 << 10,
        header_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    }
}

async fn raw_connection(pki: &Pki, server: &Server) -> Connection {
    let endpoint = ClientEndpoint::new(pki.client_tls(), Limits::default()).unwrap();
    bounded(endpoint.connect(server.local_addr(), "localhost"))
        .await
        .unwrap()
}

fn header(method_id: u64, body_len: u32) -> [u8; REQUEST_HEADER_LEN] {
    RequestHead {
        method_id,
        body_len,
        deadline: None,
        metadata_len: None,
        stream: false,
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_while_good_calls_flow() {
    let pki = Pki::new();
    let server = serve_with(&pki, quicall::demo::router(), options());
    let good = GoodClient::start(&pki, &server).await;
    let conn = raw_connection(&pki, &server).await;
    let mut attacks = tokio::task::JoinSet::new();
    for k in 0..200u32 {
        let conn = conn.clone();
        attacks.spawn(async move {
            let Ok((mut send, mut recv)) = conn.open_bi().await else {
                return;
            };
            let mut bytes: Vec<u8> = match k % 6 {
                // Random bytes.
                0 => (0..fastrand::usize(1..200))
                    .map(|_| fastrand::u8(..))
                    .collect(),
                // A header announcing 4 GiB.
                1 => header(ADD.id(), u32::MAX).to_vec(),
                // Half a header, then a reset.
                2 => header(ADD.id(), 16)[..12].to_vec(),
                // A body far shorter than announced.
                3 => [&header(ADD.id(), 16)[..], &[1, 2, 3]].concat(),
                // A body far longer than announced.
                4 => [&header(ADD.id(), 16)[..], &[7u8; 5000][..]].concat(),
                // An unknown method.
                _ => header(0xdead_beef, 0).to_vec(),
            };
            let _ = send.write_all(&bytes).await;
            if k % 6 == 2 {
                let _ = send.reset(VarInt::from_u32(7));
            } else {
                let _ = send.finish();
            }
            bytes.clear();
            // Read whatever comes back (a status or a reset), bounded.
            let _ = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16)).await;
        });
    }
    bounded(async { while attacks.join_next().await.is_some() {} }).await;
    good.check().await;
    conn.close(0, b"done");
    settles(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_of_thousands_of_streams() {
    let pki = Pki::new();
    let server = serve_with(&pki, quicall::demo::router(), options());
    let good = GoodClient::start(&pki, &server).await;
    let conn = raw_connection(&pki, &server).await;
    // 3,000 streams opened and reset at once, 64 at a time (the stream limit):
    // each reset gives its credit back at once.
    bounded(async {
        for _ in 0..3000 {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            send.write_all(&header(ADD.id(), 16)[..8]).await.unwrap();
            send.reset(VarInt::from_u32(0)).unwrap();
            drop(recv);
        }
    })
    .await;
    good.check().await;
    conn.close(0, b"done");
    settles(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_streams_held_at_the_limit_are_timed_out() {
    let pki = Pki::new();
    let server = serve_with(&pki, quicall::demo::router(), options());
    let good = GoodClient::start(&pki, &server).await;
    let conn = raw_connection(&pki, &server).await;
    // Open every stream the connection may have, each with 2 bytes of a
    // header, and hold them.
    let mut held = Vec::new();
    for _ in 0..64 {
        let (mut send, recv) = bounded(conn.open_bi()).await.unwrap();
        send.write_all(&[1, 0]).await.unwrap();
        held.push((send, recv));
    }
    bounded(async {
        while server.gauges().streams < 64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The server resets each after its header timeout.
    for (_send, mut recv) in held {
        let err = bounded(recv.read_to_end(64)).await.unwrap_err();
        assert!(
            matches!(err, quinn::ReadToEndError::Read(quinn::ReadError::Reset(_))),
            "{err:?}"
        );
    }
    good.check().await;
    conn.close(0, b"done");
    settles(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_to_the_port_are_ignored() {
    let pki = Pki::new();
    let server = serve_with(&pki, quicall::demo::router(), options());
    let good = GoodClient::start(&pki, &server).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for k in 0..5000usize {
        let len = [1, 20, 1200, 1500, fastrand::usize(1..1400)][k % 5];
        let mut datagram: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
        if k % 3 == 0 {
            // Looks like a QUIC long header (Initial, version 1).
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
        }
        let _ = socket.send_to(&datagram, server.local_addr()).await;
        if k % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    good.check().await;
    settles(&server, 0).await;
}

/// A UDP socket that lets its first `allow` datagrams out and silently drops
/// the rest: a peer that starts a handshake and then vanishes.
#[derive(Debug)]
struct Vanishing {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    allow: usize,
    sent: AtomicUsize,
}

impl quinn::AsyncUdpSocket for Vanishing {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }
    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        if self.sent.fetch_add(1, Ordering::Relaxed) < self.allow {
            self.inner.try_send(transmit)
        } else {
            Ok(())
        }
    }
    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_handshakes_and_connections_beyond_the_limit() {
    use quinn::Runtime;
    let pki = Pki::new();
    let server = serve_with(&pki, quicall::demo::router(), options());
    let good = GoodClient::start(&pki, &server).await;
    // Twenty handshakes started and abandoned after the first datagram.
    let mut abandoned = Vec::new();
    for _ in 0..20 {
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inner = quinn::TokioRuntime.wrap_udp_socket(std_socket).unwrap();
        let socket = Arc::new(Vanishing {
            inner,
            allow: 1,
            sent: AtomicUsize::new(0),
        });
        let limits = Limits {
            handshake_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let endpoint = ClientEndpoint::with_socket(pki.client_tls(), limits, socket).unwrap();
        // The client may believe it is connected (its last flight is lost),
        // but the server never hears the end of the handshake.
        let attempt = bounded(endpoint.connect(server.local_addr(), "localhost")).await;
        abandoned.push((endpoint, attempt));
    }
    let half_open = server.gauges().connection_slots;
    assert!(
        half_open > 10,
        "the abandoned handshakes held slots ({half_open})"
    );
    // The server's half-open connections end with its handshake timeout.
    settles(&server, 1).await;
    drop(abandoned);

    // Connections beyond the limit (16, one taken by the good client) are refused.
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        let endpoint = ClientEndpoint::new(pki.client_tls(), Limits::default()).unwrap();
        match bounded(endpoint.connect(server.local_addr(), "localhost")).await {
            Ok(conn) => open.push(conn),
            Err(e) => {
                assert_eq!(e.failure(), quicall::transport::Failure::Unreachable, "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(open.len(), 15, "the limit holds");
    assert_eq!(refused, 15);
    good.check().await;
    for conn in &open {
        conn.close(0, b"done");
    }
    drop(open);
    settles(&server, 0).await;
}

async fn refusal(server: &Server, tls: ClientTls) -> Status {
    let outcome = bounded(async {
        let client = Client::connect(
            server.local_addr(),
            "localhost",
            tls,
            ClientOptions::default(),
        )
        .await?;
        client
            .call(
                &ADD,
                &AddRequest {
                    a: I64::new(1),
                    b: I64::new(1),
                },
            )
            .await
    })
    .await;
    outcome.expect_err("this client must be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_refused_with_clear_errors() {
    let pki = Pki::new();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let expired = pki
        .ca
        .issue(&NodeSpec::client("expired").valid_between(now - 2 * day, now - day))
        .unwrap();
    let early = pki
        .ca
        .issue(&NodeSpec::client("early").valid_between(now + day, now + 2 * day))
        .unwrap();
    let revoked = pki.ca.issue(&NodeSpec::client("revoked")).unwrap();
    let crl = pki.ca.revocation_list([revoked.serial()], day).unwrap();
    let tls = pki.server_tls().with_crls(vec![crl.der().clone()]);
    let server = Server::bind(common::loopback(), tls, quicall::demo::router(), options()).unwrap();
    let good = GoodClient::start(&pki, &server).await;

    let with = |cert: &quicall::certs::NodeCert| {
        ClientTls::new(pki.roots()).with_identity(cert.chain(), cert.key_der())
    };
    for (what, cert, reason) in [
        ("expired", &expired, "expired"),
        ("not yet valid", &early, "not valid yet"),
        ("revoked", &revoked, "revoked"),
    ] {
        let status = refusal(&server, with(cert)).await;
        println!("{what}: {status}");
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status}");
        assert!(status.message().contains(reason), "{what}: {status}");
    }
    // A certificate from another CA.
    let rogue = Pki::named("rogue CA");
    let status = refusal(
        &server,
        ClientTls::new(pki.roots()).with_identity(rogue.client.chain(), rogue.client.key_der()),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("unknown CA"), "{status}");
    // A client that expects another server name refuses this server.
    let status = bounded(Client::connect(
        server.local_addr(),
        "someone-else.example",
        pki.client_tls(),
        ClientOptions::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    // A self-signed client certificate.
    let own = CertificateAuthority::new("self-signed", day).unwrap();
    let status = refusal(
        &server,
        ClientTls::new(pki.roots()).with_identity(vec![own.cert_der().clone()], own.key_der()),
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    // The revoked client's sibling, not revoked, still gets in.
    let fine = pki.ca.issue(&NodeSpec::client("fine")).unwrap();
    let client = Client::connect(
        server.local_addr(),
        "localhost",
        with(&fine),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        bounded(client.call(
            &ADD,
            &AddRequest {
                a: I64::new(1),
                b: I64::new(1)
            }
        ))
        .await
        .unwrap()
        .sum
        .get(),
        2
    );
    client.close();
    good.check().await;
    settles(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_callers_get_permission_denied_without_the_handler_running() {
    let pki = Pki::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let router = quicall::Router::new()
        .route(&ADD, quicall::demo::add)
        .unwrap()
        .route(&ECHO, {
            let ran = ran.clone();
            move |_ctx, req| {
                ran.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, Status>(req) }
            }
        })
        .unwrap()
        .method_access(&ECHO, Access::names(["ops"]))
        .unwrap();
    let server = serve_with(&pki, router, options());
    let good = GoodClient::start(&pki, &server).await;
    let alice = connect(&pki, &server).await;
    let status = bounded(alice.call(&ECHO, "secret")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains("alice"), "{status}");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler never ran");
    let ops_cert = pki.ca.issue(&NodeSpec::client("ops")).unwrap();
    let tls = ClientTls::new(pki.roots()).with_identity(ops_cert.chain(), ops_cert.key_der());
    let ops = Client::connect(
        server.local_addr(),
        "localhost",
        tls,
        ClientOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(&*bounded(ops.call(&ECHO, "hello")).await.unwrap(), b"hello");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    good.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_responses_and_endless_handlers_end_in_statuses() {
    const BIG: quicall::Method<[u8], [u8]> = quicall::Method::new("test.Big/Reply");
    const NEVER: quicall::Method<[u8], [u8]> = quicall::Method::new("test.Never/Return");
    let pki = Pki::new();
    let router = quicall::demo::router()
        .route(&BIG, |_ctx, _req| async move {
            Ok::<_, Status>(vec![0u8; 2 << 20])
        })
        .unwrap()
        .route(&NEVER, |_ctx, _req| async move {
            std::future::pending::<()>().await;
            Ok::<_, Status>(Vec::new())
        })
        .unwrap();
    let server = serve_with(
        &pki,
        router,
        ServerOptions {
            max_response_size: 1 << 20,
            ..options()
        },
    );
    let good = GoodClient::start(&pki, &server).await;
    let client = connect(&pki, &server).await;
    let status = bounded(client.call(&BIG, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    let status = bounded(client.call_with(
        &NEVER,
        "",
        CallOptions::deadline(Duration::from_millis(200)),
    ))
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    client.close();
    good.check().await;
    settles(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_validation_by_retry_lets_real_clients_in() {
    // With a threshold of 0 every new client must echo a Retry token first,
    // as all would during a flood of handshakes.
    let pki = Pki::new();
    let mut opts = options();
    opts.transport.retry_above_handshakes = 0;
    let server = serve_with(&pki, quicall::demo::router(), opts);
    for _ in 0..5 {
        let client = connect(&pki, &server).await;
        let reply = bounded(client.call(
            &ADD,
            &AddRequest {
                a: I64::new(20),
                b: I64::new(22),
            },
        ))
        .await
        .unwrap();
        assert_eq!(reply.sum.get(), 42);
        client.close();
    }
    settles(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_chain_amplification_is_refused_before_path_building() {
    // A valid leaf followed by a dozen self-issued certificates that carry
    // the real CA's name (which is public): without bounds, path building
    // tries each of them, and a refused handshake costs the server many
    // times an ordinary one.
    let pki = Pki::new();
    let server = serve_with(&pki, quicall::demo::router(), options());
    let good = GoodClient::start(&pki, &server).await;
    let fakes: Vec<_> = (0..12)
        .map(|_| CertificateAuthority::new("test CA", Duration::from_secs(3600)).unwrap())
        .collect();
    let mut chain = pki.client.chain();
    chain.extend(fakes.iter().map(|ca| ca.cert_der().clone()));
    let tls = ClientTls::new(pki.roots()).with_identity(chain, pki.client.key_der());
    let status = refusal(&server, tls).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    // Fewer than the bound, but self-issued: refused too.
    let mut chain = pki.client.chain();
    chain.push(fakes[0].cert_der().clone());
    let tls = ClientTls::new(pki.roots()).with_identity(chain, pki.client.key_der());
    let status = refusal(&server, tls).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    // The same leaf alone is accepted.
    let client = connect(&pki, &server).await;
    let sum = bounded(client.call(
        &ADD,
        &AddRequest {
            a: I64::new(1),
            b: I64::new(2),
        },
    ))
    .await
    .unwrap();
    assert_eq!(sum.sum.get(), 3);
    good.check().await;
    settles(&server, 1).await;
}

/// A UDP socket that hears nothing but Retry packets: a client that lets its
/// Initial packets out (and passes address validation) but never reads the
/// server's answer, so every handshake it starts stays half open.
#[derive(Debug)]
struct Deaf(Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }
    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }
    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = self.0.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            for (buf, meta) in bufs.iter().zip(meta.iter_mut()).take(*n) {
                // Long header, type Retry: 0b1111_xxxx.
                if meta.len == 0 || buf[0] & 0xf0 != 0xf0 {
                    meta.len = 0;
                }
            }
        }
        polled
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_from_one_address_do_not_lock_out_new_clients() {
    // An anonymous peer on 127.0.0.2 starts 600 handshakes in about a second
    // and finishes none. Before handshakes had a pool of their own, each held
    // a connection slot for the 10 s handshake timeout: the 128 slots were
    // all taken and new clients refused.
    use quinn::Runtime;
    let pki = Pki::new();
    let options = ServerOptions {
        transport: Limits {
            max_connections: 128,
            max_handshakes: 64,
            max_handshakes_per_address: 16,
            retry_above_handshakes: 8,
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let server = serve_with(&pki, quicall::demo::router(), options);
    let Ok(std_socket) = std::net::UdpSocket::bind("127.0.0.2:0") else {
        println!("skipped: 127.0.0.2 cannot be bound here");
        return;
    };
    let deaf = Arc::new(Deaf(
        quinn::TokioRuntime.wrap_udp_socket(std_socket).unwrap(),
    ));
    let limits = Limits {
        handshake_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let attacker = ClientEndpoint::with_socket(ClientTls::new(pki.roots()), limits, deaf).unwrap();
    let flood = tokio::spawn({
        let (attacker, addr) = (attacker.clone(), server.local_addr());
        async move {
            let mut attempts = tokio::task::JoinSet::new();
            for _ in 0..600 {
                let attacker = attacker.clone();
                attempts.spawn(async move {
                    let _ = attacker.connect(addr, "localhost").await;
                });
                tokio::time::sleep(Duration::from_micros(1500)).await;
            }
            while attempts.join_next().await.is_some() {}
        }
    });
    // Meanwhile, new clients connect and call, one after another.
    let (mut served, mut peak) = (0, 0);
    while !flood.is_finished() && served < 200 {
        let client = bounded(Client::connect(
            server.local_addr(),
            "localhost",
            pki.client_tls(),
            ClientOptions::default(),
        ))
        .await
        .unwrap_or_else(|status| panic!("a new client was refused during the flood: {status}"));
        let request = AddRequest {
            a: I64::new(served),
            b: I64::new(1),
        };
        let reply = bounded(client.call(&ADD, &request)).await.unwrap();
        assert_eq!(reply.sum.get(), served + 1);
        client.close();
        served += 1;
        peak = peak.max(server.gauges().handshakes);
    }
    bounded(flood).await.unwrap();
    println!("{served} new clients served during the flood; at most {peak} handshakes in progress");
    assert!(served > 0);
    // The attacker's address held at most its share, the good client one more.
    assert!(peak <= 16 + 1, "{peak} handshakes in progress");
    settles(&server, 0).await;
}
