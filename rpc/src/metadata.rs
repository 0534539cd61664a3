//! Metadata: key/value pairs sent with a call (tokens, tenants, request
//! ids, trace context) and with its answer, as one validated block of
//! bytes (docs/wire.md section 13).
//!
//! A block is a sequence of entries, each `key_len` (u8, 1 to 255), then
//! `value_len` (u16, little-endian), then the key (lower-case ASCII
//! letters, digits, `-`, `_` and `.`), then the value (any bytes). Keys are
//! unique within a block. Reading a block checks every length against
//! what is left before looking at the bytes, and allocates nothing.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Default limit on a block's size in bytes (8 KiB).
pub const DEFAULT_MAX_METADATA_BYTES: u16 = 8 << 10;

/// Default limit on a block's number of entries.
pub const DEFAULT_MAX_METADATA_ENTRIES: usize = 64;

/// Key of the W3C trace context's `traceparent`, reserved for it.
pub const TRACEPARENT: &str = "traceparent";

/// Key of the W3C trace context's `tracestate`, reserved for it.
pub const TRACESTATE: &str = "tracestate";

/// Bytes of an entry before its key and value.
const ENTRY_HEAD: usize = 3;

/// Key/value pairs sent with a call or its answer.
///
/// ```
/// use quicall_rpc::Metadata;
///
/// let mut metadata = Metadata::new();
/// metadata.insert("authorization", "Bearer 7f3a")?;
/// metadata.insert("tenant", "acme")?;
/// assert_eq!(metadata.get_str("tenant"), Some("acme"));
/// assert_eq!(metadata.len(), 2);
/// // Keys are lower-case ASCII; values are any bytes.
/// assert!(metadata.insert("Tenant", "x").is_err());
/// // The block on the wire: key length, value length, key, value.
/// let one = Metadata::new().with("k", [7])?;
/// assert_eq!(&one.as_bytes()[..], &[1, 1, 0, b'k', 7]);
/// # Ok::<(), quicall_rpc::MetadataError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    block: Bytes,
}

/// A key, a value or a block that breaks the rules of metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// A key that is empty, longer than 255 bytes, or not lower-case ASCII
    /// letters, digits, `-`, `_` and `.`.
    #[error("invalid metadata key {0:?}: 1 to 255 of a-z, 0-9, '-', '_', '.'")]
    Key(String),
    /// A value longer than 65,535 bytes.
    #[error("metadata value of {0} bytes (at most 65535)")]
    Value(usize),
    /// An entry whose lengths run past the end of the block.
    #[error("metadata block truncated at byte {0}")]
    Truncated(usize),
    /// The same key twice.
    #[error("duplicate metadata key {0:?}")]
    Duplicate(String),
    /// More entries than allowed.
    #[error("more than {0} metadata entries")]
    TooMany(usize),
    /// A block larger than allowed.
    #[error("metadata of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The block's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Metadata {
    /// No entries, as a constant.
    pub(crate) const EMPTY: Metadata = Metadata {
        block: Bytes::new(),
    };

    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a received block: every length checked against what is left,
    /// every key checked, no duplicate, at most `max_entries` entries.
    /// The entries are read in place from `block` afterwards.
    pub fn decode(block: Bytes, max_entries: usize) -> Result<Self, MetadataError> {
        let mut count = 0;
        let mut rest = &block[..];
        while !rest.is_empty() {
            let at = block.len() - rest.len();
            let (key, _value, tail) = split_entry(rest).ok_or(MetadataError::Truncated(at))?;
            check_key(key)?;
            count += 1;
            if count > max_entries {
                return Err(MetadataError::TooMany(max_entries));
            }
            if RawEntries(&block[..at]).any(|(k, _)| k == key) {
                return Err(MetadataError::Duplicate(
                    String::from_utf8_lossy(key).into_owned(),
                ));
            }
            rest = tail;
        }
        Ok(Self { block })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        RawEntries(&self.block).find_map(|(k, v)| (k == key.as_bytes()).then_some(v))
    }

    /// The value of `key`, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `key` to `value`, in place of any value it had.
    pub fn insert(
        &mut self,
        key: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, MetadataError> {
        check_key(key)?;
        let value = value.as_ref();
        if value.len() > usize::from(u16::MAX) {
            return Err(MetadataError::Value(value.len()));
        }
        let mut block = if self.get(key).is_none() {
            // A new key: appended, in place when the block is not shared.
            let mut block = std::mem::take(&mut self.block)
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            block.reserve(ENTRY_HEAD + key.len() + value.len());
            block
        } else {
            let mut block = BytesMut::with_capacity(self.block.len() + ENTRY_HEAD + value.len());
            for (k, v) in RawEntries(&self.block).filter(|(k, _)| *k != key.as_bytes()) {
                put_entry(&mut block, k, v);
            }
            block
        };
        put_entry(&mut block, key.as_bytes(), value);
        self.block = block.freeze();
        Ok(self)
    }

    /// The same metadata with `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl AsRef<[u8]>) -> Result<Self, MetadataError> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// Removes `key`; its value, if it had one.
    pub fn remove(&mut self, key: &str) -> Option<Bytes> {
        let value = self.get(key).map(Bytes::copy_from_slice)?;
        let mut block = BytesMut::with_capacity(self.block.len());
        for (k, v) in RawEntries(&self.block).filter(|(k, _)| *k != key.as_bytes()) {
            put_entry(&mut block, k, v);
        }
        self.block = block.freeze();
        Some(value)
    }

    /// The entries, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        Entries(&self.block)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        RawEntries(&self.block).count()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// The block as sent on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.block
    }

    /// Every entry of `other` set here too (its values win). Into empty
    /// metadata, `other`'s block is shared, not copied.
    pub fn merge(&mut self, other: &Metadata) -> Result<(), MetadataError> {
        if self.is_empty() {
            self.block = other.block.clone();
            return Ok(());
        }
        for (key, value) in other.iter() {
            self.insert(key, value)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.iter() {
            match std::str::from_utf8(value) {
                Ok(text) => map.entry(&key, &text),
                Err(_) => map.entry(&key, &value),
            };
        }
        map.finish()
    }
}

