//! Messages: fixed-layout zerocopy types read in place, and byte slices.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use bytes::{Bytes, BytesMut};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A type that can travel as a request or response body: any `#[repr(C)]`
/// type deriving zerocopy's `FromBytes`, `IntoBytes`, `KnownLayout`,
/// `Immutable` and `Unaligned` (use `zerocopy::little_endian` integers), a
/// slice-tailed struct of that kind, or `[u8]` for raw bytes.
///
/// It is implemented for every such type; there is nothing to implement.
pub trait Message:
    FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Send + Sync + 'static
{
}

impl<T> Message for T where
    T: ?Sized + FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned + Send + Sync + 'static
{
}

/// A received message: a typed view over the received bytes, read in place.
///
/// `Msg<T>` dereferences to `&T` without copying or parsing; its size was
/// checked when it was received. [`Msg::into_bytes`] gives the bytes back, for
/// example to forward or echo them without a copy.
///
/// ```
/// use bytes::Bytes;
/// use quicall_rpc::Msg;
/// use zerocopy::little_endian::U32;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// #[repr(C)]
/// struct Point { x: U32, y: U32 }
///
/// let msg = Msg::<Point>::new(Bytes::from_static(&[1, 0, 0, 0, 2, 0, 0, 0])).unwrap();
/// assert_eq!((msg.x.get(), msg.y.get()), (1, 2));
/// assert!(Msg::<Point>::exact(Bytes::from_static(&[1, 2, 3])).is_err());
/// ```
///
/// ## How messages evolve: adding a field
///
/// A fixed-layout message grows only by appending fields at its end, never
/// by removing, reordering or resizing one. Then old and new peers keep
/// talking, in both directions, through [`Msg::new`] (what the server and
/// the clients use for every method not declared
/// [`exact`](crate::Method::exact)):
///
/// - a body **longer** than the type (from a newer peer) is read in place;
///   the fields this side does not know are ignored (no copy);
/// - a body **shorter** than the type (from an older peer) is copied once
///   into a zeroed buffer of the type's size: the fields the older peer did
///   not send read as zero. Design new fields so that zero means "absent"
///   (or "the old behaviour").
///
/// The method's name, and so its identifier, stays the same across
/// versions. Slice-tailed types (and `[u8]`) cannot grow this way: their
/// tail is the slice; their size is checked as before.
///
/// ```
/// use bytes::Bytes;
/// use quicall_rpc::Msg;
/// use zerocopy::little_endian::U32;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// #[repr(C)]
/// struct StatsV1 { calls: U32 }
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// #[repr(C)]
/// struct StatsV2 { calls: U32, errors: U32 } // one field appended
///
/// // A v2 body read by v1: the new field is ignored.
/// let v1 = Msg::<StatsV1>::new(Bytes::from_static(&[7, 0, 0, 0, 2, 0, 0, 0])).unwrap();
/// assert_eq!(v1.calls.get(), 7);
/// // A v1 body read by v2: the missing field reads as zero.
/// let v2 = Msg::<StatsV2>::new(Bytes::from_static(&[7, 0, 0, 0])).unwrap();
/// assert_eq!((v2.calls.get(), v2.errors.get()), (7, 0));
/// ```
pub struct Msg<T: ?Sized> {
    bytes: Bytes,
    _type: PhantomData<fn() -> *const T>,
}

/// A body that does not have the size of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body of {len} bytes does not fit type {type_name}")]
pub struct SizeError {
    /// Length of the body.
    pub len: usize,
    /// The expected type.
    pub type_name: &'static str,
}

impl<T: Message + ?Sized> Msg<T> {
    /// Wraps `bytes` as a `T` by the evolution rules (see above): exactly
    /// `T`'s size is read in place; a longer body of a fixed-size type is
    /// read in place with its tail ignored; a shorter one is copied into a
    /// zeroed buffer of the type's size. A slice-tailed type must have its
    /// fixed part and a whole number of elements.
    pub fn new(bytes: Bytes) -> Result<Self, SizeError> {
        if T::ref_from_bytes(&bytes).is_ok() {
            return Ok(Self::wrap(bytes));
        }
        match fixed_size::<T>() {
            Some(size) if bytes.len() > size => Ok(Self::wrap(bytes.slice(..size))),
            Some(size) => {
                let mut zeroed = vec![0u8; size];
                zeroed[..bytes.len()].copy_from_slice(&bytes);
                Ok(Self::wrap(Bytes::from(zeroed)))
            }
            None => Err(size_error::<T>(bytes.len())),
        }
    }

