//! Messages: what a body is, for each kind of body, and how it is received
//! and sent.
//!
//! Three kinds, chosen by the method's types:
//! - fixed-layout zerocopy structs (and slice-tailed ones, and `[u8]`),
//!   read in place (`fixed`);
//! - [`Rkyv<T>`]: variable-length rkyv archives, validated when received
//!   and read in place as archived views (`archived`);
//! - `Proto<T>` (feature `prost`): protobuf messages, decoded when
//!   received (`proto`).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use bytes::{Bytes, BytesMut};

mod archived;
mod chunks;
mod fixed;
#[cfg(feature = "prost")]
mod proto;

pub use archived::{Archivable, BodyWriter, ROOT_ALIGN, Rkyv, Serializer};
pub use chunks::Chunks;
#[cfg(feature = "prost")]
pub use proto::Proto;

/// A type that can travel as a request or response body, and the rules by
/// which it is received.
///
/// It is implemented for:
/// - every `#[repr(C)]` type deriving zerocopy's `FromBytes`, `IntoBytes`,
///   `KnownLayout`, `Immutable` and `Unaligned` (use
///   `zerocopy::little_endian` integers), slice-tailed structs of that
///   kind, and `[u8]` for raw bytes: read in place, see [`Msg`] for how
///   they evolve;
/// - [`Rkyv<T>`] for any type deriving rkyv's `Archive` and `Serialize`:
///   strings, vectors, options, nested structs, read in place as
///   `T::Archived` after validation;
/// - `Proto<T>` for any prost message (feature `prost`);
/// - [`Chunks`] for raw bytes kept in the chunks they arrived in (never
///   gathered into one buffer).
///
/// Nothing needs implementing for those. Another encoding can be brought
/// by implementing it for a marker type, as [`Rkyv`] does.
pub trait Message: Send + Sync + 'static {
    /// What a received message reads as: the type itself for fixed-layout
    /// types, `T::Archived` for [`Rkyv<T>`], the decoded `T` for
    /// `Proto<T>`.
    type View: ?Sized;

    /// What the receiver keeps beside the bytes (nothing, a position, or
    /// a decoded value).
    type Decoded: Send + Sync + 'static;

    /// Checks a received body (with `exact`, by the strict rules of methods
    /// declared [`exact`](crate::Method::exact)) and returns the bytes to
    /// keep and what [`view`](Message::view) needs. Never panics on any
    /// input.
    fn receive(body: Bytes, exact: bool) -> Result<(Bytes, Self::Decoded), BodyError>;

    /// Whether a received body is kept in the chunks it arrived in (only
    /// [`Chunks`]): they are then held as they are, sharing QUIC's packet
    /// buffers; every other kind's body is gathered as it arrives, so that
    /// a peer sending tiny pieces pins no packet buffers.
    const KEEPS_CHUNKS: bool = false;

    /// [`receive`](Message::receive) for a body that arrived in several
    /// chunks. By default they are gathered into one buffer (none for a
    /// body of one chunk, and a kind that does not keep chunks is given one
    /// already gathered as it arrived), which every kind read in place
    /// needs; [`Chunks`] keeps them as they are.
    fn receive_chunks(body: Chunks, exact: bool) -> Result<(Bytes, Self::Decoded), BodyError> {
        Self::receive(body.into_bytes(), exact)
    }

    /// The body of a received message, to send on (echoed, forwarded) or
    /// to give back with [`Msg::into_bytes`]: by default its bytes.
    fn into_body(bytes: Bytes, decoded: Self::Decoded) -> Chunks {
        let _ = decoded;
        Chunks::from(bytes)
    }

    /// The length of a received message's body: by default that of its
    /// bytes.
    fn body_len(msg: &Msg<Self>) -> usize {
        msg.bytes.len()
    }

    /// The view of a received message (one that [`receive`](Message::receive)
    /// accepted: a [`Msg`] is made by nothing else).
    fn view(msg: &Msg<Self>) -> &Self::View;
}