/// The entries of a block, keys as bytes.
struct RawEntries<'a>(&'a [u8]);

impl<'a> Iterator for RawEntries<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value, rest) = split_entry(self.0)?;
        self.0 = rest;
        Some((key, value))
    }
}

/// The entries of a block already checked.
struct Entries<'a>(&'a [u8]);

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = RawEntries(self.0).next()?;
        self.0 = &self.0[ENTRY_HEAD + key.len() + value.len()..];
        // Checked keys are ASCII.
        Some((std::str::from_utf8(key).unwrap_or_default(), value))
    }
}

/// The first entry of `bytes` and what follows it, if its lengths fit.
fn split_entry(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&[key_len, v0, v1], rest) = bytes.split_first_chunk::<ENTRY_HEAD>()?;
    let key_len = usize::from(key_len);
    let value_len = usize::from(u16::from_le_bytes([v0, v1]));
    if rest.len() < key_len + value_len {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let (value, rest) = rest.split_at(value_len);
    Some((key, value, rest))
}

fn check_key(key: impl AsRef<[u8]>) -> Result<(), MetadataError> {
    let key = key.as_ref();
    let ok = !key.is_empty()
        && key.len() <= 255
        && key
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(MetadataError::Key(
            String::from_utf8_lossy(key).into_owned(),
        ))
    }
}

/// Appends an entry whose key and value lengths were checked.
fn put_entry(block: &mut BytesMut, key: &[u8], value: &[u8]) {
    block.put_u8(key.len() as u8);
    block.put_u16_le(value.len() as u16);
    block.put_slice(key);
    block.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_block() {
        let metadata = Metadata::new()
            .with("authorization", "Bearer x")
            .unwrap()
            .with("request-id", [0, 255])
            .unwrap()
            .with("empty", "")
            .unwrap();
        let decoded = Metadata::decode(metadata.as_bytes().clone(), 64).unwrap();
        assert_eq!(decoded, metadata);
        assert_eq!(decoded.get("request-id"), Some(&[0, 255][..]));
        assert_eq!(decoded.get_str("authorization"), Some("Bearer x"));
        assert_eq!(decoded.get("empty"), Some(&[][..]));
        assert_eq!(decoded.get("missing"), None);
        assert_eq!(decoded.len(), 3);
    }

    #[test]
    fn insert_replaces_and_remove_removes() {
        let mut metadata = Metadata::new()
            .with("a", "1")
            .unwrap()
            .with("b", "2")
            .unwrap();
        metadata.insert("a", "3").unwrap();
        assert_eq!(metadata.get_str("a"), Some("3"));
        assert_eq!(metadata.len(), 2);
        assert_eq!(metadata.remove("a").as_deref(), Some(&b"3"[..]));
        assert_eq!(metadata.remove("a"), None);
        assert_eq!(metadata.iter().collect::<Vec<_>>(), [("b", &b"2"[..])]);
    }

    #[test]
    fn keys_and_values_are_checked() {
        let mut metadata = Metadata::new();
        for bad in ["", "Upper", "sp ace", "ü", &"k".repeat(256)] {
            assert!(
                matches!(metadata.insert(bad, "v"), Err(MetadataError::Key(_))),
                "{bad}"
            );
        }
        assert!(metadata.insert(&"k".repeat(255), "v").is_ok());
        assert_eq!(
            metadata.insert("big", vec![0; 65_536]).unwrap_err(),
            MetadataError::Value(65_536)
        );
        assert!(metadata.insert("big", vec![0; 65_535]).is_ok());
    }

    #[test]
    fn hostile_blocks_are_refused() {
        // A value length running past the end.
        let err = Metadata::decode(Bytes::from_static(&[1, 9, 0, b'k', 1]), 64).unwrap_err();
        assert_eq!(err, MetadataError::Truncated(0));
        // Half an entry head.
        assert!(Metadata::decode(Bytes::from_static(&[1, 0]), 64).is_err());
        // A zero-length key, an upper-case key.
        assert!(Metadata::decode(Bytes::from_static(&[0, 0, 0]), 64).is_err());
        assert!(Metadata::decode(Bytes::from_static(&[1, 0, 0, b'K']), 64).is_err());
        // Duplicates.
        let twice = Bytes::from_static(&[1, 1, 0, b'k', 1, 1, 1, 0, b'k', 2]);
        assert_eq!(
            Metadata::decode(twice, 64).unwrap_err(),
            MetadataError::Duplicate("k".into())
        );
        // Too many entries: at the limit, and one over.
        let mut many = Metadata::new();
        for i in 0..4 {
            many.insert(&format!("k{i}"), "").unwrap();
        }
        assert!(Metadata::decode(many.as_bytes().clone(), 4).is_ok());
        assert_eq!(
            Metadata::decode(many.as_bytes().clone(), 3).unwrap_err(),
            MetadataError::TooMany(3)
        );
        assert_eq!(Metadata::decode(Bytes::new(), 0).unwrap(), Metadata::new());
    }
}
