//! rkyv messages: variable-length data archived by rkyv 0.8, validated
//! (bytecheck) when received, read in place as archived views.
//!
//! A body is the archive, its root last and at a position that is a
//! multiple of 16 from the body's start, followed by the root's size as a
//! little-endian `u32` (docs/wire.md section 12). The size lets a reader
//! find its own fields in a root written by a newer or older version of the
//! type, as for fixed-layout messages.

use std::any::TypeId;
use std::cell::Cell;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::sharing::Share;
use rkyv::ser::{Positional, Writer, WriterExt};
use rkyv::util::AlignedVec;

use super::{BodyError, Encode, EncodeError, Message, Msg};

/// The alignment of an archive's root (and of the buffers archives are read
/// from): the largest alignment of any archived type.
pub const ROOT_ALIGN: usize = 16;

/// Length of the trailer that gives the root's size.
const TRAILER: usize = 4;

/// An rkyv-archived `T` as a message: `Method<Rkyv<ListRequest>,
/// Rkyv<ListResponse>>` sends `ListRequest`s and `ListResponse`s, types
/// with strings, vectors, options and nested structs that derive rkyv's
/// `Archive` and `Serialize`.
///
/// A sender passes a `T` or `&T`, serialized straight into the send
/// buffer. A received `Msg<Rkyv<T>>` dereferences to `T::Archived`, read
/// in place: no deserialization. Every received body is validated first
/// (rkyv's bytecheck), so a handler never sees bytes that are not a valid
/// archive of its type; a body that does not validate is refused with
/// INVALID_ARGUMENT before the handler runs.
///
/// Archives are read from buffers aligned to 16 bytes; a body that arrives
/// at another address is copied once into an aligned buffer (the choice,
/// measured, is in docs/benchmarks.md). rkyv's format is Rust-only.
///
/// ## Adding a field
///
/// As for fixed-layout messages, fields are only ever appended to `T`
/// (never removed, reordered or changed), and a peer with the other
/// version reads: a newer body's extra fields are ignored, an older body's
/// missing fields read as zeroes. rkyv reads zeroes as `None` for an
/// `Option`, and as 0, `false` or the first variant for numbers, booleans
/// and field-less enums, but not as an empty `String` or `Vec`: an appended
/// field must be an `Option` (`Option<String>`, `Option<Vec<T>>`) or a
/// number, boolean or field-less enum. The fields of nested types cannot
/// grow: append an `Option` of a new nested type instead.
///
/// ```
/// use quicall_rpc::{Msg, Rkyv};
/// use rkyv::{Archive, Serialize};
///
/// #[derive(Archive, Serialize)]
/// struct Entry { key: String, size: u64 }
///
/// #[derive(Archive, Serialize)]
/// struct Listing { entries: Vec<Entry>, more: bool }
///
/// let listing = Listing { entries: vec![Entry { key: "a".into(), size: 3 }], more: false };
/// let body = quicall_rpc::encode::<Rkyv<Listing>>(&listing).unwrap();
/// let msg = Msg::<Rkyv<Listing>>::new(body).unwrap();
/// assert_eq!(msg.entries[0].key, "a");
/// assert_eq!(msg.entries[0].size, 3);
/// // Bytes that are not a valid archive never make a `Msg`.
/// assert!(Msg::<Rkyv<Listing>>::new(quicall_rpc::Bytes::from_static(&[0xff; 40])).is_err());
/// ```
pub struct Rkyv<T>(PhantomData<fn() -> T>);

/// The serializer rkyv messages are written with.
pub type Serializer<'a> = HighSerializer<BodyWriter, ArenaHandle<'a>, rancor::Error>;

/// What a type needs to travel as [`Rkyv<T>`]: rkyv's `Archive` (with its
/// default `bytecheck` validation) and `Serialize`, both derived. Nothing
/// to implement.
pub trait Archivable:
    rkyv::Archive<Archived: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>>
    + for<'a> rkyv::Serialize<Serializer<'a>>
    + Send
    + Sync
    + 'static
{
}

