use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::handshakes::Pool;
use crate::throttle::Throttle;
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
    pressure_timeout: Duration,
    handshakes: Arc<Mutex<Handshakes>>,
    retry_above: usize,
    refusals: Throttle,
    origin: Instant,
}

/// The handshakes in progress, and how to push each one out.
#[derive(Debug)]
struct Handshakes {
    pool: Pool,
    evict: HashMap<u64, oneshot::Sender<()>>,
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
            pressure_timeout: limits
                .handshake_timeout_under_pressure
                .min(limits.handshake_timeout),
            handshakes: Arc::new(Mutex::new(Handshakes {
                pool: Pool::new(limits.max_handshakes, limits.max_handshakes_per_address),
                evict: HashMap::new(),
            })),
            retry_above: limits.retry_above_handshakes,
            refusals: Throttle::new(Duration::from_secs(1)),
            origin: Instant::now(),
        })
    }

    /// The bound address (with the port chosen when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Waits for the next connection attempt. Attempts beyond
    /// [`Limits::max_connections`] are refused here and not returned; an
    /// attempt beyond [`Limits::max_handshakes`] (or its address's share)
    /// pushes the oldest handshake in progress out. Returns `None` once the
    /// endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        loop {
            let incoming = self.endpoint.accept().await?;
            if !incoming.remote_address_validated()
                && incoming.may_retry()
                && self.handshakes_in_progress() >= self.retry_above
            {
                // Stateless: the client must come back with the token.
                let _ = incoming.retry();
                continue;
            }
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let peer = incoming.remote_address().ip();
                    let (ticket, handshake_timeout) = self.admit(peer);
                    let loopback = crate::limits::is_loopback(peer);
                    return Some(Incoming {
                        config: loopback.then(|| self.loopback_config.clone()),
                        inner: incoming,
                        slot,
                        handshake_timeout,
                        ticket,
                    });
                }
                Err(_) => {
                    // An attacker can cause these: a line a second at most.
                    if let Some(held) = self.refusals.event(self.origin.elapsed()) {
                        tracing::warn!(
                            peer = %incoming.remote_address(),
                            "connection limit reached; refused (and {held} more since the last line)"
                        );
                    }
                    incoming.refuse();
                }
            }
        }
    }

    /// Enters a handshake from `peer` in the pool, pushing out the one the
    /// pool names; its ticket and timeout.
    fn admit(&self, peer: IpAddr) -> (Ticket, Duration) {
        let (tx, rx) = oneshot::channel();
        let mut handshakes = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        let admitted = handshakes.pool.admit(peer);
        if let Some(old) = admitted.evict
            && let Some(evict) = handshakes.evict.remove(&old)
        {
            let _ = evict.send(());
        }
        handshakes.evict.insert(admitted.id, tx);
        let timeout = if admitted.pressure {
            self.pressure_timeout
        } else {
            self.handshake_timeout
        };
        let ticket = Ticket {
            id: admitted.id,
            handshakes: self.handshakes.clone(),
            evicted: rx,
        };
        (ticket, timeout)
    }

    /// Connections counted against [`Limits::max_connections`] now:
    /// handshaking or open, until their last handle is dropped.
    pub fn connection_slots_in_use(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        let handshakes = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        handshakes.pool.len()
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
    ticket: Ticket,
}

/// A handshake's place in the pool: it leaves when dropped, and learns
/// through `evicted` that a newer one pushed it out.
#[derive(Debug)]
struct Ticket {
    id: u64,
    handshakes: Arc<Mutex<Handshakes>>,
    evicted: oneshot::Receiver<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut handshakes = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        handshakes.pool.remove(self.id);
        handshakes.evict.remove(&self.id);
    }
}

impl Incoming {
    /// The address the attempt comes from.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Runs the handshake (bounded by the handshake timeout, and ended
    /// early if a newer handshake pushes it out of the pool) and returns the
    /// connection with the client's verified identity.
    pub async fn accept(self) -> Result<Connection, TransportError> {
        let mut ticket = self.ticket;
        let connecting = match self.config {
            Some(config) => self.inner.accept_with(config)?,
            None => self.inner.accept()?,
        };
        let conn = tokio::select! {
            conn = tokio::time::timeout(self.handshake_timeout, connecting) => {
                conn.map_err(|_| TransportError::HandshakeTimeout)??
            }
            _ = &mut ticket.evicted => return Err(TransportError::HandshakeEvicted),
        };
        drop(ticket);
        Ok(Connection::new(conn, Some(self.slot)))
    }

    /// Refuses the attempt (the client sees CONNECTION_REFUSED at once).
    pub fn refuse(self) {
        self.inner.refuse();
    }
}
