//! Property tests of rkyv and protobuf bodies: arbitrary bytes, and valid
//! bodies with arbitrary corruption, never panic, and every body accepted
//! is one that reads completely (what a handler would see was validated).

use bytes::Bytes;
use proptest::prelude::*;
use quicall_rpc::{Msg, Proto, Rkyv, encode};
use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    size: u64,
    tags: Vec<Option<String>>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Listing {
    entries: Vec<Entry>,
    cursor: Option<Box<Entry>>,
    flags: (bool, u8, char),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(uint64, tag = "2")]
    size: u64,
    #[prost(bytes = "bytes", tag = "3")]
    value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoListing {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<ProtoEntry>,
    #[prost(string, optional, tag = "2")]
    cursor: Option<String>,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        ".{0,40}",
        any::<u64>(),
        proptest::collection::vec(proptest::option::of(".{0,8}"), 0..4),
    )
        .prop_map(|(key, size, tags)| Entry { key, size, tags })
}

fn listing() -> impl Strategy<Value = Listing> {
    (
        proptest::collection::vec(entry(), 0..8),
        proptest::option::of(entry()),
        any::<(bool, u8, char)>(),
    )
        .prop_map(|(entries, cursor, flags)| Listing {
            entries,
            cursor: cursor.map(Box::new),
            flags,
        })
}

/// Reads all of an accepted message: every string, every vector.
fn read_all(msg: &Msg<Rkyv<Listing>>) -> Listing {
    rkyv::deserialize::<Listing, rancor::Error>(&**msg).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_as_rkyv_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for exact in [false, true] {
            let body = Bytes::from(bytes.clone());
            let msg = if exact { Msg::<Rkyv<Listing>>::exact(body) } else { Msg::<Rkyv<Listing>>::new(body) };
            if let Ok(msg) = msg {
                read_all(&msg);
            }
        }
    }

    #[test]
    fn rkyv_bodies_round_trip(value in listing()) {
        let body = encode::<Rkyv<Listing>>(&value).unwrap();
        let msg = Msg::<Rkyv<Listing>>::exact(body).unwrap();
        prop_assert_eq!(read_all(&msg), value);
    }

    #[test]
    fn corrupted_rkyv_bodies_are_refused_or_read_completely(
        value in listing(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = encode::<Rkyv<Listing>>(&value).unwrap().to_vec();
        for (at, flip) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(msg) = Msg::<Rkyv<Listing>>::new(Bytes::from(bytes)) {
            read_all(&msg);
        }
    }

    #[test]
    fn arbitrary_bytes_as_protobuf_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(msg) = Msg::<Proto<ProtoListing>>::new(Bytes::from(bytes)) {
            // Decoded when received: what the handler sees is a whole value.
            let again = encode::<Proto<ProtoListing>>(&*msg).unwrap();
            let twice = Msg::<Proto<ProtoListing>>::new(again).unwrap();
            prop_assert_eq!(&*twice, &*msg);
        }
    }

    #[test]
    fn corrupted_protobuf_bodies_never_panic(
        keys in proptest::collection::vec(".{0,20}", 0..6),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let value = ProtoListing {
            entries: keys.into_iter().map(|key| ProtoEntry { size: key.len() as u64, key, value: Bytes::from_static(b"v") }).collect(),
            cursor: Some("c".into()),
        };
        let mut bytes = encode::<Proto<ProtoListing>>(&value).unwrap().to_vec();
        for (at, flip) in flips {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
            }
        }
        let _ = Msg::<Proto<ProtoListing>>::new(Bytes::from(bytes));
    }
}
