//! Thin reads and writes of headers and bodies on QUIC streams. No protocol
//! decision is made here.

use bytes::{Bytes, BytesMut};
use quicall_transport::quinn::{ReadError, RecvStream, SendStream, WriteError};

/// How reading a fixed number of bytes ended early.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The peer finished the stream after `got` bytes.
    Finished { got: usize },
    /// The peer reset the stream, or the connection failed.
    Read(ReadError),
}

/// Reads exactly `N` bytes into a stack array (no allocation).
pub(crate) async fn read_array<const N: usize>(recv: &mut RecvStream) -> Result<[u8; N], ReadFail> {
    let mut out = [0u8; N];
    let mut got = 0;
    while got < N {
        match recv.read_chunk(N - got, true).await {
            Ok(Some(chunk)) => {
                out[got..got + chunk.bytes.len()].copy_from_slice(&chunk.bytes);
                got += chunk.bytes.len();
            }
            Ok(None) => return Err(ReadFail::Finished { got }),
            Err(e) => return Err(ReadFail::Read(e)),
        }
    }
    Ok(out)
}

/// Reads exactly `len` bytes. When they arrive as one chunk (the common case
/// for a body that fits a few packets received together) the chunk is
/// returned as it is, without a copy; otherwise the chunks are gathered into
/// one buffer of exactly `len` bytes.
pub(crate) async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, ReadFail> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let first = match recv.read_chunk(len, true).await {
        Ok(Some(chunk)) => chunk.bytes,
        Ok(None) => return Err(ReadFail::Finished { got: 0 }),
        Err(e) => return Err(ReadFail::Read(e)),
    };
    if first.len() == len {
        return Ok(first);
    }
    let mut buf = BytesMut::with_capacity(len);
    buf.extend_from_slice(&first);
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(ReadFail::Finished { got: buf.len() }),
            Err(e) => return Err(ReadFail::Read(e)),
        }
    }
    Ok(buf.freeze())
}

/// Waits for the end of the stream after the body; `Ok(false)` if more bytes
/// came instead.
pub(crate) async fn read_fin(recv: &mut RecvStream) -> Result<bool, ReadError> {
    Ok(recv.read_chunk(1, true).await?.is_none())
}

/// Writes `head` (header and inline body) and then `tail` (a body chunk
/// passed on without a copy), and finishes the stream.
pub(crate) async fn write_message(
    send: &mut SendStream,
    head: Bytes,
    tail: Option<Bytes>,
) -> Result<(), WriteError> {
    match tail {
        Some(tail) if !tail.is_empty() => send.write_all_chunks(&mut [head, tail]).await?,
        _ => send.write_chunk(head).await?,
    }
    // Finishing fails only if the stream was reset or stopped meanwhile, in
    // which case the peer does not want the rest anyway.
    let _ = send.finish();
    Ok(())
}
