//! Thin reads and writes of headers and bodies on QUIC streams. No protocol
//! decision is made here.

use bytes::{Buf, Bytes, BytesMut};

use crate::Chunks;
use quicall_transport::quinn::{ReadError, RecvStream, SendStream, WriteError};

/// How reading a fixed number of bytes ended early.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The peer finished the stream after `got` bytes.
    Finished { got: usize },
    /// The peer reset the stream, or the connection failed.
    Read(ReadError),
    /// The reader's budget refused the next bytes.
    Refused,
}

/// Reads an `N`-byte header into a stack array, and with it whatever bytes
/// after it arrived in the same chunk (uncopied: the start of the body, in
/// one read of the stream instead of two). These bytes were already received
/// and buffered by QUIC, so taking them commits no memory.
pub(crate) async fn read_header<const N: usize>(
    recv: &mut RecvStream,
) -> Result<([u8; N], Bytes), ReadFail> {
    let mut out = [0u8; N];
    let mut got = 0;
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                let mut bytes = chunk.bytes;
                let take = (N - got).min(bytes.len());
                out[got..got + take].copy_from_slice(&bytes[..take]);
                got += take;
                if got == N {
                    bytes.advance(take);
                    return Ok((out, bytes));
                }
            }
            Ok(None) => return Err(ReadFail::Finished { got }),
            Err(e) => return Err(ReadFail::Read(e)),
        }
    }
}

/// A body read after its header.
#[derive(Debug)]
pub(crate) struct Body {
    /// Exactly the announced number of bytes, in the chunks they arrived in.
    pub(crate) chunks: Chunks,
    /// Whether more bytes than announced came with it (a protocol error).
    pub(crate) excess: bool,
}

/// Reads exactly `len` bytes, starting with `first` (what came with the
/// header). When they are all in one chunk (the common case for a body that
/// fits a few packets received together) that chunk is returned as it is,
/// without a copy. Otherwise, with `keep_chunks` (a [`Chunks`] body), the
/// chunks are kept as QUIC delivered them, uncopied, but for pieces under
/// [`KEEP_FROM`] bytes, which are copied together; without it, they are
/// gathered into one buffer as they arrive, which grows with what arrived
/// (doubling, up to `len`): a kept chunk holds the whole packet buffer it
/// is part of, and a peer sending a body in tiny pieces would otherwise pin
/// many times the bytes it is charged for. Nothing is reserved for the
/// announced length ahead of the bytes. `admit` is told of every chunk's
/// size as it arrives, before it is kept; when it says no, reading ends
/// with [`ReadFail::Refused`].
pub(crate) async fn read_body(
    recv: &mut RecvStream,
    len: usize,
    first: Bytes,
    mut admit: impl FnMut(usize) -> bool,
    keep_chunks: bool,
) -> Result<Body, ReadFail> {
    let first = if first.is_empty() && len > 0 {
        match recv.read_chunk(len, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => return Err(ReadFail::Finished { got: 0 }),
            Err(e) => return Err(ReadFail::Read(e)),
        }
    } else {
        first
    };
    if !admit(first.len().min(len)) {
        return Err(ReadFail::Refused);
    }
    if first.len() >= len {
        return Ok(Body {
            excess: first.len() > len,
            chunks: Chunks::from(first.slice(..len)),
        });
    }
    let mut body = Gathered::new(keep_chunks, len, first);
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => {
                if !admit(chunk.bytes.len()) {
                    return Err(ReadFail::Refused);
                }
                body.push(chunk.bytes);
            }
            Ok(None) => return Err(ReadFail::Finished { got: body.len() }),
            Err(e) => return Err(ReadFail::Read(e)),
        }
    }
    Ok(Body {
        chunks: body.finish(),
        excess: false,
    })
}

/// Pieces of a kept body shorter than this are copied together rather
/// than kept (each would hold a packet buffer for a few bytes). Above it,
/// what a kept chunk holds is at most its packet's headers more.
pub(crate) const KEEP_FROM: usize = 1024;

