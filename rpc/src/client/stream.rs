use bytes::{Buf, Bytes};
use quicall_transport::quinn::{ConnectionError, ReadError, RecvStream, SendStream, WriteError};
use quicall_transport::{Failure, TransportError, describe};

use crate::io::{self, ReadFail};
use crate::wire::{self, ErrorCode, RESPONSE_HEADER_LEN, ResponseFlags, ResponseHead, WireError};
use crate::{Chunks, Code, Metadata, Status};

/// More after a unary response's body: what a server stream would send.
const AFTER_BODY: &str =
    "bytes after the response body (a stream's messages: is the method unary on the server?)";

/// Most entries a response's metadata may have.
const MAX_RESPONSE_METADATA_ENTRIES: usize = 1024;

/// A part of a server stream.
pub(crate) enum StreamPart {
    /// A message's body.
    Message(Bytes),
    /// The end, OK, with the response metadata if any.
    End(Option<Box<Metadata>>),
}

/// A response: its body and the metadata sent with it.
pub(crate) struct Answer {
    /// In the chunks it arrived in.
    pub(crate) body: Chunks,
    /// Boxed: most answers carry none, and futures stay small.
    pub(crate) metadata: Option<Box<Metadata>>,
}

/// The two halves of a call's stream (the send half until a request
/// stream takes it). Dropped before [`CallStream::complete`] (the caller
/// dropped the call, or it failed), it resets its send side and stops its
/// receive side with CANCELLED, which cancels the server's handler.
pub(crate) struct CallStream {
    send: Option<SendStream>,
    recv: RecvStream,
    complete: bool,
}

impl CallStream {
    pub(super) fn new(send: SendStream, recv: RecvStream) -> Self {
        Self {
            send: Some(send),
            recv,
            complete: false,
        }
    }

    /// The send half, for a request stream of its own.
    pub(super) fn take_send(&mut self) -> Option<SendStream> {
        self.send.take()
    }

    /// Writes the request (`finish`: and ends the send side).
    pub(super) async fn send_request(
        &mut self,
        head: Bytes,
        tail: Chunks,
        finish: bool,
    ) -> Result<(), Status> {
        let Some(send) = self.send.as_mut() else {
            return Err(Status::internal("request side already taken"));
        };
        let written = if finish {
            io::write_message(send, head, tail).await
        } else {
            io::write_chunks(send, head, tail).await
        };
        match written {
            Ok(()) => Ok(()),
            // The server answered without reading everything (unknown
            // method, too large ...): its answer says why.
            Err(WriteError::Stopped(_)) => Ok(()),
            Err(e) => Err(write_status(e)),
        }
    }

    /// The response (its body kept in the chunks it arrived in if
    /// `keep_chunks`, else gathered as it arrives).
    pub(super) async fn read_response(
        &mut self,
        max_body: u32,
        keep_chunks: bool,
    ) -> Result<Answer, Status> {
        let (header, first) = io::read_header::<RESPONSE_HEADER_LEN>(&mut self.recv)
            .await
            .map_err(|e| read_status(e, "response header"))?;
        let head = decode_head(&header, max_body, "response body", "response header")?;
        self.read_end(head, first, keep_chunks).await
    }

    /// What follows a response header that ends the call (a unary
    /// response, or a stream's last header): its metadata, its body or
    /// status message, and the FIN; the exchange is then complete.
    async fn read_end(
        &mut self,
        head: ResponseHead,
        first: Bytes,
        keep_chunks: bool,
    ) -> Result<Answer, Status> {
        let (metadata, first) = if head.flags.contains(ResponseFlags::METADATA) {
            let (metadata, first) = Box::pin(self.read_metadata(first)).await?;
            (Some(Box::new(metadata)), first)
        } else {
            (None, first)
        };
        let len = head.body_len as usize;
        let body = io::read_body(&mut self.recv, len, first, |_| true, keep_chunks)
            .await
            .map_err(|e| read_status(e, "response body"))?;
        if body.excess {
            return Err(Status::internal(AFTER_BODY));
        }
        let body = body.chunks;
        match io::read_fin(&mut self.recv).await {
            Ok(true) => {}
            Ok(false) => return Err(Status::internal(AFTER_BODY)),
            Err(e) => return Err(read_status(ReadFail::Read(e), "end of response")),
        }
        self.complete();
        if head.status == Code::Ok.as_u16() {
            return Ok(Answer { body, metadata });
        }
        let status = Status::new(
            Code::from_u16(head.status),
            String::from_utf8_lossy(&body.into_bytes()).into_owned(),
        )
        .with_metadata(metadata.map(|m| *m).unwrap_or_default());
        Err(if head.flags.contains(ResponseFlags::NOT_PROCESSED) {
            status.not_processed()
        } else {
            status
        })
    }

