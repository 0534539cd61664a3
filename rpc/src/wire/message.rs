//! The header before each message of a stream, in either direction: the
//! layout of a response header with only the MESSAGE flag and status 0.

use super::WireError;
use super::response::{RESPONSE_HEADER_LEN, ResponseFlags, ResponseHead, decode_response};

/// Length of a message header: `01 04 00 00` and the message's length
/// (u32, little-endian).
pub const MESSAGE_HEADER_LEN: usize = RESPONSE_HEADER_LEN;

/// The header of a `len`-byte message.
///
/// ```
/// use quicall_rpc::wire::{decode_message, message_header};
/// assert_eq!(message_header(8), [1, 4, 0, 0, 8, 0, 0, 0]);
/// assert_eq!(decode_message(&message_header(8), 8), Ok(8));
/// ```
pub fn message_header(len: u32) -> [u8; MESSAGE_HEADER_LEN] {
    ResponseHead {
        status: 0,
        flags: ResponseFlags::MESSAGE,
        body_len: len,
    }
    .encode()
}

/// Decodes a request stream's message header (docs/wire.md section 16):
/// the message's length, checked against `max` before the message is read.
/// Anything but `01 04 00 00` before the length is refused.
pub fn decode_message(bytes: &[u8], max: u32) -> Result<u32, WireError> {
    let head = decode_response(bytes, max)?;
    if head.flags != ResponseFlags::MESSAGE {
        return Err(WireError::Reserved {
            field: "flags",
            value: u32::from(head.flags.bits() ^ ResponseFlags::MESSAGE.bits()),
        });
    }
    if head.status != 0 {
        return Err(WireError::Reserved {
            field: "status",
            value: u32::from(head.status),
        });
    }
    Ok(head.body_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_message_layout_is_a_message() {
        assert_eq!(decode_message(&message_header(0), 0), Ok(0));
        assert_eq!(
            decode_message(&message_header(9), 8),
            Err(WireError::TooLarge { len: 9, max: 8 })
        );
        for (at, value) in [(0, 2), (1, 0), (1, 5), (1, 0x0c), (2, 1), (3, 1)] {
            let mut bad = message_header(4);
            bad[at] = value;
            assert!(decode_message(&bad, 8).is_err(), "byte {at} = {value}");
        }
        assert!(matches!(
            decode_message(&message_header(4)[..7], 8),
            Err(WireError::Truncated { .. })
        ));
    }
}
