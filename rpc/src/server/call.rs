//! One call: read the header, check it, admit the call, read the body, run
//! the handler under its deadline and the caller's cancellation, answer.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use quicall_transport::PeerIdentity;
use quicall_transport::quinn::{RecvStream, SendStream};
use tokio::time::{Instant, Sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::unwind::{CatchUnwind, panic_message};
use super::{Context, Shared};
use crate::Status;
use crate::io::{self, ReadFail};
use crate::wire::{self, ErrorCode, REQUEST_HEADER_LEN, ResponseFlags, ResponseHead, WireError};

/// Longest status message sent; longer ones are cut at a character boundary.
pub(crate) const MAX_STATUS_MESSAGE: usize = 4096;

pub(super) async fn serve(
    shared: Arc<Shared>,
    peer: Option<Arc<PeerIdentity>>,
    remote: SocketAddr,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let options = &shared.options;
    shared.streams.fetch_add(1, Ordering::Relaxed);
    let _stream = StreamGauge(&shared.streams);
    // One timer per call, moved from phase to phase (header, body and
    // handler, response); it is registered only if a phase has to wait.
    let timer = tokio::time::sleep(options.header_timeout);
    tokio::pin!(timer);
    let header = tokio::select! {
        biased;
        header = io::read_header::<REQUEST_HEADER_LEN>(&mut recv) => Ok(header),
        () = &mut timer => Err(()),
    };
    let (header, first) = match header {
        Ok(Ok(header)) => header,
        Ok(Err(ReadFail::Finished { got })) => {
            tracing::debug!(%remote, got, "stream ended inside the request header");
            let _ = send.reset(ErrorCode::PROTOCOL.into());
            return;
        }
        Ok(Err(ReadFail::Read(e))) => {
            tracing::debug!(%remote, "stream failed before its header: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "no request header in time");
            let _ = send.reset(ErrorCode::TIMEOUT.into());
            let _ = recv.stop(ErrorCode::TIMEOUT.into());
            return;
        }
    };
    let received = Instant::now();

    let head = match wire::decode_request(&header, options.max_request_size) {
        Ok(head) => head,
        Err(WireError::TooLarge { len, max }) => {
            let status = Status::resource_exhausted(format!(
                "request body of {len} bytes exceeds the limit of {max}"
            ));
            return reject(&mut send, &mut recv, status, options.response_timeout).await;
        }
        Err(e) => {
            let status = Status::invalid_argument(format!("bad request header: {e}"));
            return reject(&mut send, &mut recv, status, options.response_timeout).await;
        }
    };
    let Some(route) = shared.router.get(head.method_id) else {
        let status = Status::unknown_method(format!("no method with id {:#018x}", head.method_id));
        return reject(&mut send, &mut recv, status, options.response_timeout).await;
    };
    if !shared.router.allows(route, peer.as_deref()) {
        let who = peer
            .as_deref()
            .map_or("a caller without certificate", |p| p.name());
        let status = Status::permission_denied(format!("{who} may not call {}", route.name));
        return reject(&mut send, &mut recv, status, options.response_timeout).await;
    }
    if shared.draining.load(Ordering::Relaxed) {
        let status = Status::unavailable("server is shutting down");
        return reject(&mut send, &mut recv, status, options.response_timeout).await;
    }
    let Ok(_call) = shared.calls.try_acquire() else {
        let status = Status::resource_exhausted(format!(
            "server busy: {} calls in flight",
            options.max_calls_in_flight
        ));
        return reject(&mut send, &mut recv, status, options.response_timeout).await;
    };
    let Ok(_memory) = shared.body_bytes.try_acquire_many(head.body_len) else {
        let status = Status::resource_exhausted("server busy: request memory budget in use");
        return reject(&mut send, &mut recv, status, options.response_timeout).await;
    };

    let budget = head
        .deadline
        .unwrap_or(options.default_deadline)
        .min(options.max_deadline);
    let deadline = received + budget;
    let len = head.body_len as usize;

    timer.as_mut().reset(deadline);
    let body = tokio::select! {
        biased;
        body = read_request_body(&mut recv, len, first) => Ok(body),
        () = &mut timer => Err(()),
    };
    let body = match body {
        Ok(Ok(body)) => body,
        Ok(Err(Some(status))) => {
            let _ = recv.stop(ErrorCode::PROTOCOL.into());
            let limit = options.response_timeout;
            return respond(&mut send, Err(status), timer, deadline, limit).await;
        }
        Ok(Err(None)) => return,
        Err(()) => {
            let status = Status::deadline_exceeded("deadline passed while reading the request");
            let limit = options.response_timeout;
            return respond(&mut send, Err(status), timer, deadline, limit).await;
        }
    };

    let cancel = CancellationToken::new();
    let ctx = Context {
        peer,
        remote,
        deadline,
        method: route.name,
        cancel: cancel.clone(),
    };
    let handler = CatchUnwind(route.call(ctx, body, options.max_response_size));
    let caller_gone = send.stopped();
    let outcome = tokio::select! {
        biased;
        outcome = handler => outcome,
        _ = caller_gone => {
            cancel.cancel();
            tracing::debug!(%remote, method = route.name, "caller cancelled; handler dropped");
            return;
        }
        () = &mut timer => {
            cancel.cancel();
            Ok(Err(Status::deadline_exceeded(format!(
                "deadline of {budget:?} passed in the handler"
            ))))
        }
    };
    let reply = match outcome {
        Ok(reply) => reply,
        Err(panic) => {
            tracing::error!(%remote, method = route.name, "handler panicked: {}", panic_message(&*panic));
            Err(Status::internal("handler panicked"))
        }
    };
    respond(&mut send, reply, timer, deadline, options.response_timeout).await;
}

/// Counts a stream being served while alive.
struct StreamGauge<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for StreamGauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the body and the end of the stream. `Err(Some(status))` when the
/// request is malformed, `Err(None)` when the stream or connection failed.
async fn read_request_body(
    recv: &mut RecvStream,
    len: usize,
    first: Bytes,
) -> Result<Bytes, Option<Status>> {
    let body = match io::read_body(recv, len, first).await {
        Ok(body) if body.excess => {
            return Err(Some(Status::invalid_argument(format!(
                "bytes after the {len}-byte request body"
            ))));
        }
        Ok(body) => body.bytes,
        Err(ReadFail::Finished { got }) => {
            return Err(Some(Status::invalid_argument(format!(
                "request body truncated: {got} of {len} bytes"
            ))));
        }
        Err(ReadFail::Read(e)) => {
            tracing::debug!("stream failed inside the request body: {e}");
            return Err(None);
        }
    };
    match io::read_fin(recv).await {
        Ok(true) => Ok(body),
        Ok(false) => Err(Some(Status::invalid_argument(format!(
            "bytes after the {len}-byte request body"
        )))),
        Err(e) => {
            tracing::debug!("stream failed after the request body: {e}");
            Err(None)
        }
    }
}

/// Answers with `status` without reading the body, marked not processed, and
/// asks the client to stop sending.
async fn reject(
    send: &mut SendStream,
    recv: &mut RecvStream,
    status: Status,
    limit: std::time::Duration,
) {
    let _ = recv.stop(ErrorCode::REJECTED.into());
    let status = status.not_processed();
    let _ = timeout(limit, io::write_message(send, status_frame(&status), None)).await;
}

/// Sends the response, giving the client until the deadline or `limit`
/// from now, whichever is later, to take it (`timer` is the call's timer).
async fn respond(
    send: &mut SendStream,
    reply: Result<super::router::Reply, Status>,
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
    limit: std::time::Duration,
) {
    let (head, tail) = match reply {
        Ok(reply) => (reply.head, reply.tail),
        Err(status) => (status_frame(&status), None),
    };
    timer.as_mut().reset(deadline.max(Instant::now() + limit));
    let sent = tokio::select! {
        biased;
        sent = io::write_message(send, head, tail) => Ok(sent),
        () = timer => Err(()),
    };
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("response not delivered: {e}"),
        Err(()) => {
            tracing::debug!("response not taken in time; stream reset");
            let _ = send.reset(ErrorCode::TIMEOUT.into());
        }
    }
}

/// A failed call's response: the header and the status message in one buffer.
pub(crate) fn status_frame(status: &Status) -> Bytes {
    let mut message = status.message();
    if message.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = &message[..end];
    }
    let head = ResponseHead {
        status: status.code().as_u16(),
        flags: if status.was_not_processed() {
            ResponseFlags::NOT_PROCESSED
        } else {
            ResponseFlags::NONE
        },
        body_len: message.len() as u32,
    };
    let mut buf = BytesMut::with_capacity(wire::RESPONSE_HEADER_LEN + message.len());
    buf.extend_from_slice(&head.encode());
    buf.extend_from_slice(message.as_bytes());
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    #[test]
    fn status_frames_carry_code_flag_and_capped_message() {
        let frame = status_frame(&Status::unknown_method("nope").not_processed());
        let head = wire::decode_response(&frame, u32::MAX).unwrap();
        assert_eq!(Code::from_u16(head.status), Code::UnknownMethod);
        assert!(head.flags.contains(ResponseFlags::NOT_PROCESSED));
        assert_eq!(&frame[wire::RESPONSE_HEADER_LEN..], b"nope");

        let long = "é".repeat(MAX_STATUS_MESSAGE);
        let frame = status_frame(&Status::internal(long));
        let head = wire::decode_response(&frame, u32::MAX).unwrap();
        assert!(head.body_len as usize <= MAX_STATUS_MESSAGE);
        assert!(std::str::from_utf8(&frame[wire::RESPONSE_HEADER_LEN..]).is_ok());
    }
}