impl<T> Archivable for T where
    T: rkyv::Archive<
            Archived: rkyv::Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
        > + for<'a> rkyv::Serialize<Serializer<'a>>
        + Send
        + Sync
        + 'static
{
}

impl<T: Archivable> Message for Rkyv<T> {
    type View = T::Archived;
    /// Where the root this side reads ends.
    type Decoded = usize;

    fn receive(body: Bytes, exact: bool) -> Result<(Bytes, usize), BodyError> {
        let len = body.len();
        let fail = |reason: String| BodyError::new::<T>(len, reason);
        let Some(archive_end) = len.checked_sub(TRAILER) else {
            return Err(fail("shorter than the 4-byte root size".into()));
        };
        let mut size = [0; TRAILER];
        size.copy_from_slice(&body[archive_end..]);
        let written = u32::from_le_bytes(size) as usize;
        let Some(root) = archive_end.checked_sub(written) else {
            return Err(fail(format!("its root of {written} bytes overruns it")));
        };
        if !root.is_multiple_of(ROOT_ALIGN) {
            return Err(fail(format!("its root at {root} is not 16-aligned")));
        }
        let own = size_of::<T::Archived>();
        if exact && written != own {
            return Err(fail(format!("its root has {written} bytes, not {own}")));
        }
        let (body, end) = if written >= own {
            (aligned(body), root + own)
        } else {
            // An older peer's root: its missing fields read as zeros.
            let zeros = own - written;
            let trailer = (own as u32).to_le_bytes();
            (
                aligned_copy(&body[..archive_end], zeros, &trailer),
                root + own,
            )
        };
        rkyv::access::<T::Archived, rancor::Error>(&body[..end])
            .map_err(|e| fail(format!("it does not validate: {e}")))?;
        Ok((body, end))
    }

    fn view(msg: &Msg<Self>) -> &T::Archived {
        let archive = &msg.bytes()[..*msg.decoded()];
        // SAFETY: a `Msg` is only made by `receive`, which validated exactly
        // these bytes, at this address, as a `T::Archived` with
        // `rkyv::access` (bytecheck); `Bytes` never change.
        #[allow(unsafe_code)]
        unsafe {
            rkyv::access_unchecked::<T::Archived>(archive)
        }
    }
}

/// `body`, or a copy of it at an address aligned to [`ROOT_ALIGN`].
fn aligned(body: Bytes) -> Bytes {
    if (body.as_ptr() as usize).is_multiple_of(ROOT_ALIGN) {
        return body;
    }
    aligned_copy(&body, 0, &[])
}

/// A copy of `bytes`, then `zeros` zero bytes, then `tail`, at an address
/// aligned to [`ROOT_ALIGN`].
fn aligned_copy(bytes: &[u8], zeros: usize, tail: &[u8]) -> Bytes {
    let mut copy = AlignedVec::<ROOT_ALIGN>::with_capacity(bytes.len() + zeros + tail.len());
    copy.extend_from_slice(bytes);
    copy.resize(bytes.len() + zeros, 0);
    copy.extend_from_slice(tail);
    Bytes::from_owner(copy)
}

/// Writes an archive at the end of a send buffer, its positions counted
/// from where the body starts.
pub struct BodyWriter {
    buf: BytesMut,
    start: usize,
}

impl Positional for BodyWriter {
    fn pos(&self) -> usize {
        self.buf.len() - self.start
    }
}

impl<E> Writer<E> for BodyWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

/// How many recently written types remember their archive's size.
const HINTS: usize = 8;

thread_local! {
    /// The size of the last archive of a few types this thread wrote: the
    /// next one's buffer is sized once, instead of growing (and copying)
    /// five times from 256 bytes to 4 KiB.
    static LAST_SIZES: Cell<[Option<(TypeId, usize)>; HINTS]> = const { Cell::new([None; HINTS]) };
}

