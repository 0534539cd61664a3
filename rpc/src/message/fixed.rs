//! Fixed-layout messages: zerocopy types (and slice-tailed ones, and
//! `[u8]`), read in place, evolving by appended fields.

use bytes::{Bytes, BytesMut};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{BodyError, Encode, EncodeError, Message, Msg};

/// The zerocopy traits a fixed-layout message derives.
pub trait Layout: FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned {}

impl<T: ?Sized + FromBytes + IntoBytes + KnownLayout + Immutable + Unaligned> Layout for T {}

impl<T> Message for T
where
    T: ?Sized + Layout + Send + Sync + 'static,
{
    type View = T;
    type Decoded = ();

    /// Exactly `T`'s size is read in place; without `exact`, a longer body
    /// of a fixed-size type is read in place with its tail ignored and a
    /// shorter one is copied into a zeroed buffer of the type's size. A
    /// slice-tailed type must have its fixed part and a whole number of
    /// elements.
    fn receive(bytes: Bytes, exact: bool) -> Result<(Bytes, ()), BodyError> {
        if T::ref_from_bytes(&bytes).is_ok() {
            return Ok((bytes, ()));
        }
        match fixed_size::<T>().filter(|_| !exact) {
            Some(size) if bytes.len() > size => Ok((bytes.slice(..size), ())),
            Some(size) => {
                let mut zeroed = vec![0u8; size];
                zeroed[..bytes.len()].copy_from_slice(&bytes);
                Ok((Bytes::from(zeroed), ()))
            }
            None => Err(size_error::<T>(bytes.len())),
        }
    }

    fn view(msg: &Msg<T>) -> &T {
        match T::ref_from_bytes(msg.bytes()) {
            Ok(value) => value,
            Err(_) => unreachable!("size checked in Message::receive"),
        }
    }
}

fn size_error<T: ?Sized>(len: usize) -> BodyError {
    BodyError::new::<T>(len, "it does not have the type's size")
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
fn fixed_size<T: Layout + ?Sized>() -> Option<usize> {
    let long = T::ref_from_prefix(&ZEROS[..]).ok()?.0;
    let short = T::ref_from_prefix(&ZEROS[..ZEROS.len() / 2]).ok()?.0;
    let size = size_of_val(long);
    (size == size_of_val(short)).then_some(size)
}

impl<T: Layout + Message> Encode<T> for T {
    fn size_hint(&self) -> usize {
        size_of::<T>()
    }

    fn known_len(&self) -> Option<usize> {
        Some(size_of::<T>())
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        buf.extend_from_slice(self.as_bytes());
        Ok(None)
    }
}

impl<T: Layout + Message + ?Sized> Encode<T> for &T {
    fn size_hint(&self) -> usize {
        size_of_val(*self)
    }

    fn known_len(&self) -> Option<usize> {
        Some(size_of_val(*self))
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        buf.extend_from_slice(self.as_bytes());
        Ok(None)
    }
}

impl Encode<[u8]> for Bytes {
    fn size_hint(&self) -> usize {
        0
    }

    fn known_len(&self) -> Option<usize> {
        Some(self.len())
    }

    fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        Ok(Some(self))
    }
}

impl Encode<[u8]> for Vec<u8> {
    fn size_hint(&self) -> usize {
        0
    }

    fn known_len(&self) -> Option<usize> {
        Some(self.len())
    }

    fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        Ok(Some(Bytes::from(self)))
    }
}

impl Encode<[u8]> for String {
    fn size_hint(&self) -> usize {
        0
    }

    fn known_len(&self) -> Option<usize> {
        Some(self.len())
    }

    fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        Ok(Some(Bytes::from(self)))
    }
}

impl Encode<[u8]> for &str {
    fn size_hint(&self) -> usize {
        self.len()
    }

    fn known_len(&self) -> Option<usize> {
        Some(self.len())
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        buf.extend_from_slice(self.as_bytes());
        Ok(None)
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
        assert_eq!(Encode::<Fixed>::size_hint(&value), 6);
        assert!(Encode::<Fixed>::encode(&value, &mut buf).unwrap().is_none());
        assert_eq!(&buf[..], &[1, 0, 0, 0, 2, 0]);
        let payload = Bytes::from_static(b"payload");
        let chunk = Encode::<[u8]>::encode(payload.clone(), &mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(chunk.as_ptr(), payload.as_ptr(), "no copy");
    }
}