    /// The next part of a server stream, `pending` being what was read
    /// past the previous one: a message's body, or the end of the stream
    /// (Ok with its metadata, or the status it ended with).
    pub(super) async fn read_stream_part(
        &mut self,
        pending: &mut Bytes,
        max_body: u32,
    ) -> Result<StreamPart, Status> {
        let first = std::mem::take(pending);
        let (header, first) = io::read_prefix(&mut self.recv, RESPONSE_HEADER_LEN, first, |_| true)
            .await
            .map_err(|e| read_status(e, "stream message header"))?;
        let head = decode_head(&header, max_body, "stream message", "stream message header")?;
        if !head.flags.contains(ResponseFlags::MESSAGE) {
            // The end: the status, as a unary response's.
            let answer = self.read_end(head, first, false).await?;
            if !answer.body.is_empty() {
                return Err(Status::internal(
                    "a body after the end of the stream (a unary answer: is the method \
                     server-streaming on the server?)",
                ));
            }
            return Ok(StreamPart::End(answer.metadata));
        }
        if head.status != Code::Ok.as_u16()
            || head.flags.contains(ResponseFlags::METADATA)
            || head.flags.contains(ResponseFlags::NOT_PROCESSED)
        {
            return Err(Status::internal(
                "malformed stream message header: a message with a status or flags",
            ));
        }
        let (body, rest) = io::read_prefix(&mut self.recv, head.body_len as usize, first, |_| true)
            .await
            .map_err(|e| read_status(e, "stream message"))?;
        *pending = rest;
        Ok(StreamPart::Message(body))
    }

    /// The next message of a server stream if all of it is in `pending`
    /// already (no await, no timer); `None` when it is not, or when the
    /// next header is anything but a valid message's (the reading that
    /// waits tells what).
    pub(crate) fn ready_message(pending: &mut Bytes, max_body: u32) -> Option<Bytes> {
        let head = wire::decode_response(pending.get(..RESPONSE_HEADER_LEN)?, max_body).ok()?;
        let len = head.body_len as usize;
        if head.flags != ResponseFlags::MESSAGE
            || head.status != Code::Ok.as_u16()
            || pending.len() < RESPONSE_HEADER_LEN + len
        {
            return None;
        }
        pending.advance(RESPONSE_HEADER_LEN);
        Some(pending.split_to(len))
    }

    /// The response's metadata block (after its 2-byte length), and what
    /// came after it.
    async fn read_metadata(&mut self, first: Bytes) -> Result<(Metadata, Bytes), Status> {
        let (len, first) = io::read_prefix(&mut self.recv, 2, first, |_| true)
            .await
            .map_err(|e| read_status(e, "response metadata"))?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let (block, first) = io::read_prefix(&mut self.recv, len, first, |_| true)
            .await
            .map_err(|e| read_status(e, "response metadata"))?;
        // Bounded: a hostile server cannot make the duplicate check
        // quadratic in the 16,000 entries 64 KiB can hold.
        let metadata = Metadata::decode(block, MAX_RESPONSE_METADATA_ENTRIES)
            .map_err(|e| Status::internal(format!("malformed response metadata: {e}")))?;
        Ok((metadata, first))
    }

    /// Marks the exchange finished: dropping no longer resets the stream.
    fn complete(&mut self) {
        self.complete = true;
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if !self.complete {
            if let Some(send) = self.send.as_mut() {
                let _ = send.reset(ErrorCode::CANCELLED.into());
            }
            let _ = self.recv.stop(ErrorCode::CANCELLED.into());
        }
    }
}

/// The status of a request that could not be written.
pub(super) fn write_status(e: WriteError) -> Status {
    match e {
        WriteError::ConnectionLost(e) => connection_status(&e),
        WriteError::Stopped(_) => {
            Status::cancelled("the server stopped reading the requests; its answer says why")
        }
        e => Status::unavailable(format!("request not sent: {e}")),
    }
}

/// A response header, decoded: a body over the client's limit is
/// OUT_OF_RANGE (`body` names it), anything malformed INTERNAL (`header`).
fn decode_head(
    header: &[u8],
    max_body: u32,
    body: &str,
    header_name: &str,
) -> Result<ResponseHead, Status> {
    wire::decode_response(header, max_body).map_err(|e| match e {
        WireError::TooLarge { len, max } => Status::new(
            Code::OutOfRange,
            format!("{body} of {len} bytes exceeds the client's limit of {max}"),
        ),
        e => Status::internal(format!("malformed {header_name}: {e}")),
    })
}

fn read_status(fail: ReadFail, what: &str) -> Status {
    match fail {
        ReadFail::Finished { got } => Status::internal(format!(
            "server ended the stream inside the {what} after {got} bytes"
        )),
        ReadFail::Read(ReadError::Reset(code)) => {
            let code = ErrorCode::from(u32::try_from(code.into_inner()).unwrap_or(u32::MAX));
            match code {
                ErrorCode::PROTOCOL => Status::internal("server reset the call: protocol error"),
                ErrorCode::TIMEOUT => Status::deadline_exceeded("server timed the call out"),
                ErrorCode::CANCELLED => Status::cancelled("server cancelled the call"),
                code => Status::unavailable(format!("server reset the call ({code})")),
            }
        }
        ReadFail::Read(ReadError::ConnectionLost(e)) => connection_status(&e),
        ReadFail::Read(e) => Status::internal(format!("reading the {what}: {e}")),
        ReadFail::Refused => Status::resource_exhausted(format!("{what} refused by the budget")),
    }
}

/// The status of a call whose connection failed.
pub(crate) fn connection_status(e: &ConnectionError) -> Status {
    match Failure::of(e) {
        Failure::Authentication => Status::unauthenticated(describe(e)),
        _ => Status::unavailable(format!("connection failed: {}", describe(e))),
    }
}

/// The status of a failed connection attempt. The call never reached a server.
pub(crate) fn transport_status(e: &TransportError) -> Status {
    let status = match (e.failure(), e) {
        (Failure::Authentication, TransportError::Connection { error, .. }) => {
            Status::unauthenticated(describe(error))
        }
        (Failure::Authentication, _) => Status::unauthenticated(e.to_string()),
        (Failure::Config, _) => Status::invalid_argument(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    };
    status.not_processed()
}