/// A body being read: kept chunks (and small pieces copied together), or
/// one buffer gathering everything.
struct Gathered {
    keep: bool,
    /// The announced length.
    len: usize,
    chunks: Chunks,
    /// Small pieces (kept bodies) or everything (gathered ones), copied.
    buf: BytesMut,
}

impl Gathered {
    fn new(keep: bool, len: usize, first: Bytes) -> Self {
        let mut body = Gathered {
            keep,
            len,
            chunks: Chunks::new(),
            buf: BytesMut::new(),
        };
        body.push(first);
        body
    }

    fn len(&self) -> usize {
        self.chunks.len() + self.buf.len()
    }

    fn push(&mut self, bytes: Bytes) {
        if self.keep && bytes.len() >= KEEP_FROM {
            if !self.buf.is_empty() {
                self.chunks.push(self.buf.split().freeze());
            }
            self.chunks.push(bytes);
            return;
        }
        if !self.keep && self.buf.capacity() - self.buf.len() < bytes.len() {
            // Grows with what arrived, never to the announced length ahead
            // of the bytes.
            let needed = self.buf.len() + bytes.len();
            let room = needed.max(self.buf.capacity() * 2).max(FIRST_GATHER);
            self.buf.reserve(room.min(self.len) - self.buf.len());
        }
        self.buf.extend_from_slice(&bytes);
    }

    fn finish(mut self) -> Chunks {
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        self.chunks
    }
}

/// Room for a gathered body's first chunks; the buffer doubles from there
/// as bytes arrive.
const FIRST_GATHER: usize = 64 << 10;

/// Reads exactly `len` bytes that come before something else (a metadata
/// block before a body), starting with `first`; returns them and what came
/// after them in the same chunk. `admit` is told of every byte kept, as
/// [`read_body`] does.
pub(crate) async fn read_prefix(
    recv: &mut RecvStream,
    len: usize,
    mut first: Bytes,
    mut admit: impl FnMut(usize) -> bool,
) -> Result<(Bytes, Bytes), ReadFail> {
    if first.len() >= len {
        if !admit(len) {
            return Err(ReadFail::Refused);
        }
        let prefix = first.split_to(len);
        return Ok((prefix, first));
    }
    let mut buf = BytesMut::with_capacity(len);
    loop {
        let take = (len - buf.len()).min(first.len());
        if !admit(take) {
            return Err(ReadFail::Refused);
        }
        buf.extend_from_slice(&first.split_to(take));
        if buf.len() == len {
            return Ok((buf.freeze(), first));
        }
        first = match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => return Err(ReadFail::Finished { got: buf.len() }),
            Err(e) => return Err(ReadFail::Read(e)),
        };
    }
}

/// Waits for the end of the stream after the body; `Ok(false)` if more bytes
/// came instead.
pub(crate) async fn read_fin(recv: &mut RecvStream) -> Result<bool, ReadError> {
    Ok(recv.read_chunk(1, true).await?.is_none())
}

/// Bytes of stream messages framed into one buffer before QUIC takes them
/// (see [`COALESCE_BELOW`]).
pub(crate) const BATCH: usize = 64 << 10;

/// Bytes a stream's writer hands QUIC before it lets other tasks run, when
/// QUIC takes everything at once (the flow-control window has room): the
/// connection's driver, often on the same thread, then sends them, rather
/// than waiting until the writer has filled the whole window. A window
/// written before its first packet leaves is made, sent and read in turn,
/// not together, and each message waits behind a window's worth (a 64 B
/// server stream: p50 6 ms before, 1 to 2.5 ms after; 16 KiB requests
/// written 128 at a time between yields were a 2 MiB burst).
pub(crate) const YIELD_AFTER: usize = 4 * BATCH;

