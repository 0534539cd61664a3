//! Property tests of the header decoders and the message views: arbitrary
//! bytes never panic, every decoded header re-encodes to the same bytes,
//! every field's extremes survive a round trip, and a request stream's
//! message headers are accepted exactly as docs/wire.md specifies.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use quicall_rpc::Msg;
use quicall_rpc::wire::{
    MESSAGE_HEADER_LEN, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN, RequestHead, ResponseFlags,
    ResponseHead, WireError, decode_message, decode_request, decode_response, message_header,
};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Fixed {
    a: U64,
    b: U16,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Tailed {
    id: U16,
    rest: [U16],
}

fn deadline() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        Just(Some(Duration::ZERO)),
        Just(Some(Duration::MAX)),
        (0u64..=u64::MAX).prop_map(|us| Some(Duration::from_micros(us))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in any::<u32>()) {
        match decode_request(&bytes, max) {
            Ok(head) => {
                // A decoded header re-encodes to the same 24 bytes.
                prop_assert_eq!(&head.encode()[..], &bytes[..REQUEST_HEADER_LEN]);
                prop_assert!(head.body_len <= max);
            }
            Err(WireError::Truncated { got, need }) => {
                prop_assert!(bytes.len() < REQUEST_HEADER_LEN);
                prop_assert_eq!((got, need), (bytes.len(), REQUEST_HEADER_LEN));
            }
            Err(WireError::TooLarge { len, max: m }) => prop_assert!(len > m),
            Err(_) => {}
        }
    }

    #[test]
    fn response_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32), max in any::<u32>()) {
        if let Ok(head) = decode_response(&bytes, max) {
            prop_assert_eq!(&head.encode()[..], &bytes[..RESPONSE_HEADER_LEN]);
        }
    }

    #[test]
    fn request_headers_round_trip(method_id in any::<u64>(), body_len in any::<u32>(), deadline in deadline()) {
        let head = RequestHead { method_id, body_len, deadline, metadata_len: None, stream: false };
        let decoded = decode_request(&head.encode(), u32::MAX).unwrap();
        prop_assert_eq!(decoded.method_id, method_id);
        prop_assert_eq!(decoded.body_len, body_len);
        match deadline {
            None => prop_assert_eq!(decoded.deadline, None),
            Some(d) => {
                let got = decoded.deadline.unwrap();
                // Rounded up to a whole microsecond, at least 1, capped at u64::MAX µs.
                let expected = d.as_nanos().div_ceil(1000).clamp(1, u64::MAX as u128) as u64;
                prop_assert_eq!(got, Duration::from_micros(expected));
            }
        }
    }

    #[test]
    fn response_headers_round_trip(status in any::<u16>(), not_processed in any::<bool>(), body_len in any::<u32>()) {
        let flags = if not_processed { ResponseFlags::NOT_PROCESSED } else { ResponseFlags::NONE };
        let head = ResponseHead { status, flags, body_len };
        prop_assert_eq!(decode_response(&head.encode(), u32::MAX), Ok(head));
        if body_len > 0 {
            let refused = decode_response(&head.encode(), body_len - 1);
            prop_assert_eq!(refused, Err(WireError::TooLarge { len: body_len, max: body_len - 1 }));
        }
    }

    #[test]
    fn every_truncation_of_a_header_is_reported(method_id in any::<u64>(), body_len in any::<u32>(), cut in 0usize..REQUEST_HEADER_LEN) {
        let bytes = RequestHead { method_id, body_len, deadline: None, metadata_len: None, stream: false }.encode();
        prop_assert_eq!(
            decode_request(&bytes[..cut], u32::MAX),
            Err(WireError::Truncated { got: cut, need: REQUEST_HEADER_LEN })
        );
    }

    #[test]
    fn message_views_accept_exactly_their_sizes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let len = bytes.len();
        let body = Bytes::from(bytes);
        prop_assert_eq!(Msg::<Fixed>::exact(body.clone()).is_ok(), len == 10);
        // By the evolution rules every length reads: the known prefix in
        // place, the missing fields as zero.
        let evolved = Msg::<Fixed>::new(body.clone()).unwrap();
        let known = len.min(10);
        prop_assert_eq!(&evolved.as_bytes()[..known], &body[..known]);
        prop_assert!(evolved.as_bytes()[known..].iter().all(|&b| b == 0));
        prop_assert_eq!(Msg::<Tailed>::new(body.clone()).is_ok(), len >= 2 && len % 2 == 0);
        let raw = Msg::<[u8]>::new(body.clone()).unwrap();
        prop_assert_eq!(&*raw, &body[..]);
        if let Ok(tailed) = Msg::<Tailed>::new(body) {
            prop_assert_eq!(tailed.rest.len(), (len - 2) / 2);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Arbitrary bytes as a metadata block never panic; an accepted block
    /// has unique, valid keys, and rebuilding it entry by entry gives the
    /// same bytes.
    #[test]
    fn arbitrary_metadata_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(metadata) = quicall_rpc::Metadata::decode(Bytes::from(bytes.clone()), 64) {
            let mut rebuilt = quicall_rpc::Metadata::new();
            let mut keys = std::collections::HashSet::new();
            for (key, value) in metadata.iter() {
                prop_assert!(keys.insert(key.to_owned()), "duplicate {}", key);
                rebuilt.insert(key, value).unwrap();
            }
            prop_assert_eq!(&rebuilt.as_bytes()[..], &bytes[..]);
        }
    }

    /// Valid blocks with bytes flipped or cut: refused, or read whole.
    #[test]
    fn corrupted_metadata_blocks_are_refused_or_read(
        entries in proptest::collection::vec(("[a-z0-9._-]{1,20}", proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        flip in any::<prop::sample::Index>(),
        with in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut metadata = quicall_rpc::Metadata::new();
        for (key, value) in &entries {
            metadata.insert(key, value).unwrap();
        }
        let mut bytes = metadata.as_bytes().to_vec();
        if !bytes.is_empty() {
            let i = flip.index(bytes.len());
            bytes[i] ^= with;
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(decoded) = quicall_rpc::Metadata::decode(Bytes::from(bytes), 64) {
            prop_assert!(decoded.iter().count() <= 64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A request stream's message header (docs/wire.md section 16) is
    /// accepted exactly when its first four bytes are `01 04 00 00` and its
    /// length is within the limit, whatever else the bytes are; a header
    /// cut short is reported as such.
    #[test]
    fn message_headers_are_accepted_exactly_as_specified(
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
        layout in any::<bool>(),
        max in any::<u32>(),
    ) {
        let mut bytes = bytes;
        if layout && bytes.len() >= 4 {
            // Half the cases have the layout, so that lengths are tested too.
            bytes[..4].copy_from_slice(&[1, 4, 0, 0]);
        }
        let decoded = decode_message(&bytes, max);
        if bytes.len() < MESSAGE_HEADER_LEN {
            prop_assert!(
                matches!(decoded, Err(WireError::Truncated { .. })),
                "{:?} from {} bytes", decoded, bytes.len()
            );
        } else {
            let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            let valid = bytes[..4] == [1, 4, 0, 0] && len <= max;
            prop_assert_eq!(decoded.is_ok(), valid, "{:?} for {:?}", decoded, &bytes[..8]);
            if let Ok(n) = decoded {
                prop_assert_eq!(n, len);
                prop_assert_eq!(message_header(n), <[u8; 8]>::try_from(&bytes[..8]).unwrap());
            }
            if bytes[..4] == [1, 4, 0, 0] && len > max {
                prop_assert_eq!(decoded, Err(WireError::TooLarge { len, max }));
            }
        }
    }
}
