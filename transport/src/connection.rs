use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::OwnedSemaphorePermit;

use crate::PeerIdentity;

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
        }
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
