use quinn::ConnectionError;

/// Why an endpoint could not be built or a connection not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TLS or transport configuration is unusable (no CA, bad key ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP socket: {0}")]
    Bind(#[from] std::io::Error),
    /// The server name cannot be used for TLS, or the address is unusable.
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake did not finish within the configured timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Server side: a newer handshake pushed this one out of the pool of
    /// handshakes in progress (see [`Limits::max_handshakes`](crate::Limits::max_handshakes)).
    #[error("handshake evicted by a newer one (too many handshakes in progress)")]
    HandshakeEvicted,
    /// The pool holds as many connections as it may.
    #[error("connection pool full ({0} connections)")]
    PoolFull(usize),
    /// The server is shutting down; it takes no new calls.
    #[error("server is draining")]
    Draining,
    /// The last connection attempt to this server failed; the next one waits.
    #[error("{reason}; next connection attempt in {retry_in:?}")]
    BackingOff {
        /// Why the last attempt failed.
        failure: Failure,
        /// The same, in words (the TLS reason of a refused handshake ...).
        reason: std::sync::Arc<str>,
        /// Time until the next attempt.
        retry_in: std::time::Duration,
    },
    /// The pool is gone.
    #[error("connection pool closed")]
    Closed,
    /// The connection failed or was closed.
    #[error("{failure}: {error}")]
    Connection {
        /// What the failure means to a caller.
        failure: Failure,
        /// The quinn error.
        error: ConnectionError,
    },
}

impl TransportError {
    /// What this error means to a caller.
    pub fn failure(&self) -> Failure {
        match self {
            TransportError::Config(_) | TransportError::Connect(_) => Failure::Config,
            TransportError::PoolFull(_) => Failure::Config,
            TransportError::Draining | TransportError::Closed => Failure::Closed,
            TransportError::BackingOff { failure, .. } => *failure,
            TransportError::Bind(_) => Failure::Unreachable,
            TransportError::HandshakeTimeout | TransportError::HandshakeEvicted => Failure::Timeout,
            TransportError::Connection { failure, .. } => *failure,
        }
    }
}

impl From<ConnectionError> for TransportError {
    fn from(error: ConnectionError) -> Self {
        TransportError::Connection {
            failure: Failure::of(&error),
            error,
        }
    }
}

/// What a connection error means to the one who made the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// TLS failed: the peer's certificate was not trusted, or the peer refused
    /// ours (none given, unknown CA, expired ...).
    #[error("authentication failed")]
    Authentication,
    /// The peer did not answer in time (handshake or idle timeout).
    #[error("timed out")]
    Timeout,
    /// Nothing answered at the address, or the peer refused the connection.
    #[error("unreachable")]
    Unreachable,
    /// The connection was closed (by either side) or reset.
    #[error("connection closed")]
    Closed,
    /// The peer broke the QUIC protocol, or we did.
    #[error("protocol violation")]
    Protocol,
    /// Local configuration is unusable.
    #[error("configuration")]
    Config,
}

impl Failure {
    /// Classifies a quinn connection error.
    pub fn of(error: &ConnectionError) -> Self {
        match error {
            ConnectionError::TransportError(e) if is_crypto(u64::from(e.code)) => {
                Failure::Authentication
            }
            ConnectionError::ConnectionClosed(close) if is_crypto(u64::from(close.error_code)) => {
                Failure::Authentication
            }
            ConnectionError::ConnectionClosed(close)
                if u64::from(close.error_code) == CONNECTION_REFUSED =>
            {
                Failure::Unreachable
            }
            ConnectionError::TransportError(_) | ConnectionError::ConnectionClosed(_) => {
                Failure::Protocol
            }
            ConnectionError::VersionMismatch => Failure::Protocol,
            ConnectionError::TimedOut => Failure::Timeout,
            ConnectionError::ApplicationClosed(_)
            | ConnectionError::Reset
            | ConnectionError::LocallyClosed => Failure::Closed,
            ConnectionError::CidsExhausted => Failure::Config,
        }
    }
}

/// A sentence for people about a failed connection, naming the TLS alert in
/// words when the handshake was refused.
///
/// ```
/// use quicall_transport::{describe, quinn::ConnectionError};
/// assert_eq!(describe(&ConnectionError::TimedOut), "timed out");
/// ```
pub fn describe(error: &ConnectionError) -> String {
    let (code, by_peer, reason) = match error {
        ConnectionError::TransportError(e) => (u64::from(e.code), false, e.reason.as_str()),
        ConnectionError::ConnectionClosed(close) => (
            u64::from(close.error_code),
            true,
            std::str::from_utf8(&close.reason).unwrap_or(""),
        ),
        other => return other.to_string(),
    };
    if !is_crypto(code) {
        return error.to_string();
    }
    let alert = match code - 0x100 {
        40 => "handshake failure",
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        51 => "decrypt error",
        80 => "internal error",
        116 => "certificate required",
        120 => "no application protocol",
        _ => "TLS alert",
    };
    let detail = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    if by_peer {
        format!("the peer refused the handshake: {alert}{detail}")
    } else {
        format!("the peer's certificate was refused here: {alert}{detail}")
    }
}

/// QUIC transport error CONNECTION_REFUSED (RFC 9000, section 20.1).
const CONNECTION_REFUSED: u64 = 0x2;

/// CRYPTO_ERROR codes 0x0100-0x01ff carry a TLS alert (RFC 9001, section 4.8).
fn is_crypto(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}
