use std::time::Duration;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{VERSION, WireError};

/// Request flag: a metadata block of `metadata_len` bytes follows the
/// header, before the body; its sender reads metadata in the response.
pub const REQUEST_METADATA: u8 = 1;

/// Request flag: the requests are a stream of messages (a client-streaming
/// or bidirectional call, docs/wire.md section 16), each after a message
/// header, ended by the stream's FIN; `body_len` is 0.
pub const REQUEST_STREAM: u8 = 2;

const KNOWN_FLAGS: u8 = REQUEST_METADATA | REQUEST_STREAM;

/// Length of [`RequestHeader`] on the wire.
pub const REQUEST_HEADER_LEN: usize = size_of::<RequestHeader>();

/// The request header, as laid out on the wire (24 bytes, little-endian).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | `version`: 1 |
/// | 1 | 1 | `flags`: bit 0 = METADATA, bit 1 = STREAM, others 0 |
/// | 2 | 2 | `metadata_len`: with METADATA, the length of the metadata block that follows the header (before the body); otherwise 0 |
/// | 4 | 4 | `body_len`: bytes of request body that follow |
/// | 8 | 8 | `method_id`: FNV-1a 64 of the method name |
/// | 16 | 8 | `deadline_us`: remaining time budget in microseconds, 0 = none |
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RequestHeader {
    /// Protocol version, [`VERSION`](super::VERSION).
    pub version: u8,
    /// Flags: [`REQUEST_METADATA`], [`REQUEST_STREAM`], or 0.
    pub flags: u8,
    /// With [`REQUEST_METADATA`], the metadata block's length; otherwise 0.
    pub reserved: U16,
    /// Length of the body that follows the header.
    pub body_len: U32,
    /// The method's identifier.
    pub method_id: U64,
    /// Remaining time budget in microseconds when sent; 0 means none.
    pub deadline_us: U64,
}

/// A validated request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// The method's identifier.
    pub method_id: u64,
    /// Length of the body that follows.
    pub body_len: u32,
    /// The caller's remaining time budget, if it set one.
    pub deadline: Option<Duration>,
    /// With the METADATA flag, the length of the metadata block between the
    /// header and the body (0 for a caller that sends none but reads the
    /// response's); `None` without the flag.
    pub metadata_len: Option<u16>,
    /// The STREAM flag: the requests follow as a stream of messages
    /// (`body_len` is then 0).
    pub stream: bool,
}

impl RequestHead {
    /// The header's bytes. A deadline is rounded up to whole microseconds and
    /// capped at `u64::MAX` microseconds; a zero deadline is sent as 1 µs, so
    /// that it stays distinct from "none".
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let deadline_us = deadline_micros(self.deadline);
        let header = RequestHeader {
            version: VERSION,
            flags: if self.metadata_len.is_some() {
                REQUEST_METADATA
            } else {
                0
            } | if self.stream { REQUEST_STREAM } else { 0 },
            reserved: U16::new(self.metadata_len.unwrap_or(0)),
            body_len: U32::new(self.body_len),
            method_id: U64::new(self.method_id),
            deadline_us: U64::new(deadline_us),
        };
        let mut out = [0u8; REQUEST_HEADER_LEN];
        out.copy_from_slice(header.as_bytes());
        out
    }
}

/// Rewrites the deadline of an encoded request header in place (a retry or
/// hedge sends the budget left, not the budget at the first attempt).
///
/// ```
/// use quicall_rpc::wire::{RequestHead, decode_request, set_deadline};
/// use std::time::Duration;
/// let mut bytes = RequestHead { method_id: 1, body_len: 0, deadline: None, metadata_len: None, stream: false }.encode();
/// set_deadline(&mut bytes, Some(Duration::from_millis(3)));
/// assert_eq!(decode_request(&bytes, 0).unwrap().deadline, Some(Duration::from_millis(3)));
/// ```
pub fn set_deadline(header: &mut [u8], deadline: Option<Duration>) {
    if let Ok((header, _)) = RequestHeader::mut_from_prefix(header) {
        header.deadline_us = U64::new(deadline_micros(deadline));
    }
}

fn deadline_micros(deadline: Option<Duration>) -> u64 {
    match deadline {
        None => 0,
        Some(d) => u64::try_from(d.as_nanos().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1),
    }
}