/// A received message: its body and a typed view of it.
///
/// `Msg<T>` dereferences to `T`'s view ([`Message::View`]): for a
/// fixed-layout type the type itself, read in place over the received
/// bytes; for [`Rkyv<T>`] the archived type, also in place; for
/// `Proto<T>` the decoded message. The body was checked when it was
/// received: a handler never sees a body that does not fit its type.
/// [`Msg::into_bytes`] gives the body back, for example to forward or echo
/// it without a copy.
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
/// A message grows only by appending fields at its end, never by removing,
/// reordering or resizing one. Then old and new peers keep talking, in
/// both directions, through [`Msg::new`] (what the server and the clients
/// use for every method not declared [`exact`](crate::Method::exact)):
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
/// tail is the slice; their size is checked as before. For [`Rkyv<T>`] the
/// same rule holds for the fields of `T` itself, which must then be
/// `Option`s or numbers (see [`Rkyv`]); protobuf has its own rules.
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
pub struct Msg<T: Message + ?Sized> {
    bytes: Bytes,
    decoded: T::Decoded,
}

/// A body that does not fit its type: the wrong size, or (for an rkyv or
/// protobuf body) bytes that do not validate or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("body of {len} bytes is not a valid {type_name}: {reason}")]
pub struct BodyError {
    /// Length of the body.
    pub len: usize,
    /// The expected type.
    pub type_name: &'static str,
    /// What is wrong with it.
    pub reason: Cow<'static, str>,
}

impl BodyError {
    /// A body of `len` bytes that is not a valid `T`, for `reason`.
    pub fn new<T: ?Sized>(len: usize, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            len,
            type_name: std::any::type_name::<T>(),
            reason: reason.into(),
        }
    }
}

impl<T: Message + ?Sized> Msg<T> {
    /// Receives `bytes` as a `T` by the evolution rules (see above).
    pub fn new(bytes: Bytes) -> Result<Self, BodyError> {
        Self::receive(bytes, false)
    }

    /// Receives `bytes` as a `T` only if they have exactly its layout (for
    /// a fixed-layout type, its size; for an rkyv archive, its root's
    /// size): no evolution. What methods declared
    /// [`exact`](crate::Method::exact) use.
    pub fn exact(bytes: Bytes) -> Result<Self, BodyError> {
        Self::receive(bytes, true)
    }

    pub(crate) fn receive(bytes: Bytes, exact: bool) -> Result<Self, BodyError> {
        let (bytes, decoded) = T::receive(bytes, exact)?;
        Ok(Self { bytes, decoded })
    }

    /// [`Msg::receive`] for a body as the chunks it arrived in.
    pub(crate) fn receive_chunks(body: Chunks, exact: bool) -> Result<Self, BodyError> {
        let (bytes, decoded) = T::receive_chunks(body, exact)?;
        Ok(Self { bytes, decoded })
    }

    /// The message's bytes (for a body received from an older peer, the
    /// bytes as this side reads them: zero-extended; for [`Chunks`],
    /// empty: its bytes are in its chunks).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// What the message's kind kept beside the bytes when it was received.
    pub fn decoded(&self) -> &T::Decoded {
        &self.decoded
    }

    /// The message's bytes, without a copy (for [`Chunks`] of more than
    /// one chunk, gathered: a copy): a valid body of `T` to send on.
    pub fn into_bytes(self) -> Bytes {
        T::into_body(self.bytes, self.decoded).into_bytes()
    }
}

impl<T: Message + ?Sized> Deref for Msg<T> {
    type Target = T::View;

    fn deref(&self) -> &T::View {
        T::view(self)
    }
}

impl<T: Message + ?Sized> Clone for Msg<T>
where
    T::Decoded: Clone,
{
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            decoded: self.decoded.clone(),
        }
    }
}

impl<T: Message + ?Sized> fmt::Debug for Msg<T>
where
    T::View: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Message + ?Sized> fmt::Display for Msg<T>
where
    T::View: fmt::Display,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// Something that can be sent as a body of message type `T`: a `T` by value
/// or by reference, a received [`Msg<T>`], or, for `[u8]`, [`Bytes`],
/// `Vec<u8>`, `String` and `&str`; for [`Rkyv<T>`] and `Proto<T>`, a
/// `T` or `&T`.
///
/// Small fixed values and rkyv and protobuf encodings are written next to
/// the header in one buffer; `Bytes` and `Msg` bodies are handed to QUIC as
/// they are, without a copy.
pub trait Encode<T: Message + ?Sized> {
    /// About how many bytes [`encode`](Encode::encode) appends to the
    /// buffer (to size it once).
    fn size_hint(&self) -> usize;

    /// The body's exact length, when it is known before encoding (then
    /// the header is written once).
    fn known_len(&self) -> Option<usize> {
        None
    }

    /// Appends the body to `buf`, or returns it as a separate chunk to send
    /// after `buf` without copying it. On failure (an rkyv serializer's
    /// error), `buf` is left as it was.
    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError>;

