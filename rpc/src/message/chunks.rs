//! Raw bytes kept in the chunks QUIC delivered them in: a body that is
//! never gathered into one buffer, on either side.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};

use super::{BodyError, Encode, EncodeError, Message, Msg};

/// Raw bytes as a list of chunks, for bodies too large to want a copy: a
/// method declared with `Chunks` receives its body in the chunks QUIC
/// delivered it in (a 1 MiB body arrives as a hundred or more), none of
/// them copied, and sends a `Chunks` body as its chunks, none of them
/// copied either. On the wire it is the same as `[u8]`: a peer may declare
/// the same method with `[u8]` (and then reads one contiguous buffer).
///
/// Received pieces under 1 KiB are copied together rather than kept (each
/// would hold a packet buffer for a few bytes); a kept piece holds the
/// receive buffer it arrived in (see docs/security.md, "Known limits").
///
/// ```
/// use bytes::Bytes;
/// use quicall_rpc::{Chunks, Method, Msg};
///
/// const STORE: Method<Chunks, Chunks> = Method::new("blob.Blob/Store");
///
/// let mut body = Chunks::new();
/// body.push(Bytes::from_static(b"hello, "));
/// body.push(Bytes::from_static(b"world"));
/// assert_eq!((body.len(), body.chunk_count()), (12, 2));
/// assert_eq!(body.to_bytes(), "hello, world");
///
/// // A received body reads the same way.
/// let msg = Msg::<Chunks>::new(Bytes::from_static(b"abc")).unwrap();
/// assert_eq!(msg.len(), 3);
/// assert_eq!(msg.iter().map(|c| c.len()).sum::<usize>(), 3);
/// ```
#[derive(Clone, Default)]
pub struct Chunks {
    /// The first chunk (empty if there is none): most bodies are one
    /// chunk, which then costs no allocation and keeps the type small
    /// (it is moved with every call's future).
    first: Bytes,
    /// The chunks after the first, if any.
    more: Option<Box<More>>,
}

/// The chunks after the first.
#[derive(Clone, Default)]
struct More {
    chunks: VecDeque<Bytes>,
    /// The bytes in them.
    len: usize,
}

/// No chunks after the first.
static NO_MORE: VecDeque<Bytes> = VecDeque::new();

impl Chunks {
    /// No bytes.
    pub const fn new() -> Self {
        Self {
            first: Bytes::new(),
            more: None,
        }
    }

    /// Appends `chunk` (without copying it; an empty one is skipped).
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        if self.first.is_empty() {
            self.first = chunk;
            return;
        }
        let more = self.more.get_or_insert_default();
        more.len += chunk.len();
        more.chunks.push_back(chunk);
    }

    /// The bytes in all the chunks.
    pub fn len(&self) -> usize {
        self.first.len() + self.more.as_ref().map_or(0, |more| more.len)
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// How many chunks hold the bytes.
    pub fn chunk_count(&self) -> usize {
        usize::from(!self.first.is_empty()) + self.rest().len()
    }

    /// The chunks, in order; none is empty.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        std::iter::once(&self.first)
            .filter(|first| !first.is_empty())
            .chain(self.rest())
    }

    /// The chunks after the first.
    fn rest(&self) -> &VecDeque<Bytes> {
        self.more.as_ref().map_or(&NO_MORE, |more| &more.chunks)
    }

    /// The bytes in one buffer: the chunk itself if there is one, else a
    /// copy of them all.
    pub fn to_bytes(&self) -> Bytes {
        if self.rest().is_empty() {
            return self.first.clone();
        }
        self.gather()
    }

    /// The bytes in one buffer, as [`to_bytes`](Chunks::to_bytes), without
    /// a reference count when there is one chunk.
    pub fn into_bytes(self) -> Bytes {
        if self.rest().is_empty() {
            return self.first;
        }
        self.gather()
    }

    /// One buffer of exactly `len` bytes holding them all.
    fn gather(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        for chunk in self.iter() {
            out.extend_from_slice(chunk);
        }
        out.freeze()
    }

    /// Takes the first `n` bytes (at most all of them) off the front, in
    /// one buffer: a part of the first chunk without a copy when it holds
    /// them, else gathered.
    pub(crate) fn split_to(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len());
        if self.first.len() >= n {
            let taken = self.first.split_to(n);
            self.refill();
            return taken;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let take = (n - out.len()).min(self.first.len());
            out.extend_from_slice(&self.first.split_to(take));
            self.refill();
        }
        out.freeze()
    }

    /// Moves the next chunk up when the first is used up.
    fn refill(&mut self) {
        if !self.first.is_empty() {
            return;
        }
        if let Some(more) = &mut self.more
            && let Some(next) = more.chunks.pop_front()
        {
            more.len -= next.len();
            self.first = next;
        }
    }

    /// Gives each chunk to `f`, in order (no empty one): what
    /// [`IntoIterator`] does, without making and dropping an iterator over
    /// the chunks after the first when there are none (the common case,
    /// once per message of a stream).
    pub(crate) fn for_each_chunk(self, mut f: impl FnMut(Bytes)) {
        if !self.first.is_empty() {
            f(self.first);
        }
        if let Some(more) = self.more {
            more.chunks.into_iter().for_each(f);
        }
    }

    /// The first chunk and the rest, to be written in order.
    pub(crate) fn into_parts(self) -> (Bytes, Vec<Bytes>) {
        let rest = self.more.map_or_else(Vec::new, |more| more.chunks.into());
        (self.first, rest)
    }
}

impl From<Bytes> for Chunks {
    fn from(chunk: Bytes) -> Self {
        Self {
            first: chunk,
            more: None,
        }
    }
}

