use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::OwnedSemaphorePermit;

use crate::liveness::{Silence, WatchGuard};
use crate::{Failure, PeerIdentity};

/// An established QUIC connection with its verified peer identity.
///
/// Cloning is cheap and gives another handle to the same connection. On a
/// server, the connection counts against [`Limits::max_connections`](crate::Limits)
/// until the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Connection {
    inner: quinn::Connection,
    peer: Option<Arc<PeerIdentity>>,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
    /// Client side: set by the liveness watchdog when it gives up.
    silence: Option<Arc<Silence>>,
    _watch: Option<Arc<WatchGuard>>,
}

impl Connection {
    pub(crate) fn new(inner: quinn::Connection, slot: Option<OwnedSemaphorePermit>) -> Self {
        let peer = inner
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.first().and_then(|leaf| PeerIdentity::from_der(leaf)))
            .map(Arc::new);
        Self {
            inner,
            peer,
            _slot: slot.map(Arc::new),
            silence: None,
            _watch: None,
        }
    }

    /// Starts the liveness watchdog (see [`Limits::liveness_timeout`](crate::Limits::liveness_timeout)):
    /// must be called within a tokio runtime.
    pub(crate) fn watched(
        mut self,
        floor: std::time::Duration,
        keep_alive: std::time::Duration,
    ) -> Self {
        let silence = Arc::new(Silence::default());
        let task = tokio::spawn(crate::liveness::watch(
            self.inner.clone(),
            silence.clone(),
            floor,
            keep_alive,
        ));
        self.silence = Some(silence);
        self._watch = Some(Arc::new(WatchGuard(task.abort_handle())));
        self
    }

    /// How long the server had been silent when this client gave the
    /// connection up (see [`Limits::liveness_timeout`](crate::Limits::liveness_timeout)),
    /// or `None` if it did not.
    pub fn silent_for(&self) -> Option<std::time::Duration> {
        self.silence.as_ref().and_then(|s| s.get())
    }

    /// What the connection's end means, or `None` while it is open: a
    /// connection given up because its server went silent is a
    /// [`Failure::Timeout`], not a close.
    pub fn failure(&self) -> Option<Failure> {
        let reason = self.inner.close_reason()?;
        Some(match self.silent_for() {
            Some(_) => Failure::Timeout,
            None => Failure::of(&reason),
        })
    }

    /// The peer's verified certificate identity, or `None` when the peer
    /// presented no certificate (a client of a server that does not require one).
    pub fn peer(&self) -> Option<&Arc<PeerIdentity>> {
        self.peer.as_ref()
    }

    /// The peer's UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Opens a bidirectional stream (waits while the peer's stream limit is reached).
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        self.inner.open_bi().await
    }

    /// Waits for the peer to open a bidirectional stream.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        self.inner.accept_bi().await
    }

    /// Why the connection closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.close_reason()
    }

    /// Waits until the connection is closed, and returns why.
    pub async fn closed(&self) -> ConnectionError {
        self.inner.closed().await
    }

    /// Closes the connection at once with an application error code and reason;
    /// streams still open are abandoned.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.inner.close(VarInt::from_u32(code), reason);
    }

    /// The underlying quinn connection (statistics, RTT ...).
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }
}
