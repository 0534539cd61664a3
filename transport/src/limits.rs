use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Transport limits, with safe defaults, for servers and clients alike.
///
/// Every limit is checked before memory is committed: QUIC flow control bounds
/// what a peer may send before it is read, the stream limit bounds concurrent
/// calls per connection, and the connection limit bounds a server's peers.
///
/// ```
/// use quicall_transport::Limits;
/// use std::time::Duration;
/// let limits = Limits {
///     max_concurrent_streams: 256,
///     idle_timeout: Duration::from_secs(10),
///     ..Limits::default()
/// };
/// assert_eq!(limits.max_connections, Limits::default().max_connections);
/// ```
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bidirectional streams (calls) the peer may have open at once on one
    /// connection. Further calls wait for a stream to close. Default 1024.
    pub max_concurrent_streams: u32,
    /// Connections a server accepts at once; more are refused. Default 4096.
    pub max_connections: usize,
    /// Time allowed for the QUIC and TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection with no traffic for this long is closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Interval of keep-alive pings that hold an idle connection open, or
    /// `None` for none. Default 10 s (less than the idle timeout).
    pub keep_alive: Option<Duration>,
    /// Handshakes in progress on a server above which new connection attempts
    /// from addresses not yet validated must first echo a QUIC Retry token
    /// (one extra round trip), so that a flood of spoofed Initial packets
    /// costs the server no handshake state. Default 64; 0 makes every client
    /// prove its address.
    pub retry_above_handshakes: usize,
    /// Bytes the peer may send on one stream before it is read. Default 2 MiB.
    pub stream_receive_window: u32,
    /// Bytes the peer may send on a whole connection before they are read.
    /// Default 16 MiB.
    pub receive_window: u32,
    /// Bytes of unacknowledged data this side keeps in flight on a connection.
    /// Default 16 MiB.
    pub send_window: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 1024,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            retry_above_handshakes: 64,
            stream_receive_window: 2 << 20,
            receive_window: 16 << 20,
            send_window: 16 << 20,
        }
    }
}

impl Limits {
    /// The quinn transport configuration for a client: the server never opens
    /// streams towards a client, so it may open none.
    pub(crate) fn client_transport_config(&self) -> Arc<TransportConfig> {
        let mut config = self.base_config();
        config.max_concurrent_bidi_streams(VarInt::from_u32(0));
        Arc::new(config)
    }

    /// The quinn transport configuration for a server.
    pub(crate) fn transport_config(&self) -> Arc<TransportConfig> {
        Arc::new(self.base_config())
    }

    fn base_config(&self) -> TransportConfig {
        let mut config = TransportConfig::default();
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(self.keep_alive)
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window);
        config
    }
}