    /// Wraps `bytes` only if they have exactly the size of `T` (a whole
    /// number of trailing elements, for a slice-tailed type): no evolution.
    /// What methods declared [`exact`](crate::Method::exact) use.
    pub fn exact(bytes: Bytes) -> Result<Self, SizeError> {
        match T::ref_from_bytes(&bytes) {
            Ok(_) => Ok(Self::wrap(bytes)),
            Err(_) => Err(size_error::<T>(bytes.len())),
        }
    }

    fn wrap(bytes: Bytes) -> Self {
        Self {
            bytes,
            _type: PhantomData,
        }
    }

    /// The message's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The message's bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

impl<T: Message + ?Sized> Deref for Msg<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match T::ref_from_bytes(&self.bytes) {
            Ok(value) => value,
            Err(_) => unreachable!("size checked in Msg::new"),
        }
    }
}

impl<T: ?Sized> Clone for Msg<T> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Message + fmt::Debug + ?Sized> fmt::Debug for Msg<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

fn size_error<T: ?Sized>(len: usize) -> SizeError {
    SizeError {
        len,
        type_name: std::any::type_name::<T>(),
    }
}

/// Zeros to measure types against (in `.bss`: no cost until touched).
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The size of `T` if it is a fixed-size type of at most 32 KiB, `None` for
/// a slice-tailed type (or a larger one, which then does not evolve).
///
/// Measured, since a `?Sized` type's size cannot be named: a fixed-size
/// type takes the same prefix of 64 KiB and of 32 KiB of zeros; a
/// slice-tailed one takes as many elements as fit, so more of the longer.
/// Only called when a body does not have the type's exact size.
fn fixed_size<T: Message + ?Sized>() -> Option<usize> {
    let long = T::ref_from_prefix(&ZEROS[..]).ok()?.0;
    let short = T::ref_from_prefix(&ZEROS[..ZEROS.len() / 2]).ok()?.0;
    let size = size_of_val(long);
    (size == size_of_val(short)).then_some(size)
}

/// Lays out `header` and then the body of `value`: the header and any inline
/// body in one buffer, and a body chunk (if any) apart, uncopied.
pub(crate) fn frame<T: Message + ?Sized>(
    header: &[u8],
    value: impl Encode<T>,
) -> (Bytes, Option<Bytes>) {
    let mut buf = BytesMut::with_capacity(header.len() + value.inline_len());
    buf.extend_from_slice(header);
    let tail = value.encode(&mut buf);
    (buf.freeze(), tail)
}

/// Something that can be sent as a body of message type `T`: a `T` by value
/// or by reference, a received [`Msg<T>`], or, for `[u8]`, [`Bytes`],
/// `Vec<u8>`, `String` and `&str`.
///
/// Small fixed values are copied next to the header in one buffer; `Bytes`
/// and `Msg` bodies are handed to QUIC as they are, without a copy.
pub trait Encode<T: Message + ?Sized> {
    /// The body's length in bytes.
    fn body_len(&self) -> usize;

    /// How many of those bytes [`encode`](Encode::encode) appends to the
    /// buffer (the rest it returns as a chunk).
    fn inline_len(&self) -> usize;

    /// Appends the body to `buf`, or returns it as a separate chunk to send
    /// after `buf` without copying it.
    fn encode(self, buf: &mut BytesMut) -> Option<Bytes>;
}

impl<T: Message> Encode<T> for T {
    fn body_len(&self) -> usize {
        size_of::<T>()
    }

    fn inline_len(&self) -> usize {
        size_of::<T>()
    }

    fn encode(self, buf: &mut BytesMut) -> Option<Bytes> {
        buf.extend_from_slice(self.as_bytes());
        None
    }
}

impl<T: Message + ?Sized> Encode<T> for &T {
    fn body_len(&self) -> usize {
        size_of_val(*self)
    }

    fn inline_len(&self) -> usize {
        size_of_val(*self)
    }

    fn encode(self, buf: &mut BytesMut) -> Option<Bytes> {
        buf.extend_from_slice(self.as_bytes());
        None
    }
}

impl<T: Message + ?Sized> Encode<T> for Msg<T> {
    fn body_len(&self) -> usize {
        self.bytes.len()
    }

    fn inline_len(&self) -> usize {
        0
    }

    fn encode(self, _: &mut BytesMut) -> Option<Bytes> {
        Some(self.bytes)
    }
}

impl Encode<[u8]> for Bytes {
    fn body_len(&self) -> usize {
        self.len()
    }

    fn inline_len(&self) -> usize {
        0
    }

    fn encode(self, _: &mut BytesMut) -> Option<Bytes> {
        Some(self)
    }
}