/// Decodes and validates a request header from the start of `bytes`: the
/// version, the reserved fields, and the body length against `max_body`
/// (checked before any body is read).
pub fn decode_request(bytes: &[u8], max_body: u32) -> Result<RequestHead, WireError> {
    let (header, _) = RequestHeader::ref_from_prefix(bytes).map_err(|_| WireError::Truncated {
        got: bytes.len(),
        need: REQUEST_HEADER_LEN,
    })?;
    if header.version != VERSION {
        return Err(WireError::UnsupportedVersion(header.version));
    }
    if header.flags & !KNOWN_FLAGS != 0 {
        return Err(WireError::Reserved {
            field: "flags",
            value: u32::from(header.flags & !KNOWN_FLAGS),
        });
    }
    let metadata_len = if header.flags & REQUEST_METADATA != 0 {
        Some(header.reserved.get())
    } else if header.reserved.get() != 0 {
        return Err(WireError::Reserved {
            field: "reserved",
            value: u32::from(header.reserved.get()),
        });
    } else {
        None
    };
    let body_len = header.body_len.get();
    let stream = header.flags & REQUEST_STREAM != 0;
    if stream && body_len != 0 {
        return Err(WireError::Reserved {
            field: "body_len",
            value: body_len,
        });
    }
    if body_len > max_body {
        return Err(WireError::TooLarge {
            len: body_len,
            max: max_body,
        });
    }
    let deadline_us = header.deadline_us.get();
    Ok(RequestHead {
        method_id: header.method_id.get(),
        body_len,
        deadline: (deadline_us != 0).then(|| Duration::from_micros(deadline_us)),
        metadata_len,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> RequestHead {
        RequestHead {
            method_id: 0x0123_4567_89ab_cdef,
            body_len: 300,
            deadline: Some(Duration::from_micros(1_500_000)),
            metadata_len: None,
            stream: false,
        }
    }

    #[test]
    fn metadata_flag_and_length() {
        let with = RequestHead {
            metadata_len: Some(0x0102),
            ..head()
        };
        let bytes = with.encode();
        assert_eq!(&bytes[..4], &[1, 1, 0x02, 0x01]);
        assert_eq!(decode_request(&bytes, 300), Ok(with));
        let empty = RequestHead {
            metadata_len: Some(0),
            ..head()
        };
        assert_eq!(decode_request(&empty.encode(), 300), Ok(empty));
        // Without the flag, the field stays reserved.
        let mut bad = head().encode();
        bad[2] = 1;
        assert!(matches!(
            decode_request(&bad, 300),
            Err(WireError::Reserved {
                field: "reserved",
                ..
            })
        ));
        bad = head().encode();
        bad[1] = 4;
        assert!(matches!(
            decode_request(&bad, 300),
            Err(WireError::Reserved {
                field: "flags",
                value: 4
            })
        ));
    }

    #[test]
    fn stream_flag_and_empty_body() {
        let stream = RequestHead {
            stream: true,
            body_len: 0,
            metadata_len: Some(5),
            ..head()
        };
        let bytes = stream.encode();
        assert_eq!(&bytes[..8], &[1, 3, 5, 0, 0, 0, 0, 0]);
        assert_eq!(decode_request(&bytes, 0), Ok(stream));
        // A stream's requests come as messages, never as a body.
        let mut bad = bytes;
        bad[4] = 1;
        assert_eq!(
            decode_request(&bad, 300),
            Err(WireError::Reserved {
                field: "body_len",
                value: 1
            })
        );
    }

    #[test]
    fn layout_is_byte_exact() {
        let bytes = head().encode();
        assert_eq!(
            bytes,
            [
                1, 0, 0, 0, // version, flags, reserved
                0x2c, 0x01, 0, 0, // body_len 300
                0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // method id
                0x60, 0xe3, 0x16, 0, 0, 0, 0, 0, // 1_500_000 us
            ]
        );
    }

    #[test]
    fn round_trip() {
        assert_eq!(decode_request(&head().encode(), 300), Ok(head()));
        let none = RequestHead {
            deadline: None,
            ..head()
        };
        assert_eq!(decode_request(&none.encode(), 300), Ok(none));
    }

    #[test]
    fn sub_microsecond_deadlines_stay_deadlines() {
        let tiny = RequestHead {
            deadline: Some(Duration::ZERO),
            ..head()
        };
        let decoded = decode_request(&tiny.encode(), u32::MAX).unwrap();
        assert_eq!(decoded.deadline, Some(Duration::from_micros(1)));
        let huge = RequestHead {
            deadline: Some(Duration::MAX),
            ..head()
        };
        let decoded = decode_request(&huge.encode(), u32::MAX).unwrap();
        assert_eq!(decoded.deadline, Some(Duration::from_micros(u64::MAX)));
    }

    #[test]
    fn truncated_at_every_length() {
        let bytes = head().encode();
        for n in 0..REQUEST_HEADER_LEN {
            assert_eq!(
                decode_request(&bytes[..n], u32::MAX),
                Err(WireError::Truncated {
                    got: n,
                    need: REQUEST_HEADER_LEN
                })
            );
        }
    }

    #[test]
    fn trailing_bytes_are_the_body_not_the_header() {
        let mut bytes = head().encode().to_vec();
        bytes.extend_from_slice(&[0xff; 10]);
        assert_eq!(decode_request(&bytes, 300), Ok(head()));
    }

    #[test]
    fn oversized_body_is_rejected_from_the_header() {
        assert_eq!(
            decode_request(&head().encode(), 299),
            Err(WireError::TooLarge { len: 300, max: 299 })
        );
        let mut lying = head().encode();
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_request(&lying, 4 << 20),
            Err(WireError::TooLarge {
                len: u32::MAX,
                max: 4 << 20
            })
        );
    }

    #[test]
    fn bad_version_and_reserved_bits() {
        let mut bytes = head().encode();
        bytes[0] = 2;
        assert_eq!(
            decode_request(&bytes, u32::MAX),
            Err(WireError::UnsupportedVersion(2))
        );
        let mut bytes = head().encode();
        bytes[1] = 0x80;
        assert_eq!(
            decode_request(&bytes, u32::MAX),
            Err(WireError::Reserved {
                field: "flags",
                value: 0x80
            })
        );
        let mut bytes = head().encode();
        bytes[3] = 1;
        assert_eq!(
            decode_request(&bytes, u32::MAX),
            Err(WireError::Reserved {
                field: "reserved",
                value: 0x100
            })
        );
    }
}
