use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{VERSION, WireError};

/// Length of [`ResponseHeader`] on the wire.
pub const RESPONSE_HEADER_LEN: usize = size_of::<ResponseHeader>();

/// The response header, as laid out on the wire (8 bytes, little-endian).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | `version`: 1 |
/// | 1 | 1 | `flags`: bit 0 = NOT_PROCESSED, bit 1 = METADATA (a 2-byte length and a metadata block follow the header, before the body), others 0 |
/// | 2 | 2 | `status`: status code, 0 = OK |
/// | 4 | 4 | `body_len`: response body (OK) or UTF-8 message (otherwise) |
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ResponseHeader {
    /// Protocol version, [`VERSION`](super::VERSION).
    pub version: u8,
    /// [`ResponseFlags`] bits.
    pub flags: u8,
    /// Status code: 0 for success.
    pub status: U16,
    /// Length of the body (or error message) that follows.
    pub body_len: U32,
}

/// Response flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseFlags(u8);

impl ResponseFlags {
    /// The server did not start the handler: the call had no effect and is
    /// safe to send again, even for a method that is not idempotent.
    pub const NOT_PROCESSED: ResponseFlags = ResponseFlags(1);
    /// A metadata block follows the header: its length (u16, little-endian)
    /// and the block, then the body. Sent only to a caller whose request
    /// had the METADATA flag.
    pub const METADATA: ResponseFlags = ResponseFlags(2);
    /// One message of a server stream follows (`body_len` bytes), and more
    /// headers after it; `status` is 0. The stream's last header, without
    /// this flag, carries its status (section 15 of docs/wire.md).
    pub const MESSAGE: ResponseFlags = ResponseFlags(4);
    /// No flag.
    pub const NONE: ResponseFlags = ResponseFlags(0);
    const KNOWN: u8 = 7;

    /// These flags and `other`'s.
    pub fn with(self, other: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | other.0)
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// A validated response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code as sent: 0 is OK.
    pub status: u16,
    /// Flags.
    pub flags: ResponseFlags,
    /// Length of the body or message that follows.
    pub body_len: u32,
}

impl ResponseHead {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let header = ResponseHeader {
            version: VERSION,
            flags: self.flags.0,
            status: U16::new(self.status),
            body_len: U32::new(self.body_len),
        };
        let mut out = [0u8; RESPONSE_HEADER_LEN];
        out.copy_from_slice(header.as_bytes());
        out
    }
}

/// Decodes and validates a response header from the start of `bytes`, with
/// the body length checked against `max_body` before any body is read.
pub fn decode_response(bytes: &[u8], max_body: u32) -> Result<ResponseHead, WireError> {
    let (header, _) = ResponseHeader::ref_from_prefix(bytes).map_err(|_| WireError::Truncated {
        got: bytes.len(),
        need: RESPONSE_HEADER_LEN,
    })?;
    if header.version != VERSION {
        return Err(WireError::UnsupportedVersion(header.version));
    }
    if header.flags & !ResponseFlags::KNOWN != 0 {
        return Err(WireError::Reserved {
            field: "flags",
            value: u32::from(header.flags & !ResponseFlags::KNOWN),
        });
    }
    let body_len = header.body_len.get();
    if body_len > max_body {
        return Err(WireError::TooLarge {
            len: body_len,
            max: max_body,
        });
    }
    Ok(ResponseHead {
        status: header.status.get(),
        flags: ResponseFlags(header.flags),
        body_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_byte_exact() {
        let head = ResponseHead {
            status: 12,
            flags: ResponseFlags::NOT_PROCESSED,
            body_len: 0x0102,
        };
        assert_eq!(head.encode(), [1, 1, 12, 0, 0x02, 0x01, 0, 0]);
        assert_eq!(decode_response(&head.encode(), 0x0102), Ok(head));
    }

    #[test]
    fn truncated_oversized_and_reserved() {
        let head = ResponseHead {
            status: 0,
            flags: ResponseFlags::NONE,
            body_len: 64,
        };
        let bytes = head.encode();
        for n in 0..RESPONSE_HEADER_LEN {
            assert!(matches!(
                decode_response(&bytes[..n], 64),
                Err(WireError::Truncated { .. })
            ));
        }
        assert_eq!(
            decode_response(&bytes, 63),
            Err(WireError::TooLarge { len: 64, max: 63 })
        );
        let mut bad = bytes;
        // Bit 2 is MESSAGE (a server stream's); bits 3 to 7 are reserved.
        bad[1] = 0x8e;
        assert_eq!(
            decode_response(&bad, 64),
            Err(WireError::Reserved {
                field: "flags",
                value: 0x88
            })
        );
        bad = bytes;
        bad[0] = 0;
        assert_eq!(
            decode_response(&bad, 64),
            Err(WireError::UnsupportedVersion(0))
        );
    }
}
