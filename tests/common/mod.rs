//! Helpers shared by the integration tests: certificates, servers and clients
//! on loopback.
#![allow(dead_code)]

pub mod serve_process;

use std::net::SocketAddr;
use std::time::Duration;

use quicall::certs::{CertificateAuthority, NodeCert, NodeSpec};
use quicall::{
    Client, ClientAuth, ClientOptions, ClientTls, Router, Server, ServerOptions, ServerTls,
};

/// A CA with a server certificate for localhost and a client certificate.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server: NodeCert,
    pub client: NodeCert,
}

impl Pki {
    pub fn new() -> Self {
        Self::named("test CA")
    }

    pub fn named(name: &str) -> Self {
        let ca = CertificateAuthority::new(name, Duration::from_secs(3600)).unwrap();
        let server = ca
            .issue(&NodeSpec::server("server").san("localhost").san("127.0.0.1"))
            .unwrap();
        let client = ca.issue(&NodeSpec::client("alice")).unwrap();
        Self { ca, server, client }
    }

    pub fn roots(&self) -> Vec<quicall::transport::CertificateDer<'static>> {
        vec![self.ca.cert_der().clone()]
    }

    /// Server TLS that requires client certificates from this CA.
    pub fn server_tls(&self) -> ServerTls {
        ServerTls::new(
            self.server.chain(),
            self.server.key_der(),
            ClientAuth::Required(self.roots()),
        )
    }

    /// Client TLS that trusts this CA and presents the client certificate.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::new(self.roots()).with_identity(self.client.chain(), self.client.key_der())
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn serve(pki: &Pki, router: Router) -> Server {
    serve_with(pki, router, ServerOptions::default())
}

pub fn serve_with(pki: &Pki, router: Router, options: ServerOptions) -> Server {
    Server::bind(loopback(), pki.server_tls(), router, options).unwrap()
}

pub async fn connect(pki: &Pki, server: &Server) -> Client {
    connect_with(pki, server, ClientOptions::default()).await
}

/// A client of `server` with `options`.
pub async fn connect_with(pki: &Pki, server: &Server, options: ClientOptions) -> Client {
    Client::connect(server.local_addr(), "localhost", pki.client_tls(), options)
        .await
        .unwrap()
}

