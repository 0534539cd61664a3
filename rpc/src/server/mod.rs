//! The server: a router of methods served on a QUIC endpoint, one task per
//! call, with limits, deadlines, cancellation and graceful shutdown.

mod access;
mod call;
mod context;
mod intercept;
mod limiter;
mod options;
mod requests;
mod router;
mod shares;
mod unwind;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use quicall_transport::{Incoming, ServerEndpoint, ServerTls, TransportError};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use access::Access;
pub use context::Context;
pub use intercept::{InterceptFuture, Interceptor, Outcome};
pub use options::ServerOptions;
pub use requests::Requests;
pub use router::{RouteError, Router};
use shares::{PeerKey, PeerLimits, Peers};
pub(crate) use unwind::panic_message;

use crate::wire::ErrorCode;

/// State shared by every task of one server.
struct Shared {
    router: Router,
    options: ServerOptions,
    /// One permit per call between admission and answer.
    calls: Semaphore,
    /// One permit per byte of request body held in memory.
    body_bytes: Semaphore,
    draining: AtomicBool,
    /// Streams being served (from their first byte to their last).
    streams: AtomicUsize,
    /// Bytes of responses taken from handlers and not yet taken by QUIC.
    response_bytes: AtomicUsize,
    /// Each peer's share of calls, request bytes and connections.
    peers: Peers,
    /// Per-method metrics, and the registry that exports them.
    registry: prometheus_client::registry::Registry,
    /// The adaptive admission of unary calls, if the options ask for it.
    limiter: Option<Arc<limiter::Limiter>>,
}

/// A running server. Dropping it closes it at once, like [`Server::abort`];
/// call [`Server::shutdown`] for a graceful stop.
///
/// ```no_run
/// use quicall_rpc::{Method, Router, Server, ServerOptions, Status};
/// # async fn run(tls: quicall_transport::ServerTls) -> Result<(), Box<dyn std::error::Error>> {
/// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
/// let router = Router::new().route(&ECHO, |_ctx, msg| async move { Ok::<_, Status>(msg) })?;
/// let server = Server::bind("127.0.0.1:4433".parse()?, tls, router, ServerOptions::default())?;
/// println!("listening on {}", server.local_addr());
/// tokio::signal::ctrl_c().await?;
/// let report = server.shutdown(std::time::Duration::from_secs(5)).await;
/// println!("{} calls were cut off", report.unfinished_calls);
/// # Ok(()) }
/// ```
pub struct Server {
    endpoint: Arc<ServerEndpoint>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

/// A server's resource gauges at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Gauges {
    /// QUIC connections open (quinn's count, including ones closing).
    pub connections: usize,
    /// Connections counted against the connection limit (handshaking or open).
    pub connection_slots: usize,
    /// Handshakes in progress.
    pub handshakes: usize,
    /// Streams being served.
    pub streams: usize,
    /// Calls admitted and not yet answered.
    pub calls_in_flight: usize,
    /// Bytes of request bodies held for calls.
    pub buffered_request_bytes: usize,
    /// Bytes of responses held while QUIC takes them: a unary answer, or
    /// the messages of a response stream gathered for one write (at most
    /// 64 KiB and one message per stream, whatever the handler produces; a
    /// handler's stream is not polled while its write waits). QUIC's own
    /// send buffer, bounded by the connection's send window, is not
    /// counted.
    pub buffered_response_bytes: usize,
    /// The adaptive concurrency limit now
    /// ([`ServerOptions::admission`]), or `None` without one.
    pub concurrency_limit: Option<usize>,
    /// Calls refused so far because the adaptive limit was reached.
    pub calls_shed: u64,
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Calls still running when the grace period ended, cut off by the close.
    pub unfinished_calls: usize,
}

