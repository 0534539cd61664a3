use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{ClientTls, Connection, Limits, TransportError};

/// A QUIC client endpoint: one UDP socket per address family, shared by all
/// the connections it makes.
///
/// ```no_run
/// # async fn run(tls: quicall_transport::ClientTls) -> Result<(), quicall_transport::TransportError> {
/// use quicall_transport::{ClientEndpoint, Limits};
/// let client = ClientEndpoint::new(tls, Limits::default())?;
/// let conn = client.connect("127.0.0.1:4433".parse().unwrap(), "localhost").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Towards a peer on a network.
    config: quinn::ClientConfig,
    /// Towards a peer on a loopback address (a larger MTU bound).
    loopback_config: quinn::ClientConfig,
    limits: Limits,
    handshake_timeout: Duration,
    v4: Mutex<Option<quinn::Endpoint>>,
    v6: Mutex<Option<quinn::Endpoint>>,
}

impl ClientEndpoint {
    /// A client with the given TLS settings and limits. Sockets are bound on
    /// first use (must be called within a tokio runtime).
    pub fn new(tls: ClientTls, limits: Limits) -> Result<Self, TransportError> {
        let crypto = tls.quic_config()?;
        let config_towards = |peer: IpAddr| {
            let mut config = quinn::ClientConfig::new(crypto.clone());
            config.transport_config(limits.client_transport_config(peer));
            config
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config: config_towards(Ipv4Addr::UNSPECIFIED.into()),
                loopback_config: config_towards(Ipv4Addr::LOCALHOST.into()),
                handshake_timeout: limits.handshake_timeout,
                limits: limits.clone(),
                v4: Mutex::new(None),
                v6: Mutex::new(None),
            }),
        })
    }

    /// A client whose every connection uses `socket`: any [`quinn::AsyncUdpSocket`],
    /// for example one that wraps a real socket to observe, delay or drop
    /// datagrams in a test.
    pub fn with_socket(
        tls: ClientTls,
        limits: Limits,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
    ) -> Result<Self, TransportError> {
        let client = Self::new(tls, limits)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            client.inner.limits.endpoint_config(),
            None,
            socket,
            crate::timer::runtime(client.inner.limits.precise_timers),
        )?;
        *client.inner.v4.lock().unwrap_or_else(|e| e.into_inner()) = Some(endpoint.clone());
        *client.inner.v6.lock().unwrap_or_else(|e| e.into_inner()) = Some(endpoint);
        Ok(client)
    }

    fn endpoint(&self, remote: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
        let (slot, bind): (_, SocketAddr) = if remote.is_ipv4() {
            (&self.inner.v4, "0.0.0.0:0".parse().expect("valid address"))
        } else {
            (&self.inner.v6, "[::]:0".parse().expect("valid address"))
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(endpoint) = slot.as_ref() {
            return Ok(endpoint.clone());
        }
        let endpoint = crate::socket::endpoint(bind, &self.inner.limits, None)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Connects to `addr`, verifying that the server's certificate chains to a
    /// trusted CA and names `server_name` (a DNS name or an IP address).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, TransportError> {
        let endpoint = self.endpoint(addr)?;
        let config = if crate::limits::is_loopback(addr.ip()) {
            &self.inner.loopback_config
        } else {
            &self.inner.config
        };
        let connecting = endpoint.connect_with(config.clone(), addr, server_name)?;
        let conn = tokio::time::timeout(self.inner.handshake_timeout, connecting)
            .await
            .map_err(|_| TransportError::HandshakeTimeout)??;
        let conn = Connection::new(conn, None);
        Ok(match self.inner.limits.liveness() {
            Some((floor, keep_alive)) => conn.watched(floor, keep_alive),
            None => conn,
        })
    }

    /// Closes every connection of this endpoint at once.
    pub fn close(&self, code: u32, reason: &[u8]) {
        for slot in [&self.inner.v4, &self.inner.v6] {
            if let Some(endpoint) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                endpoint.close(quinn::VarInt::from_u32(code), reason);
            }
        }
    }
}