/// Equal when they hold the same bytes, however they are split.
impl PartialEq for Chunks {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.to_bytes() == other.to_bytes()
    }
}

impl Eq for Chunks {}

impl From<Option<Bytes>> for Chunks {
    fn from(chunk: Option<Bytes>) -> Self {
        chunk.map_or_else(Self::new, Self::from)
    }
}

impl IntoIterator for Chunks {
    type Item = Bytes;
    type IntoIter = std::iter::Chain<
        std::option::IntoIter<Bytes>,
        std::collections::vec_deque::IntoIter<Bytes>,
    >;

    /// The chunks, in order; none is empty.
    fn into_iter(self) -> Self::IntoIter {
        let first = (!self.first.is_empty()).then_some(self.first);
        let rest = self.more.map(|more| more.chunks).unwrap_or_default();
        first.into_iter().chain(rest)
    }
}

impl FromIterator<Bytes> for Chunks {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        let mut chunks = Self::new();
        for chunk in iter {
            chunks.push(chunk);
        }
        chunks
    }
}

impl fmt::Debug for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunks")
            .field("len", &self.len())
            .field("chunks", &self.chunk_count())
            .finish()
    }
}

impl Message for Chunks {
    type View = Chunks;
    type Decoded = Chunks;

    const KEEPS_CHUNKS: bool = true;

    /// Any bytes are a valid body; they are kept as they are.
    fn receive(body: Bytes, _exact: bool) -> Result<(Bytes, Chunks), BodyError> {
        Ok((Bytes::new(), Chunks::from(body)))
    }

    /// The chunks are kept as they arrived: no copy.
    fn receive_chunks(body: Chunks, _exact: bool) -> Result<(Bytes, Chunks), BodyError> {
        Ok((Bytes::new(), body))
    }

    fn into_body(_bytes: Bytes, decoded: Chunks) -> Chunks {
        decoded
    }

    fn body_len(msg: &Msg<Self>) -> usize {
        msg.decoded().len()
    }

    fn view(msg: &Msg<Chunks>) -> &Chunks {
        msg.decoded()
    }
}

impl Encode<Chunks> for Chunks {
    fn size_hint(&self) -> usize {
        0
    }

    fn known_len(&self) -> Option<usize> {
        Some(self.len())
    }

    fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        Ok(Some(self.into_bytes()))
    }

    fn encode_chunks(self, _: &mut BytesMut) -> Result<Chunks, EncodeError> {
        Ok(self)
    }
}

impl Encode<Chunks> for Bytes {
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

impl Encode<Chunks> for Vec<u8> {
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

impl Encode<Chunks> for &[u8] {
    fn size_hint(&self) -> usize {
        self.len()
    }

    fn known_len(&self) -> Option<usize> {
        Some(self.len())
    }

    fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, EncodeError> {
        buf.extend_from_slice(self);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_keep_their_bytes_in_order_and_skip_empty_ones() {
        let chunks: Chunks = [
            Bytes::new(),
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]
        .into_iter()
        .collect();
        assert_eq!((chunks.len(), chunks.chunk_count()), (5, 2));
        assert_eq!(chunks.iter().collect::<Vec<_>>(), [&b"ab"[..], &b"cde"[..]]);
        assert_eq!(chunks.to_bytes(), "abcde");
        assert_eq!(Chunks::new().iter().count(), 0);
        let mut given = Vec::new();
        chunks.clone().for_each_chunk(|chunk| given.push(chunk));
        assert_eq!(given, [&b"ab"[..], &b"cde"[..]]);
        Chunks::new().for_each_chunk(|_| panic!("no chunk in an empty body"));
        assert!(Chunks::from(None).is_empty());
        assert_eq!(chunks, Chunks::from(Bytes::from_static(b"abcde")));
        assert_ne!(chunks, Chunks::from(Bytes::from_static(b"abcdf")));
        assert_eq!(size_of::<Chunks>(), 40);
    }

    #[test]
    fn a_prefix_is_split_off_across_chunks() {
        let mut chunks: Chunks = [&b"ab"[..], b"cde", b"f"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        assert_eq!(chunks.split_to(1), "a");
        assert_eq!(chunks.split_to(3), "bcd");
        assert_eq!((chunks.len(), chunks.to_bytes()), (2, Bytes::from("ef")));
        assert_eq!(chunks.split_to(9), "ef");
        assert!(chunks.is_empty() && chunks.chunk_count() == 0);
    }

    #[test]
    fn one_chunk_is_given_back_without_a_copy() {
        let bytes = Bytes::from(vec![7u8; 4096]);
        let ptr = bytes.as_ptr();
        assert_eq!(Chunks::from(bytes.clone()).into_bytes().as_ptr(), ptr);
        let two: Chunks = [bytes.clone(), bytes].into_iter().collect();
        let gathered = two.into_bytes();
        assert_eq!((gathered.len(), gathered[8191]), (8192, 7));
    }

    #[test]
    fn a_received_message_is_sent_on_as_the_same_chunks() {
        let body: Chunks = [Bytes::from_static(b"x"), Bytes::from_static(b"yz")]
            .into_iter()
            .collect();
        let msg = Msg::<Chunks>::receive_chunks(body.clone(), true).unwrap();
        assert_eq!(*msg, body);
        assert_eq!(Encode::<Chunks>::known_len(&msg), Some(3));
        let mut buf = BytesMut::new();
        assert_eq!(msg.clone().encode_chunks(&mut buf).unwrap(), body);
        assert!(buf.is_empty());
        assert_eq!(msg.into_bytes(), "xyz");
    }
}
