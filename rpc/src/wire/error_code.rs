use std::fmt;

/// QUIC application error codes quicall uses to reset or stop a stream and to
/// close a connection (RFC 9000 `RESET_STREAM`, `STOP_SENDING` and
/// `CONNECTION_CLOSE` frames of type 0x1d).
///
/// ```
/// use quicall_rpc::wire::ErrorCode;
/// assert_eq!(ErrorCode::CANCELLED.get(), 1);
/// assert_eq!(ErrorCode::from(7).to_string(), "ErrorCode(7)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(u32);

impl ErrorCode {
    /// No error: a normal close.
    pub const NO_ERROR: ErrorCode = ErrorCode(0);
    /// The caller abandoned the call (its future was dropped or its deadline
    /// passed). The server cancels the handler.
    pub const CANCELLED: ErrorCode = ErrorCode(1);
    /// The stream broke the protocol: a truncated header, or bytes after the body.
    pub const PROTOCOL: ErrorCode = ErrorCode(2);
    /// The server answered without reading the request body (unknown method,
    /// too large, overloaded ...) and asks the client to stop sending it.
    pub const REJECTED: ErrorCode = ErrorCode(3);
    /// The server is shutting down (connection close).
    pub const SHUTDOWN: ErrorCode = ErrorCode(4);
    /// The call timed out at the server before it could be answered.
    pub const TIMEOUT: ErrorCode = ErrorCode(5);
    /// The peer holds as many connections as the server allows one peer
    /// (connection close, right after the handshake).
    pub const PEER_LIMIT: ErrorCode = ErrorCode(6);

    /// The numeric code.
    pub const fn get(self) -> u32 {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_ERROR => "NO_ERROR",
            Self::CANCELLED => "CANCELLED",
            Self::PROTOCOL => "PROTOCOL",
            Self::REJECTED => "REJECTED",
            Self::SHUTDOWN => "SHUTDOWN",
            Self::TIMEOUT => "TIMEOUT",
            Self::PEER_LIMIT => "PEER_LIMIT",
            _ => return None,
        })
    }
}

impl From<u32> for ErrorCode {
    fn from(code: u32) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for quicall_transport::quinn::VarInt {
    fn from(code: ErrorCode) -> Self {
        quicall_transport::quinn::VarInt::from_u32(code.0)
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