/// The size of the last archive of a `T` this thread wrote, if remembered.
fn last_size<T: 'static>() -> Option<usize> {
    let id = TypeId::of::<T>();
    LAST_SIZES.with(|sizes| {
        sizes
            .get()
            .into_iter()
            .flatten()
            .find_map(|(of, size)| (of == id).then_some(size))
    })
}

/// Remembers the size of an archive of a `T` (in place of the oldest).
fn remember_size<T: 'static>(size: usize) {
    let id = TypeId::of::<T>();
    LAST_SIZES.with(|sizes| {
        let mut all = sizes.get();
        let slot = all
            .iter()
            .position(|e| matches!(e, Some((of, _)) if *of == id));
        match slot {
            Some(i) => all[i] = Some((id, size)),
            None => {
                all.rotate_right(1);
                all[0] = Some((id, size));
            }
        }
        sizes.set(all);
    });
}

/// Appends `value`'s archive and trailer to `buf`. On failure `buf` is as
/// it was.
fn archive<T: Archivable>(value: &T, buf: &mut BytesMut) -> Result<(), EncodeError> {
    const { assert!(align_of::<T::Archived>() <= ROOT_ALIGN) };
    let start = buf.len();
    let writer = BodyWriter {
        buf: std::mem::take(buf),
        start,
    };
    let (mut writer, result) = rkyv::util::with_arena(|arena| {
        let mut serializer = rkyv::ser::Serializer::new(writer, arena.acquire(), Share::new());
        let result = (|| {
            let resolver = value.serialize(Strategy::wrap(&mut serializer))?;
            WriterExt::<rancor::Error>::align(&mut serializer, ROOT_ALIGN)?;
            // SAFETY: `resolver` is the result of serializing `value`, just
            // above, and the position is aligned to 16, at least the
            // alignment of `T::Archived` (asserted at compile time).
            #[allow(unsafe_code)]
            unsafe {
                WriterExt::<rancor::Error>::resolve_aligned(&mut serializer, value, resolver)
            }
        })();
        (serializer.into_writer(), result)
    });
    match result {
        Ok(_) => {
            let size = size_of::<T::Archived>() as u32;
            writer.buf.extend_from_slice(&size.to_le_bytes());
            remember_size::<T>(writer.buf.len() - start);
            *buf = writer.buf;
            Ok(())
        }
        Err(e) => {
            writer.buf.truncate(start);
            *buf = writer.buf;
            Err(EncodeError::new::<T>(e.to_string()))
        }
    }
}

impl<T: Archivable> Encode<Rkyv<T>> for &T {
    /// The size of the last archive of a `T` this thread wrote, or 256
    /// bytes (at least the root's).
    fn size_hint(&self) -> usize {
        last_size::<T>()
            .unwrap_or(256)
            .max(size_of::<T::Archived>() + ROOT_ALIGN + TRAILER)
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        archive(self, buf).map(|()| None)
    }
}