impl Encode<[u8]> for Vec<u8> {
    fn body_len(&self) -> usize {
        self.len()
    }

    fn inline_len(&self) -> usize {
        0
    }

    fn encode(self, _: &mut BytesMut) -> Option<Bytes> {
        Some(Bytes::from(self))
    }
}

impl Encode<[u8]> for String {
    fn body_len(&self) -> usize {
        self.len()
    }

    fn inline_len(&self) -> usize {
        0
    }

    fn encode(self, _: &mut BytesMut) -> Option<Bytes> {
        Some(Bytes::from(self))
    }
}

impl Encode<[u8]> for &str {
    fn body_len(&self) -> usize {
        self.len()
    }

    fn inline_len(&self) -> usize {
        self.len()
    }

    fn encode(self, buf: &mut BytesMut) -> Option<Bytes> {
        buf.extend_from_slice(self.as_bytes());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::{U16, U32};

    #[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    struct Fixed {
        a: U32,
        b: U16,
    }

    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    #[repr(C)]
    struct Tailed {
        id: U16,
        data: [u8],
    }

    #[test]
    fn exact_sizes_are_exact() {
        assert!(Msg::<Fixed>::exact(Bytes::from_static(&[0; 6])).is_ok());
        for len in [0, 5, 7, 100] {
            let err = Msg::<Fixed>::exact(Bytes::from(vec![0; len])).unwrap_err();
            assert_eq!(err.len, len);
        }
    }

    #[test]
    fn longer_bodies_are_read_in_place_with_their_tail_ignored() {
        let bytes = Bytes::from(vec![7, 0, 0, 0, 9, 0, 0xee, 0xee, 0xee]);
        let msg = Msg::<Fixed>::new(bytes.clone()).unwrap();
        assert_eq!((msg.a.get(), msg.b.get()), (7, 9));
        assert_eq!(msg.bytes().as_ptr(), bytes.as_ptr(), "no copy");
        assert_eq!(msg.bytes().len(), 6);
    }

    #[test]
    fn shorter_bodies_read_their_missing_fields_as_zero() {
        let msg = Msg::<Fixed>::new(Bytes::from_static(&[7, 0, 0, 0])).unwrap();
        assert_eq!((msg.a.get(), msg.b.get()), (7, 0));
        let empty = Msg::<Fixed>::new(Bytes::new()).unwrap();
        assert_eq!((empty.a.get(), empty.b.get()), (0, 0));
    }

    #[test]
    fn fixed_sizes_are_measured_and_slice_tails_are_not_fixed() {
        assert_eq!(fixed_size::<Fixed>(), Some(6));
        assert_eq!(fixed_size::<()>(), Some(0));
        assert_eq!(fixed_size::<Tailed>(), None);
        assert_eq!(fixed_size::<[u8]>(), None);
        // Elements of 3 bytes: 64 KiB and 32 KiB of zeros hold different counts.
        assert_eq!(fixed_size::<[[u8; 3]]>(), None);
        assert_eq!(
            fixed_size::<[u8; 40_000]>(),
            None,
            "larger than 32 KiB: not evolving"
        );
    }

    #[test]
    fn views_do_not_copy() {
        let bytes = Bytes::from(vec![7, 0, 0, 0, 9, 0]);
        let msg = Msg::<Fixed>::new(bytes.clone()).unwrap();
        assert_eq!((msg.a.get(), msg.b.get()), (7, 9));
        assert_eq!(msg.bytes().as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn slice_tailed_messages() {
        let msg = Msg::<Tailed>::new(Bytes::from_static(&[1, 0, b'h', b'i'])).unwrap();
        assert_eq!(msg.id.get(), 1);
        assert_eq!(&msg.data, b"hi");
        // A slice-tailed type does not evolve: a short fixed part is refused.
        assert!(Msg::<Tailed>::new(Bytes::from_static(&[1])).is_err());
        let raw = Msg::<[u8]>::new(Bytes::new()).unwrap();
        assert!(raw.is_empty());
    }

    #[test]
    fn encoding_inline_and_chunked() {
        let mut buf = BytesMut::new();
        let value = Fixed {
            a: U32::new(1),
            b: U16::new(2),
        };
        assert_eq!(Encode::<Fixed>::body_len(&value), 6);
        assert!(Encode::<Fixed>::encode(&value, &mut buf).is_none());
        assert_eq!(&buf[..], &[1, 0, 0, 0, 2, 0]);
        let payload = Bytes::from_static(b"payload");
        let chunk = Encode::<[u8]>::encode(payload.clone(), &mut buf).unwrap();
        assert_eq!(chunk.as_ptr(), payload.as_ptr(), "no copy");
    }
}