/// What `counter` says half a second after it reached `reached`: where a
/// producer held by flow control stopped (one not held would have gone on).
pub async fn held_at(counter: &std::sync::atomic::AtomicU64, reached: u64) -> u64 {
    use std::sync::atomic::Ordering::SeqCst;
    bounded(async {
        while counter.load(SeqCst) < reached {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    counter.load(SeqCst)
}

/// Runs `fut` with a bound on its time, so that a hang fails the test
/// instead of stalling it.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test step did not finish in 30 s")
}

/// A cluster client of `servers`, with the test PKI's client certificate.
pub async fn cluster_of(
    pki: &Pki,
    servers: &[&Server],
    options: quicall::ClusterOptions,
) -> quicall::Cluster {
    let list = servers
        .iter()
        .map(|s| (s.local_addr().to_string(), "localhost"));
    cluster_at(pki, list, options).await
}

/// A cluster client of the servers at these addresses, each expected to
/// carry the given TLS name, with the test PKI's client certificate.
pub async fn cluster_at(
    pki: &Pki,
    servers: impl IntoIterator<Item = (String, &str)>,
    options: quicall::ClusterOptions,
) -> quicall::Cluster {
    let list = servers
        .into_iter()
        .map(|(addr, name)| (addr, name.to_string()))
        .collect();
    quicall::Cluster::new(quicall::Discovery::Static(list), pki.client_tls(), options)
        .await
        .unwrap()
}

/// A loopback UDP proxy for one client that drops, delays and reorders a
/// share of the datagrams in each direction: the network faults the kernel
/// here cannot inject.
pub struct LossyProxy {
    pub addr: SocketAddr,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub delayed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// While set, every datagram is dropped, both ways: the server looks
    /// dead without having closed anything (SIGKILL, a vanished host, a
    /// partition).
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Forwards to `upstream`, dropping a `loss` share of datagrams and
    /// holding back a `delay` share by up to `max_delay` (which reorders them).
    pub async fn start(upstream: SocketAddr, loss: f64, delay: f64, max_delay: Duration) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::net::UdpSocket;

        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(upstream).await.unwrap();
        let addr = front.local_addr().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let delayed = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, l, c) = (dropped.clone(), delayed.clone(), cut.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut up = vec![0u8; 65536];
            let mut down = vec![0u8; 65536];
            // Decides a datagram's fate: None to drop it, else its delay.
            let fate = move || {
                let r = fastrand::f64();
                if c.load(Ordering::Relaxed) || r < loss {
                    d.fetch_add(1, Ordering::Relaxed);
                    None
                } else if r < loss + delay {
                    l.fetch_add(1, Ordering::Relaxed);
                    Some(max_delay.mul_f64(fastrand::f64()))
                } else {
                    Some(Duration::ZERO)
                }
            };
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let Some(wait) = fate() else { continue };
                        let (back, data) = (back.clone(), up[..n].to_vec());
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = back.send(&data).await;
                        });
                    }
                    r = back.recv(&mut down) => {
                        let Ok(n) = r else { return };
                        let (Some(to), Some(wait)) = (client, fate()) else { continue };
                        let (front, data) = (front.clone(), down[..n].to_vec());
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = front.send_to(&data, to).await;
                        });
                    }
                }
            }
        });
        Self {
            addr,
            dropped,
            delayed,
            cut,
            task,
        }
    }

    /// A proxy that forwards everything (until cut).
    pub async fn clean(upstream: SocketAddr) -> Self {
        Self::start(upstream, 0.0, 0.0, Duration::ZERO).await
    }

    /// Drops every datagram from now on, both ways.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client that keeps calling `add` until stopped, and reports every failure.
pub struct GoodClient {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<quicall::Status>)>,
}

impl GoodClient {
    pub async fn start(pki: &Pki, server: &Server) -> Self {
        let client = connect(pki, server).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut ok, mut failures) = (0, Vec::new());
                let mut i = 0i64;
                // Bounded: at most 100,000 calls, and stopped by the test.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                    let request = quicall::demo::AddRequest {
                        a: zerocopy::little_endian::I64::new(i),
                        b: zerocopy::little_endian::I64::new(1),
                    };
                    let options = quicall::CallOptions::deadline(Duration::from_secs(10));
                    match client
                        .call_with(&quicall::demo::ADD, &request, options)
                        .await
                    {
                        Ok(reply) if reply.sum.get() == i + 1 => ok += 1,
                        Ok(_) => failures.push(quicall::Status::internal("wrong sum")),
                        Err(status) => failures.push(status),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                client.close();
                (ok, failures)
            }
        });
        GoodClient { stop, task }
    }

    /// Stops the client; asserts that all of its calls succeeded, and
    /// returns how many it made.
    pub async fn check(self) -> usize {
        let (ok, failures) = self.finish().await;
        assert!(
            failures.is_empty(),
            "{} of {} good calls failed: {:?}",
            failures.len(),
            ok + failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(ok > 0, "the good client made no call");
        ok
    }

    /// Stops the client: its successful calls and its failures.
    pub async fn finish(self) -> (usize, Vec<quicall::Status>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        bounded(self.task).await.unwrap()
    }
}

/// Waits until the server holds no stream, call or request byte, and at most
/// `connections` connection slots.
pub async fn settles(server: &Server, connections: usize) -> quicall::Gauges {
    bounded(async {
        loop {
            let g = server.gauges();
            if g.streams == 0
                && g.calls_in_flight == 0
                && g.buffered_request_bytes == 0
                && g.buffered_response_bytes == 0
                && g.connection_slots <= connections
            {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