impl Server {
    /// Binds `addr` with `tls` and starts serving `router` in the background
    /// (must be called within a tokio runtime).
    pub fn bind(
        addr: SocketAddr,
        tls: ServerTls,
        router: Router,
        options: ServerOptions,
    ) -> Result<Server, TransportError> {
        let endpoint = Arc::new(ServerEndpoint::bind(addr, tls, options.transport.clone())?);
        let local_addr = endpoint.local_addr()?;
        let peers = Peers::new(PeerLimits {
            calls: options.max_calls_per_peer,
            bytes: options.max_request_bytes_per_peer,
            connections: options.max_connections_per_peer,
        });
        let mut router = router;
        let mut metrics = crate::meter::Metrics::new("method");
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register_server(&mut registry);
        router.attach_meters(&metrics);
        let limiter = options.admission.map(|adaptive| {
            Arc::new(limiter::Limiter::new(
                adaptive,
                options.max_calls_in_flight,
                &mut registry,
            ))
        });
        let shared = Arc::new(Shared {
            registry,
            router,
            calls: Semaphore::new(options.max_calls_in_flight),
            body_bytes: Semaphore::new(options.max_buffered_request_bytes),
            options,
            peers,
            draining: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
            response_bytes: AtomicUsize::new(0),
            limiter,
        });
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        Ok(Server {
            endpoint,
            shared,
            local_addr,
            accept_task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's metrics in the Prometheus text format (OpenMetrics):
    /// per method, `quicall_server_calls_total{method, code}`,
    /// `quicall_server_call_duration_seconds` (a histogram with buckets,
    /// aggregatable across servers), `quicall_server_calls_in_flight`,
    /// `quicall_server_request_bytes_total`,
    /// `quicall_server_response_bytes_total`,
    /// `quicall_server_request_messages_total` and
    /// `quicall_server_response_messages_total` (one per unary call, each
    /// message of a stream). Status codes are labels: a
    /// handler's NOT_FOUND is told apart from an UNAVAILABLE.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.shared.registry);
        text
    }

    /// Serves [`Server::metrics_text`] over HTTP on `addr` (any path), for
    /// Prometheus to scrape, until the server is dropped; the address it
    /// listens on.
    pub async fn serve_metrics(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let shared = Arc::downgrade(&self.shared);
        crate::exporter::serve_http(addr, move || {
            let shared = shared.upgrade()?;
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &shared.registry);
            Some(text)
        })
        .await
    }

    /// Calls running now (admitted and not yet answered).
    pub fn calls_in_flight(&self) -> usize {
        self.shared.options.max_calls_in_flight - self.shared.calls.available_permits()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// The server's resource gauges now: what a test or a monitor watches to
    /// see that resources come back after a load or an attack.
    pub fn gauges(&self) -> Gauges {
        let options = &self.shared.options;
        Gauges {
            connections: self.endpoint.open_connections(),
            connection_slots: self.endpoint.connection_slots_in_use(),
            handshakes: self.endpoint.handshakes_in_progress(),
            streams: self.shared.streams.load(Ordering::Relaxed),
            calls_in_flight: self.calls_in_flight(),
            buffered_request_bytes: options.max_buffered_request_bytes
                - self.shared.body_bytes.available_permits(),
            buffered_response_bytes: self.shared.response_bytes.load(Ordering::Relaxed),
            concurrency_limit: self.shared.limiter.as_deref().map(limiter::Limiter::limit),
            calls_shed: self
                .shared
                .limiter
                .as_deref()
                .map_or(0, limiter::Limiter::shed),
        }
    }

    /// Shuts down gracefully: stops accepting connections and calls (new
    /// calls are answered UNAVAILABLE, marked not processed, so that clients
    /// may safely send them elsewhere), waits up to `grace` for the calls in
    /// flight to finish, lets their responses reach the callers
    /// ([`ServerOptions::shutdown_linger`]), then closes every connection.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.shared.draining.store(true, Ordering::SeqCst);
        let all = u32::try_from(self.shared.options.max_calls_in_flight).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(grace, self.shared.calls.acquire_many(all)).await;
        let unfinished_calls = match drained {
            Ok(_) => 0,
            Err(_) => self.calls_in_flight(),
        };
        // The last responses are written but may not be acknowledged yet:
        // closing now would discard them. Give them a moment.
        tokio::time::sleep(self.shared.options.shutdown_linger).await;
        self.endpoint
            .close(ErrorCode::SHUTDOWN.get(), b"server shutting down");
        // Bounded: the close is retransmitted for a few RTTs, then given up.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.accept_task.abort();
        let accept_task = std::mem::replace(&mut self.accept_task, tokio::spawn(async {}));
        // Once the accept task has let go of the endpoint, dropping `self`
        // lets quinn's driver close the UDP socket, so the port can be
        // bound again (a moment later, when the driver runs).
        let _ = accept_task.await;
        ShutdownReport { unfinished_calls }
    }
}

impl Server {
    /// Stops at once, without grace: every connection is closed now and
    /// calls in flight fail at their callers with UNAVAILABLE. What a crash
    /// looks like to clients, short of a silent one.
    pub fn abort(self) {
        // Dropping does it.
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.endpoint
            .close(ErrorCode::SHUTDOWN.get(), b"server dropped");
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("router", &self.shared.router)
            .finish_non_exhaustive()
    }
}

async fn accept_loop(endpoint: Arc<ServerEndpoint>, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        if shared.draining.load(Ordering::Relaxed) {
            incoming.refuse();
            continue;
        }
        tokio::spawn(serve_connection(shared.clone(), incoming));
    }
}

async fn serve_connection(shared: Arc<Shared>, incoming: Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.accept().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(%remote, "handshake refused or failed: {e}");
            return;
        }
    };
    let identity = conn.peer().cloned();
    let key = PeerKey::of(identity.as_deref(), remote.ip());
    let Some(share) = shared.peers.connect(key) else {
        tracing::debug!(%remote, peer = ?identity.as_deref().map(|p| p.name()), "too many connections from this peer; closed");
        conn.close(
            ErrorCode::PEER_LIMIT.get(),
            b"too many connections from this peer",
        );
        return;
    };
    tracing::debug!(%remote, peer = ?identity.as_deref().map(|p| p.name()), "connection established");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let arrival = shared.limiter.as_ref().map(limiter::Limiter::arrive);
                // Boxed: the call's future is about 2.5 KB, which the task
                // would otherwise copy whole each time it is moved (into the
                // task, and again when its stage changes); a box is moved
                // as a pointer.
                tokio::spawn(Box::pin(call::serve(
                    shared.clone(),
                    arrival,
                    share.peer().clone(),
                    identity.clone(),
                    remote,
                    send,
                    recv,
                )));
            }
            Err(e) => {
                tracing::debug!(%remote, "connection ended: {e}");
                return;
            }
        }
    }
}
