//! The wire format: pure encoding and decoding of quicall's headers, with no I/O.
//!
//! A call is one bidirectional QUIC stream. The client writes a
//! [`RequestHeader`] (24 bytes) and the request body, then finishes its side;
//! the server writes a [`ResponseHeader`] (8 bytes) and the response body (or,
//! for a failed call, a UTF-8 message), then finishes. All integers are
//! little-endian and unaligned. `docs/wire.md` is the byte-exact specification.
//!
//! ```
//! use quicall_rpc::wire::{RequestHead, decode_request, REQUEST_HEADER_LEN};
//! use std::time::Duration;
//!
//! let head = RequestHead { method_id: 7, body_len: 16, deadline: Some(Duration::from_millis(250)), metadata_len: None, stream: false };
//! let bytes = head.encode();
//! assert_eq!(bytes.len(), REQUEST_HEADER_LEN);
//! assert_eq!(decode_request(&bytes, 1 << 20), Ok(head));
//! ```

mod error_code;
mod message;
mod request;
mod response;

pub use error_code::ErrorCode;
pub use message::{MESSAGE_HEADER_LEN, decode_message, message_header};
pub use request::{
    REQUEST_HEADER_LEN, REQUEST_METADATA, REQUEST_STREAM, RequestHead, RequestHeader,
    decode_request, set_deadline,
};
pub use response::{
    RESPONSE_HEADER_LEN, ResponseFlags, ResponseHead, ResponseHeader, decode_response,
};

/// The protocol version this crate speaks, first byte of every header.
pub const VERSION: u8 = 1;

/// Why a header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a header: the stream ended inside the header.
    #[error("truncated header: {got} of {need} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes a header needs.
        need: usize,
    },
    /// The version byte is not [`VERSION`].
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A flag bit or reserved field that must be zero is not.
    #[error("{field} is {value:#x}, must be 0 (bits this version does not define)")]
    Reserved {
        /// Which field: `flags` (unknown bits only) or `reserved`.
        field: &'static str,
        /// The bits that must be zero and are not.
        value: u32,
    },
    /// The body length is over the receiver's limit.
    #[error("body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length the header announces.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
}