/// Bodies shorter than this are copied next to their headers into a batch
/// buffer: QUIC keeps every chunk it is given as a segment until it is
/// acknowledged and gathers a packet's bytes segment by segment, so
/// thousands of tiny segments cost far more than copying them (a million
/// 64-byte messages: 1.4 M/s as two chunks each, 4.4 M/s coalesced, when
/// quinn still walked the segments from the first for every frame; the
/// vendored quinn-proto searches them now). Longer bodies go as they are.
pub(crate) const COALESCE_BELOW: usize = 2048;

/// Appends `bytes` to `batch`, which grows by [`BATCH`] at a time (the
/// chunks split off it earlier stay with QUIC until acknowledged).
pub(crate) fn append(batch: &mut BytesMut, bytes: &[u8]) {
    if batch.capacity() - batch.len() < bytes.len() {
        batch.reserve(BATCH.max(bytes.len()));
    }
    batch.extend_from_slice(bytes);
}

/// Adds a message's body to what is written next: copied into `batch` if
/// short, else after what `batch` holds, as a chunk of its own. Returns the
/// bytes added to `chunks`.
pub(crate) fn gather(batch: &mut BytesMut, chunks: &mut Vec<Bytes>, bytes: Bytes) -> usize {
    if bytes.len() < COALESCE_BELOW {
        append(batch, &bytes);
        return 0;
    }
    let moved = batch.len() + bytes.len();
    if !batch.is_empty() {
        chunks.push(batch.split().freeze());
    }
    chunks.push(bytes);
    moved
}

/// Room left in a batch below which the next message is framed in a new
/// one: a header and a body short enough to be copied.
const ROOM: usize = COALESCE_BELOW + crate::wire::MESSAGE_HEADER_LEN;

/// Makes sure `batch` has room for a short message: when it has not, what
/// it holds goes to `chunks` as it is and it takes a new buffer. Without
/// this, the message that overflows it would make it grow, copying every
/// message before it (once per batch: a second copy of a stream's bytes).
/// Returns the bytes added to `chunks`.
pub(crate) fn make_room(batch: &mut BytesMut, chunks: &mut Vec<Bytes>) -> usize {
    if batch.capacity() - batch.len() >= ROOM {
        return 0;
    }
    let moved = batch.len();
    if moved > 0 {
        chunks.push(batch.split().freeze());
    }
    batch.reserve(BATCH);
    moved
}

/// One message (`head`, and `tail` if any) as the chunks to write: header
/// and a short body copied together into `batch`, a long body apart.
pub(crate) fn coalesce(batch: &mut BytesMut, head: Bytes, tail: Chunks) -> (Bytes, Chunks) {
    if tail.len() >= COALESCE_BELOW {
        return (head, tail);
    }
    append(batch, &head);
    for chunk in tail.iter() {
        append(batch, chunk);
    }
    (batch.split().freeze(), Chunks::new())
}

/// Writes `head` (header and inline body) and then `tail` (a body's
/// chunks, passed on without a copy), leaving the stream open.
pub(crate) async fn write_chunks(
    send: &mut SendStream,
    head: Bytes,
    tail: Chunks,
) -> Result<(), WriteError> {
    let (first, mut rest) = tail.into_parts();
    if first.is_empty() {
        send.write_chunk(head).await?;
    } else {
        send.write_all_chunks(&mut [head, first]).await?;
    }
    if !rest.is_empty() {
        send.write_all_chunks(&mut rest).await?;
    }
    Ok(())
}

/// Writes `head` (header and inline body) and then `tail` (a body's
/// chunks, passed on without a copy), and finishes the stream.
pub(crate) async fn write_message(
    send: &mut SendStream,
    head: Bytes,
    tail: Chunks,
) -> Result<(), WriteError> {
    write_chunks(send, head, tail).await?;
    // Finishing fails only if the stream was reset or stopped meanwhile, in
    // which case the peer does not want the rest anyway.
    let _ = send.finish();
    Ok(())
}