    /// [`encode`](Encode::encode) for a body that may be several chunks
    /// to send after `buf`, none copied: by default the one chunk
    /// `encode` returns. What the server and the clients call.
    fn encode_chunks(self, buf: &mut BytesMut) -> Result<Chunks, EncodeError>
    where
        Self: Sized,
    {
        self.encode(buf).map(Chunks::from)
    }
}

/// A value that could not be encoded as a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode a {type_name}: {reason}")]
pub struct EncodeError {
    /// The value's type.
    pub type_name: &'static str,
    /// Why.
    pub reason: String,
}

impl EncodeError {
    /// A `T` that could not be encoded, for `reason`.
    pub fn new<T: ?Sized>(reason: impl Into<String>) -> Self {
        Self {
            type_name: std::any::type_name::<T>(),
            reason: reason.into(),
        }
    }
}

/// The body `value` is sent as, for message type `T`, as one buffer: what
/// a client in another process would send, for tests and tools.
///
/// ```
/// use quicall_rpc::{Msg, Rkyv};
/// let body = quicall_rpc::encode::<Rkyv<String>>("hello".to_string()).unwrap();
/// assert_eq!(*Msg::<Rkyv<String>>::new(body).unwrap(), "hello");
/// ```
pub fn encode<T: Message + ?Sized>(value: impl Encode<T>) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(value.size_hint());
    Ok(match value.encode(&mut buf)? {
        Some(chunk) if buf.is_empty() => chunk,
        Some(chunk) => {
            buf.extend_from_slice(&chunk);
            buf.freeze()
        }
        None => buf.freeze(),
    })
}

impl<T: Message + ?Sized> Encode<T> for Msg<T> {
    fn size_hint(&self) -> usize {
        0
    }

    fn known_len(&self) -> Option<usize> {
        Some(T::body_len(self))
    }

    fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        Ok(Some(self.into_bytes()))
    }

    fn encode_chunks(self, _: &mut BytesMut) -> Result<Chunks, EncodeError> {
        Ok(T::into_body(self.bytes, self.decoded))
    }
}

/// A header followed by a body: the header and any inline body in one
/// buffer, the body's chunks (if any) apart, uncopied.
pub(crate) struct Framed {
    pub(crate) head: Bytes,
    pub(crate) tail: Chunks,
    /// The body's whole length.
    pub(crate) body_len: usize,
}

/// Lays out the header `header(body_len)` of `N` bytes, then `extra` (a
/// metadata block), then the body of `value`. When the body's length is
/// known before it is encoded, the header is written once; otherwise it is
/// rewritten after.
pub(crate) fn frame<T: Message + ?Sized, const N: usize>(
    value: impl Encode<T>,
    header: impl Fn(usize) -> [u8; N],
    extra: &[u8],
) -> Result<Framed, EncodeError> {
    let known = value.known_len();
    let mut head = BytesMut::with_capacity(N + extra.len() + value.size_hint());
    head.extend_from_slice(&header(known.unwrap_or(0)));
    if !extra.is_empty() {
        head.extend_from_slice(extra);
    }
    let tail = value.encode_chunks(&mut head)?;
    let body_len = head.len() - N - extra.len() + tail.len();
    if known != Some(body_len) {
        head[..N].copy_from_slice(&header(body_len));
    }
    Ok(Framed {
        head: head.freeze(),
        tail,
        body_len,
    })
}

/// [`frame`] at the end of `buf` (a writer's batch, holding the messages
/// before it): the header and any inline body appended, the body's chunks
/// (if any) returned to be sent after them, uncopied; and the body's
/// length. On failure `buf` is left as it was.
pub(crate) fn frame_append<T: Message + ?Sized, const N: usize>(
    buf: &mut BytesMut,
    value: impl Encode<T>,
    header: impl Fn(usize) -> [u8; N],
) -> Result<(Chunks, usize), EncodeError> {
    let start = buf.len();
    let known = value.known_len();
    let need = N + value.size_hint();
    if buf.capacity() - start < need {
        buf.reserve(need.max(crate::io::BATCH));
    }
    buf.extend_from_slice(&header(known.unwrap_or(0)));
    let tail = match value.encode_chunks(buf) {
        Ok(tail) => tail,
        Err(e) => {
            buf.truncate(start);
            return Err(e);
        }
    };
    let body_len = buf.len() - start - N + tail.len();
    if known != Some(body_len) {
        buf[start..start + N].copy_from_slice(&header(body_len));
    }
    Ok((tail, body_len))
}