impl<T: Archivable> Encode<Rkyv<T>> for T {
    fn size_hint(&self) -> usize {
        Encode::<Rkyv<T>>::size_hint(&self)
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        archive(&self, buf).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    struct Entry {
        key: String,
        size: u64,
    }

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    struct ListV1 {
        entries: Vec<Entry>,
        total: u32,
    }

    /// `ListV1` with fields appended as the rules say.
    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    struct ListV2 {
        entries: Vec<Entry>,
        total: u32,
        cursor: Option<String>,
        elapsed_us: u64,
        truncated: bool,
    }

    fn v1() -> ListV1 {
        ListV1 {
            entries: (0..100)
                .map(|i| Entry {
                    key: format!("key-{i:04}"),
                    size: i * 10,
                })
                .collect(),
            total: 100,
        }
    }

    fn body<T: Archivable>(value: &T) -> Bytes {
        crate::encode::<Rkyv<T>>(value).unwrap()
    }

    #[test]
    fn round_trip_read_in_place() {
        let bytes = body(&v1());
        let root = bytes.len() - TRAILER - size_of::<ArchivedListV1>();
        assert_eq!(root % ROOT_ALIGN, 0);
        let msg = Msg::<Rkyv<ListV1>>::new(bytes.clone()).unwrap();
        assert_eq!(msg.entries.len(), 100);
        assert_eq!(msg.entries[42].key, "key-0042");
        assert_eq!(msg.entries[42].size, 420);
        assert_eq!(msg.total, 100);
        assert_eq!(msg.bytes().len(), bytes.len(), "the whole body is kept");
    }

    #[test]
    fn aligned_bodies_are_not_copied_and_others_once() {
        let bytes = body(&v1());
        let mut aligned = AlignedVec::<ROOT_ALIGN>::new();
        aligned.extend_from_slice(&bytes);
        let aligned = Bytes::from_owner(aligned);
        let msg = Msg::<Rkyv<ListV1>>::new(aligned.clone()).unwrap();
        assert_eq!(msg.bytes().as_ptr(), aligned.as_ptr(), "read in place");
        // The same body one byte into a buffer: copied to an aligned one.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        let shifted = Bytes::from(shifted).slice(1..);
        let msg = Msg::<Rkyv<ListV1>>::new(shifted.clone()).unwrap();
        assert_ne!(msg.bytes().as_ptr(), shifted.as_ptr());
        assert_eq!(msg.bytes().as_ptr() as usize % ROOT_ALIGN, 0);
        assert_eq!(msg.entries[99].key, "key-0099");
    }

    #[test]
    fn a_newer_body_is_read_with_its_new_fields_ignored() {
        let v2 = ListV2 {
            entries: v1().entries,
            total: 100,
            cursor: Some("key-0100".into()),
            elapsed_us: 7,
            truncated: true,
        };
        let msg = Msg::<Rkyv<ListV1>>::new(body(&v2)).unwrap();
        assert_eq!(msg.entries.len(), 100);
        assert_eq!(msg.total, 100);
        assert!(Msg::<Rkyv<ListV1>>::exact(body(&v2)).is_err());
    }

    #[test]
    fn an_older_body_is_read_with_its_missing_fields_as_none_and_zero() {
        let msg = Msg::<Rkyv<ListV2>>::new(body(&v1())).unwrap();
        assert_eq!(msg.entries[3].key, "key-0003");
        assert_eq!(msg.total, 100);
        assert!(msg.cursor.is_none());
        assert_eq!((msg.elapsed_us.to_native(), msg.truncated), (0, false));
        // What it keeps is a valid v2 body.
        let again = Msg::<Rkyv<ListV2>>::exact(msg.into_bytes()).unwrap();
        assert!(again.cursor.is_none());
        assert!(Msg::<Rkyv<ListV2>>::exact(body(&v1())).is_err());
    }

    #[test]
    fn lying_trailers_are_refused() {
        let good = body(&v1());
        let end = good.len() - TRAILER;
        for size in [u32::MAX, end as u32 + 1, 1, 3, 24] {
            let mut bad = good[..end].to_vec();
            bad.extend_from_slice(&size.to_le_bytes());
            let err = Msg::<Rkyv<ListV1>>::new(Bytes::from(bad)).err();
            assert!(err.is_some(), "root size {size} accepted");
        }
        for len in 0..TRAILER {
            assert!(Msg::<Rkyv<ListV1>>::new(good.slice(..len)).is_err());
        }
    }

    #[test]
    fn every_corrupted_byte_is_validated_or_refused() {
        let good = body(&ListV1 {
            entries: vec![Entry {
                key: "a key long enough to be out of line".into(),
                size: 1,
            }],
            total: 1,
        });
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.to_vec();
                bad[i] ^= flip;
                if let Ok(msg) = Msg::<Rkyv<ListV1>>::new(Bytes::from(bad)) {
                    // Accepted: it is a valid archive; reading it all works.
                    let value: ListV1 = rkyv::deserialize::<ListV1, rancor::Error>(&*msg).unwrap();
                    assert!(value.entries.len() <= 1);
                }
            }
        }
    }
}
