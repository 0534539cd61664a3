use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Connection, Limits, ServerTls, TransportError};

/// A QUIC server endpoint: a UDP socket that accepts TLS 1.3 connections.
///
/// ```no_run
/// # async fn run(tls: quicall_transport::ServerTls) -> Result<(), quicall_transport::TransportError> {
/// use quicall_transport::{Limits, ServerEndpoint};
/// let server = ServerEndpoint::bind("127.0.0.1:4433".parse().unwrap(), tls, Limits::default())?;
/// while let Some(incoming) = server.accept().await {
///     tokio::spawn(async move {
///         if let Ok(conn) = incoming.accept().await {
///             println!("client {:?}", conn.peer().map(|p| p.name().to_owned()));
///         }
///     });
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ServerEndpoint {
    endpoint: quinn::Endpoint,
    /// For peers on a loopback address (a larger MTU bound); the endpoint's
    /// own configuration serves the others.
    loopback_config: Arc<quinn::ServerConfig>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    handshake_timeout: Duration,
    handshaking: Arc<AtomicUsize>,
    retry_above: usize,
}

impl ServerEndpoint {
    /// Binds a UDP socket at `addr` and serves QUIC on it with `tls`.
    pub fn bind(addr: SocketAddr, tls: ServerTls, limits: Limits) -> Result<Self, TransportError> {
        let crypto = tls.quic_config()?;
        let config_from = |peer: IpAddr| {
            let mut config = quinn::ServerConfig::with_crypto(crypto.clone());
            config.transport_config(limits.transport_config(peer));
            config
        };
        let loopback_config = Arc::new(config_from(Ipv4Addr::LOCALHOST.into()));
        let endpoint = crate::socket::endpoint(
            addr,
            &limits,
            Some(config_from(Ipv4Addr::UNSPECIFIED.into())),
        )?;
        Ok(Self {
            endpoint,
            loopback_config,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            max_connections: limits.max_connections,
            handshake_timeout: limits.handshake_timeout,
            handshaking: Arc::new(AtomicUsize::new(0)),
            retry_above: limits.retry_above_handshakes,
        })
    }

    /// The bound address (with the port chosen when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Waits for the next connection attempt. Attempts beyond
    /// [`Limits::max_connections`] are refused here and not returned.
    /// Returns `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        loop {
            let incoming = self.endpoint.accept().await?;
            if !incoming.remote_address_validated()
                && incoming.may_retry()
                && self.handshaking.load(Ordering::Relaxed) >= self.retry_above
            {
                // Stateless: the client must come back with the token.
                let _ = incoming.retry();
                continue;
            }
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    self.handshaking.fetch_add(1, Ordering::Relaxed);
                    let loopback = crate::limits::is_loopback(incoming.remote_address().ip());
                    return Some(Incoming {
                        config: loopback.then(|| self.loopback_config.clone()),
                        inner: incoming,
                        slot,
                        handshake_timeout: self.handshake_timeout,
                        handshaking: HandshakeGauge(self.handshaking.clone()),
                    });
                }
                Err(_) => {
                    tracing::warn!(peer = %incoming.remote_address(), "connection limit reached; refused");
                    incoming.refuse();
                }
            }
        }
    }

    /// Connections counted against [`Limits::max_connections`] now:
    /// handshaking or open, until their last handle is dropped.
    pub fn connection_slots_in_use(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshaking.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Closes every connection at once with `code` and `reason`.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.endpoint.close(quinn::VarInt::from_u32(code), reason);
    }

    /// Waits until every connection is closed and its close is sent.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// A connection attempt, not yet accepted.
#[derive(Debug)]
pub struct Incoming {
    inner: quinn::Incoming,
    /// The configuration for this peer where it is not the endpoint's.
    config: Option<Arc<quinn::ServerConfig>>,
    slot: OwnedSemaphorePermit,
    handshake_timeout: Duration,
    handshaking: HandshakeGauge,
}

/// Counts a handshake in progress while alive.
#[derive(Debug)]
struct HandshakeGauge(Arc<AtomicUsize>);

impl Drop for HandshakeGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Incoming {
    /// The address the attempt comes from.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Runs the handshake (bounded by the handshake timeout) and returns the
    /// connection with the client's verified identity.
    pub async fn accept(self) -> Result<Connection, TransportError> {
        let connecting = match self.config {
            Some(config) => self.inner.accept_with(config)?,
            None => self.inner.accept()?,
        };
        let conn = tokio::time::timeout(self.handshake_timeout, connecting)
            .await
            .map_err(|_| TransportError::HandshakeTimeout)??;
        drop(self.handshaking);
        Ok(Connection::new(conn, Some(self.slot)))
    }

    /// Refuses the attempt (the client sees CONNECTION_REFUSED at once).
    pub fn refuse(self) {
        self.inner.refuse();
    }
}
