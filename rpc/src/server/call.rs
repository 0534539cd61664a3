//! One call: read the header, check it, admit the call, read the body, run
//! the handler under its deadline and the caller's cancellation, answer.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use quicall_transport::PeerIdentity;
use quicall_transport::quinn::{RecvStream, SendStream};
use tokio::time::{Instant, Sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::context::Extras;
use super::intercept::{self, Outcome};
use super::limiter::Arrival;
use super::requests::Reader;
use super::router::{Input, Route};
use super::shares::{CallSlot, Charge, Peer, Refusal};
use super::unwind::{CatchUnwind, panic_message};
use super::{Context, ServerOptions, Shared};
use crate::admission::Priority;
use crate::io::{self, ReadFail};
use crate::meter::CallMeter;
use crate::wire::{
    self, ErrorCode, REQUEST_HEADER_LEN, RequestHead, ResponseFlags, ResponseHead, WireError,
};
use tracing::Instrument;

use crate::{Chunks, Code, Metadata, MetadataError, Status, TRACEPARENT, TraceContext};

/// Longest status message sent; longer ones are cut at a character boundary.
pub(crate) const MAX_STATUS_MESSAGE: usize = 4096;

pub(super) async fn serve(
    shared: Arc<Shared>,
    mut arrival: Option<Arrival>,
    peer: Arc<Peer>,
    identity: Option<Arc<PeerIdentity>>,
    remote: SocketAddr,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let options = &shared.options;
    let _stream = Held::new(&shared.streams, 1);
    // One timer per call, moved from phase to phase (header, body, handler,
    // response); it is registered only if a phase has to wait.
    let timer = tokio::time::sleep(options.header_timeout);
    tokio::pin!(timer);
    let header = {
        let read = io::read_header::<REQUEST_HEADER_LEN>(&mut recv);
        tokio::pin!(read);
        // Waiting on the network: no place under the adaptive limit
        // meanwhile (one is taken again when the header has come).
        until(read, timer.as_mut(), || {
            if let Some(arrival) = &mut arrival {
                arrival.pause();
            }
        })
        .await
    };
    let (header, first) = match header {
        Ok(Ok(header)) => header,
        Ok(Err(ReadFail::Finished { got })) => {
            tracing::debug!(%remote, got, "stream ended inside the request header");
            let _ = send.reset(ErrorCode::PROTOCOL.into());
            return;
        }
        Ok(Err(e)) => {
            // The client reset its request side (or the connection ended):
            // the response side ends likewise, always the same way.
            tracing::debug!(%remote, "stream failed before its header: {e:?}");
            let _ = send.reset(ErrorCode::CANCELLED.into());
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

    let (head, route, mut slot) = match admit(&shared, &peer, identity.as_deref(), &header, arrival)
    {
        Ok(admitted) => admitted,
        Err(status) => {
            // The bytes that came with the header are not kept while the
            // answer waits to be taken.
            drop(first);
            return reject(&mut send, &mut recv, status).await;
        }
    };
    let meter = route.meter.as_ref().map(|m| m.begin(received.into_std()));

    let budget = head
        .deadline
        .unwrap_or(options.default_deadline)
        .min(options.max_deadline);
    let deadline = received + budget;
    let len = head.body_len as usize;
    let meta_len = head.metadata_len.map_or(0, usize::from);
    // The body has a time of its own, whatever the deadline: a caller that
    // announces a body and sends it slowly (or never) holds its slot and its
    // bytes only this long.
    let body_by = received + options.transfer_time(options.body_timeout, len + meta_len);
    // The response carries metadata only for a caller that reads it.
    let reply_metadata = head
        .metadata_len
        .map(|_| Arc::new(std::sync::Mutex::new(Metadata::new())));

    let mut charge = Charge::new(&shared.body_bytes, &peer);
    let mut refused = None;
    timer.as_mut().reset(deadline.min(body_by));
    let body = {
        let read = read_request(
            &mut recv,
            (head.stream, route.keeps_chunks),
            meta_len + len,
            first,
            |n| match charge.add(n) {
                Ok(()) => true,
                Err(refusal) => {
                    refused = Some(refusal);
                    false
                }
            },
        );
        tokio::pin!(read);
        // Waiting on the network: no place under the adaptive limit
        // meanwhile.
        until(read, timer.as_mut(), || slot.pause()).await
    };
    let (metadata, body, rest) = match body {
        // The metadata block and the body, read as one (a request stream's
        // messages are read later, as the handler asks for them).
        Ok(Ok((mut body, rest))) => {
            if let Some(meter) = &meter {
                // A request stream's messages are counted as they are read.
                meter.flow().requests(u64::from(!head.stream), body.len());
            }
            (body.split_to(meta_len), body, rest)
        }
        Ok(Err(BodyFail::Malformed(status))) => {
            let _ = recv.stop(ErrorCode::PROTOCOL.into());
            drop(charge);
            return refuse(&mut send, status, timer, &shared, meter).await;
        }
        Ok(Err(BodyFail::Refused)) => {
            let _ = recv.stop(ErrorCode::REJECTED.into());
            drop(charge);
            let status = refusal_status(refused, &peer, options).not_processed();
            return refuse(&mut send, status, timer, &shared, meter).await;
        }
        Ok(Err(BodyFail::Broken)) => {
            let _ = send.reset(ErrorCode::CANCELLED.into());
            return;
        }
        Err(()) => {
            let _ = recv.stop(ErrorCode::TIMEOUT.into());
            drop(charge);
            let status = if Instant::now() >= deadline {
                Status::deadline_exceeded("deadline passed while reading the request")
            } else {
                Status::deadline_exceeded(format!(
                    "request body of {len} bytes not received within {:?} \
                     (the server waits {:?} plus {} bytes/s)",
                    body_by - received,
                    options.body_timeout,
                    options.min_transfer_rate
                ))
            };
            return refuse(&mut send, status, timer, &shared, meter).await;
        }
    };
    let metadata = match Metadata::decode(metadata, options.max_metadata_entries) {
        Ok(metadata) => metadata,
        Err(e) => {
            let status = match e {
                MetadataError::TooMany(_) => Status::resource_exhausted(e.to_string()),
                e => Status::invalid_argument(e.to_string()),
            };
            return refuse(&mut send, status, timer, &shared, meter).await;
        }
    };

    // Under the adaptive limit: a call whose body had to be waited for
    // takes a place again, and its priority decides how full the server
    // may be for it to stay.
    if shared.limiter.is_some()
        && let Err(refusal) = slot
            .resume()
            .and_then(|()| slot.prioritize(Priority::of(&metadata)))
    {
        let status = refusal_status(Some(refusal), &peer, options).not_processed();
        return refuse(&mut send, status, timer, &shared, meter).await;
    }
    let cancel = CancellationToken::new();
    // A request stream's reader (which a handler may hand to a task of its
    // own) stops reading when the call is over.
    let _over = head.stream.then(|| cancel.clone().drop_guard());
    let mut ctx = Context {
        peer: identity,
        remote,
        deadline,
        method: route.name,
        cancel: cancel.clone(),
        extras: (!metadata.is_empty() || reply_metadata.is_some()).then(|| {
            Box::new(Extras {
                metadata,
                reply_metadata: reply_metadata.clone(),
                extensions: Default::default(),
            })
        }),
    };
    let interceptors = &shared.router.interceptors;
    if !interceptors.is_empty() {
        timer.as_mut().reset(deadline);
        // Boxed: calls on a router without interceptors keep their future
        // small.
        match Box::pin(intercept(
            interceptors,
            ctx,
            timer.as_mut(),
            budget,
            received,
        ))
        .await
        {
            Ok(intercepted) => ctx = intercepted,
            Err(status) => {
                return respond(
                    &mut send,
                    counted(Err(status), options, taken(reply_metadata), meter, false),
                    timer,
                    &shared,
                )
                .await;
            }
        }
    }
    let observed = (!interceptors.is_empty()).then(|| ctx.peer.clone());
    // A caller's trace continues in a span of its own, current while the
    // handler runs (the calls it makes are its children).
    let span = serve_span(&ctx);
    let parent = TraceContext::parse(ctx.metadata().get(TRACEPARENT).unwrap_or_default());
    let trace = crate::trace::own_span(span.as_deref(), parent, false);
    // The timer still says `deadline.min(body_by)`: moved to the deadline
    // only if it fires first (a handler running past the body's time), so
    // that the common call resets it no more often than it must.
    let input = if head.stream {
        Input::Stream(Reader::new(
            recv,
            rest,
            (shared.clone(), peer.clone()),
            deadline,
            cancel.clone(),
            (route.name, route.meter.as_ref().map(|m| m.flow().clone())),
        ))
    } else {
        Input::Body(body)
    };
    let ended = {
        let max = options.max_response_size;
        let handler = match trace {
            Some(own) => Box::pin(own.scope(own.enter(|| route.call(ctx, input, max)))),
            None => route.call(ctx, input, max),
        };
        let handler = match &span {
            Some(span) => Box::pin(handler.instrument((**span).clone())),
            None => handler,
        };
        let handler = CatchUnwind(handler);
        let caller_gone = send.stopped();
        tokio::pin!(handler, caller_gone);
        loop {
            tokio::select! {
                biased;
                outcome = &mut handler => break Some(outcome),
                _ = &mut caller_gone => {
                    cancel.cancel();
                    break None;
                }
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        cancel.cancel();
                        break Some(Ok(Err(Status::deadline_exceeded(format!(
                            "deadline of {budget:?} passed in the handler"
                        )))));
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    };
    // The handler's latency teaches the adaptive limit (a call that ran out
    // of time, or whose caller left, as a failure).
    slot.handled(match &ended {
        None => false,
        Some(Ok(Err(status))) => status.code() != Code::DeadlineExceeded,
        Some(_) => true,
    });
    let Some(outcome) = ended else {
        let _ = send.reset(ErrorCode::CANCELLED.into());
        tracing::debug!(%remote, method = route.name, "caller cancelled; handler dropped");
        if let Some(span) = span {
            span.record("status", Code::Cancelled.name());
            span.record("otel.status_code", "error");
        }
        return;
    };
    let reply = match outcome {
        Ok(reply) => reply,
        Err(panic) => {
            tracing::error!(%remote, method = route.name, "handler panicked: {}", panic_message(&*panic));
            Err(Status::internal("handler panicked"))
        }
    };
    // A server stream: its messages, then the status.
    let streamed = matches!(
        &reply,
        Ok(super::router::Reply {
            stream: Some(_),
            ..
        })
    );
    let reply = match reply {
        Ok(super::router::Reply {
            head,
            tail,
            stream: Some(messages),
        }) => {
            let out = stream_out(
                &mut send,
                messages,
                timer.as_mut(),
                (deadline, budget),
                options,
                meter.as_ref(),
                &shared.response_bytes,
            );
            let sent = match (trace, &span) {
                (Some(own), Some(span)) => own.scope(out.instrument((**span).clone())).await,
                (Some(own), None) => own.scope(out).await,
                (None, Some(span)) => out.instrument((**span).clone()).await,
                (None, None) => out.await,
            };
            match sent {
                Some(Ok(())) => Ok(super::router::Reply {
                    head,
                    tail,
                    stream: None,
                }),
                Some(Err(status)) => Err(status),
                None => {
                    let _ = send.reset(ErrorCode::CANCELLED.into());
                    if let Some(span) = span {
                        span.record("status", Code::Cancelled.name());
                        span.record("otel.status_code", "error");
                    }
                    return;
                }
            }
        }
        reply => reply,
    };
    let code = reply.as_ref().err().map_or(Code::Ok, Status::code);
    crate::client::end_span(span, code, received);
    if let Some(peer) = observed {
        let outcome = Outcome {
            method: route.name,
            peer: peer.as_deref(),
            code: reply.as_ref().err().map_or(Code::Ok, Status::code),
            elapsed: received.elapsed(),
        };
        intercept::after(interceptors, &outcome);
    }
    respond(
        &mut send,
        counted(reply, options, taken(reply_metadata), meter, streamed),
        timer,
        &shared,
    )
    .await;
}

/// `read`'s output, or `Err(())` if `timer` fires first; `waiting` is
/// called once, if `read` is not ready when first polled.
async fn until<F: std::future::Future>(
    mut read: Pin<&mut F>,
    mut timer: Pin<&mut Sleep>,
    mut waiting: impl FnMut(),
) -> Result<F::Output, ()> {
    let mut first = true;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = read.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if std::mem::take(&mut first) {
            waiting();
        }
        timer.as_mut().poll(cx).map(|()| Err(()))
    })
    .await
}

/// Frames the answer and counts it in the method's metrics.
fn counted(
    reply: Result<super::router::Reply, Status>,
    options: &ServerOptions,
    metadata: Option<Metadata>,
    meter: Option<CallMeter<'_>>,
    streamed: bool,
) -> (Bytes, Chunks) {
    let code = reply.as_ref().err().map_or(Code::Ok, Status::code);
    let (head, tail) = frame_reply(reply, options, metadata);
    if let Some(meter) = meter {
        // A unary answer is a message; a stream's messages were counted as
        // they were sent, and its end is none.
        let message = !streamed && code == Code::Ok;
        let len = head.len() + tail.len();
        meter.flow().responses(u64::from(message), len);
        meter.finish(code);
    }
    (head, tail)
}

/// Runs the interceptors before the handler, under the deadline; a refusal
/// is NOT_PROCESSED, and the interceptors see it as the outcome.
async fn intercept(
    interceptors: &[Arc<dyn intercept::Interceptor>],
    ctx: Context,
    timer: Pin<&mut Sleep>,
    budget: std::time::Duration,
    received: Instant,
) -> Result<Context, Status> {
    let method = ctx.method;
    let peer = ctx.peer.clone();
    let result = tokio::select! {
        biased;
        result = intercept::before(interceptors, ctx) => result,
        () = timer => Err(Status::deadline_exceeded(format!(
            "deadline of {budget:?} passed in the interceptors"
        ))),
    };
    result.map_err(|status| {
        let status = status.not_processed();
        let outcome = Outcome {
            method,
            peer: peer.as_deref(),
            code: status.code(),
            elapsed: received.elapsed(),
        };
        intercept::after(interceptors, &outcome);
        status
    })
}

/// The call's `tracing` span, when a subscriber wants it (boxed, so that
/// the call's future stays small without one): method, peer, trace ids;
/// status and latency are recorded when it ends.
fn serve_span(ctx: &Context) -> Option<Box<tracing::Span>> {
    use tracing::field::Empty;
    if !tracing::enabled!(target: "quicall", tracing::Level::DEBUG) {
        return None;
    }
    let span = tracing::debug_span!(
        target: "quicall",
        "quicall.serve",
        method = ctx.method,
        peer = Empty,
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
        status = Empty,
        latency_us = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
    );
    if let Some(peer) = ctx.peer() {
        span.record("peer", peer.name());
    }
    Some(Box::new(span))
}

/// The response's metadata, if the caller reads it and any was set.
fn taken(reply: Option<Arc<std::sync::Mutex<Metadata>>>) -> Option<Metadata> {
    let reply = reply?;
    let metadata = std::mem::take(&mut *reply.lock().unwrap_or_else(|e| e.into_inner()));
    (!metadata.is_empty()).then_some(metadata)
}

/// Steps 2 to 6 of the processing order (docs/wire.md), from the header
/// alone: the decoded header, the route and the call's slot, or the status
/// to answer with (not processed).
fn admit<'a>(
    shared: &'a Shared,
    peer: &'a Peer,
    identity: Option<&PeerIdentity>,
    header: &[u8; REQUEST_HEADER_LEN],
    arrival: Option<Arrival>,
) -> Result<(RequestHead, &'a Route, CallSlot<'a>), Status> {
    let options = &shared.options;
    let head = match wire::decode_request(header, options.max_request_size) {
        Ok(head) => head,
        Err(WireError::TooLarge { len, max }) => {
            // Not RESOURCE_EXHAUSTED: no retry, anywhere, can succeed.
            return Err(Status::invalid_argument(format!(
                "request body of {len} bytes exceeds the server's limit of {max}"
            )));
        }
        Err(e) => return Err(Status::invalid_argument(format!("bad request header: {e}"))),
    };
    if let Some(len) = head
        .metadata_len
        .filter(|&len| len > options.max_metadata_bytes)
    {
        return Err(Status::resource_exhausted(format!(
            "metadata of {len} bytes exceeds the server's limit of {}",
            options.max_metadata_bytes
        )));
    }
    let Some(route) = shared.router.get(head.method_id) else {
        return Err(Status::unknown_method(format!(
            "no method with id {:#018x}",
            head.method_id
        )));
    };
    if route.shape.streams_requests() != head.stream {
        return Err(Status::invalid_argument(format!(
            "{} is {}: its requests {}",
            route.name,
            route.shape.name(),
            if head.stream {
                "are one body, not a stream"
            } else {
                "are a stream of messages (the STREAM flag)"
            }
        )));
    }
    if !shared.router.allows(route, identity) {
        let who = identity.map_or("a caller without certificate", |p| p.name());
        return Err(Status::permission_denied(format!(
            "{who} may not call {}",
            route.name
        )));
    }
    if shared.draining.load(Ordering::Relaxed) {
        return Err(Status::unavailable("server is shutting down"));
    }
    // Streams may last for hours: only unary calls count against the
    // adaptive limit.
    let unary = !route.shape.streams_requests() && !route.shape.streams_responses();
    let metadata = head.metadata_len.is_some();
    let slot = CallSlot::take(&shared.calls, peer, arrival.map(|a| (a, unary, metadata)))
        .map_err(|refusal| refusal_status(Some(refusal), peer, options))?;
    Ok((head, route, slot))
}

/// The status of a call refused for want of a slot or of request memory.
pub(super) fn refusal_status(
    refusal: Option<Refusal>,
    peer: &Peer,
    options: &ServerOptions,
) -> Status {
    Status::resource_exhausted(match refusal {
        Some(Refusal::ServerCalls) => format!(
            "server busy: {} calls in flight",
            options.max_calls_in_flight
        ),
        Some(Refusal::PeerCalls) => format!(
            "{} has {} calls in flight, the most one caller may",
            peer.key, options.max_calls_per_peer
        ),
        Some(Refusal::ServerBytes) | None => "server busy: request memory budget in use".to_owned(),
        Some(Refusal::PeerBytes) => format!(
            "{} holds {} bytes of requests, the most one caller may",
            peer.key, options.max_request_bytes_per_peer
        ),
        Some(Refusal::Overloaded) => {
            "server overloaded: at its adaptive concurrency limit (load shed)".to_owned()
        }
    })
}

/// How reading a request body ended early.
enum BodyFail {
    /// The request is malformed: this status answers it.
    Malformed(Status),
    /// The budget refused its bytes.
    Refused,
    /// The stream or the connection failed: nobody to answer.
    Broken,
}

/// Reads the body (in the chunks it arrived in) and the end of the stream,
/// telling `admit` of every chunk as it arrives; for a request stream
/// (`stream`), only the `len` bytes before its messages (its metadata) and
/// what came after them.
async fn read_request(
    recv: &mut RecvStream,
    (stream, keep_chunks): (bool, bool),
    len: usize,
    first: Bytes,
    admit: impl FnMut(usize) -> bool,
) -> Result<(Chunks, Bytes), BodyFail> {
    if stream {
        return io::read_prefix(recv, len, first, admit)
            .await
            .map(|(prefix, rest)| (Chunks::from(prefix), rest))
            .map_err(|fail| body_fail(fail, len));
    }
    let body = match io::read_body(recv, len, first, admit, keep_chunks).await {
        Ok(body) if body.excess => {
            return Err(BodyFail::Malformed(Status::invalid_argument(format!(
                "bytes after the {len}-byte request body"
            ))));
        }
        Ok(body) => body.chunks,
        Err(fail) => return Err(body_fail(fail, len)),
    };
    match io::read_fin(recv).await {
        Ok(true) => Ok((body, Bytes::new())),
        Ok(false) => Err(BodyFail::Malformed(Status::invalid_argument(format!(
            "bytes after the {len}-byte request body"
        )))),
        Err(e) => {
            tracing::debug!("stream failed after the request body: {e}");
            Err(BodyFail::Broken)
        }
    }
}

/// How reading `len` bytes of a request failed.
fn body_fail(fail: ReadFail, len: usize) -> BodyFail {
    match fail {
        ReadFail::Finished { got } => BodyFail::Malformed(Status::invalid_argument(format!(
            "request body truncated: {got} of {len} bytes"
        ))),
        ReadFail::Refused => BodyFail::Refused,
        ReadFail::Read(e) => {
            tracing::debug!("stream failed inside the request body: {e}");
            BodyFail::Broken
        }
    }
}

/// Time a rejection may wait for the client's flow control to let its few
/// bytes through. A new stream always has room for them (the initial
/// window); only a client that opens streams with no window makes them
/// wait, and each such stream would hold its state as long as it waited.
const REJECTION_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers with `status` without reading the body, marked not processed, and
/// asks the client to stop sending. A rejection the client does not take
/// within [`REJECTION_LINGER`] is replaced by a reset with REJECTED.
async fn reject(send: &mut SendStream, recv: &mut RecvStream, status: Status) {
    let _ = recv.stop(ErrorCode::REJECTED.into());
    let status = status.not_processed();
    let frame = status_frame(&status);
    if timeout(
        REJECTION_LINGER,
        io::write_message(send, frame, Chunks::new()),
    )
    .await
    .is_err()
    {
        let _ = send.reset(ErrorCode::REJECTED.into());
    }
}

/// Most bytes of a stream's messages written at once: the messages the
/// handler's stream has ready are taken (up to this) and written together,
/// which costs QUIC one write instead of one per message.
const GATHER_BYTES: usize = io::BATCH;

/// Sends a server stream's messages as the handler's stream yields them,
/// those ready at once (up to [`GATHER_BYTES`]) in one write, each write
/// within the response timeout plus its size at the minimum transfer rate,
/// all within the call's deadline: `Some(Ok)` when the stream ended,
/// `Some(Err)` with the status to end the call with (the stream's own
/// error, DEADLINE_EXCEEDED, a message too large), `None` when the caller
/// went away (the stream is dropped: its producer sees the call end).
async fn stream_out(
    send: &mut SendStream,
    mut messages: super::router::MessageStream,
    mut timer: Pin<&mut Sleep>,
    (deadline, budget): (Instant, std::time::Duration),
    options: &ServerOptions,
    meter: Option<&CallMeter<'_>>,
    held: &AtomicUsize,
) -> Option<Result<(), Status>> {
    let caller_gone = send.stopped();
    tokio::pin!(caller_gone);
    let expired = || {
        Some(Err(Status::deadline_exceeded(format!(
            "deadline of {budget:?} passed in the stream"
        ))))
    };
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut batch = BytesMut::new();
    // Bytes written since the task last yielded to the connection's driver.
    let mut unyielded = 0;
    loop {
        // A stream that is always ready, written to a window that always
        // has room, still lets other tasks run.
        tokio::task::consume_budget().await;
        timer.as_mut().reset(deadline);
        // Bytes in `chunks` (the batch's are counted by its length).
        let mut apart = io::make_room(&mut batch, &mut chunks);
        let next = std::future::poll_fn(|cx| messages.as_mut().poll_frame(cx, &mut batch));
        let mut item = tokio::select! {
            biased;
            _ = &mut caller_gone => return None,
            message = next => message,
            () = timer.as_mut() => return expired(),
        };
        // This message and those ready after it, framed into the batch (a
        // large body as a chunk of its own), then how the stream ended
        // (`None`: more later).
        let mut count = 0;
        let end = loop {
            match item {
                Some(Ok(tail)) => {
                    count += 1;
                    tail.for_each_chunk(|chunk| {
                        apart += io::gather(&mut batch, &mut chunks, chunk)
                    });
                }
                None => break Some(Ok(())),
                Some(Err(status)) => break Some(Err(status)),
            }
            if batch.len() + apart >= GATHER_BYTES {
                break None;
            }
            apart += io::make_room(&mut batch, &mut chunks);
            let ready = std::future::poll_fn(|cx| {
                Poll::Ready(messages.as_mut().poll_frame(cx, &mut batch))
            });
            match ready.await {
                Poll::Ready(next) => item = next,
                Poll::Pending => break None,
            }
        };
        if !batch.is_empty() {
            chunks.push(batch.split().freeze());
        }
        let len = chunks.iter().map(Bytes::len).sum();
        if !chunks.is_empty() {
            let _held = Held::new(held, len);
            let by = Instant::now() + options.transfer_time(options.response_timeout, len);
            timer.as_mut().reset(by.min(deadline));
            let written = tokio::select! {
                biased;
                written = send.write_all_chunks(&mut chunks) => written,
                () = timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return expired();
                    }
                    tracing::debug!("stream message not taken in time; stream reset");
                    let _ = send.reset(ErrorCode::TIMEOUT.into());
                    return None;
                }
            };
            chunks.clear();
            if written.is_err() {
                // Stopped or lost: nobody reads the rest.
                return None;
            }
            if let Some(meter) = meter {
                meter.flow().responses(count, len);
            }
        }
        if end.is_some() {
            return end;
        }
        unyielded += len;
        if unyielded >= io::YIELD_AFTER {
            // The handler has had more ready, write after write: the
            // connection's driver sends them before more are made.
            unyielded = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// Adds `n` to one of a server's gauges (a stream served, bytes of a
/// response held while QUIC takes them) until dropped.
struct Held<'a>(&'a AtomicUsize, usize);

impl<'a> Held<'a> {
    fn new(gauge: &'a AtomicUsize, len: usize) -> Self {
        gauge.fetch_add(len, Ordering::Relaxed);
        Held(gauge, len)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Answers a call refused before its handler ran: `status`, marked
/// NOT_PROCESSED (the caller may send it elsewhere), counted as the call's
/// end.
async fn refuse(
    send: &mut SendStream,
    status: Status,
    timer: Pin<&mut Sleep>,
    shared: &Shared,
    meter: Option<CallMeter<'_>>,
) {
    let reply = counted(
        Err(status.not_processed()),
        &shared.options,
        None,
        meter,
        false,
    );
    respond(send, reply, timer, shared).await;
}

/// Sends the response, giving the reader the response timeout plus the
/// response's size at the minimum transfer rate (whatever the deadline) to
/// take it; then its stream is reset with TIMEOUT (`timer` is the call's
/// timer).
async fn respond(
    send: &mut SendStream,
    (head, tail): (Bytes, Chunks),
    mut timer: Pin<&mut Sleep>,
    shared: &Shared,
) {
    let options = &shared.options;
    let len = head.len() + tail.len();
    let _held = Held::new(&shared.response_bytes, len);
    let by = Instant::now() + options.transfer_time(options.response_timeout, len);
    timer.as_mut().reset(by);
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

/// The bytes of an answer: a handler's reply or a status (its details
/// hidden if the server says so), with the response's metadata.
fn frame_reply(
    reply: Result<super::router::Reply, Status>,
    options: &ServerOptions,
    metadata: Option<Metadata>,
) -> (Bytes, Chunks) {
    let (head, tail) = match reply {
        Ok(reply) => (reply.head, reply.tail),
        Err(status) if options.hide_error_details && status.is_internal_detail() => {
            tracing::error!("handler failed: {status}");
            (
                status_frame(&Status::internal("internal error")),
                Chunks::new(),
            )
        }
        Err(status) => (status_frame(&status), Chunks::new()),
    };
    match metadata {
        Some(metadata) => (with_metadata(&head, &metadata), tail),
        None => (head, tail),
    }
}

/// A response (header and inline body) with a metadata block inserted
/// after its header: the METADATA flag set, the block's length, the block.
/// A block too large for its 2-byte length is not sent.
fn with_metadata(head: &Bytes, metadata: &Metadata) -> Bytes {
    let block = metadata.as_bytes();
    let Ok(len) = u16::try_from(block.len()) else {
        tracing::warn!(
            "response metadata of {} bytes not sent (at most 65535)",
            block.len()
        );
        return head.clone();
    };
    let mut out = BytesMut::with_capacity(head.len() + 2 + block.len());
    out.extend_from_slice(&head[..wire::RESPONSE_HEADER_LEN]);
    out[1] |= ResponseFlags::METADATA.bits();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(block);
    out.extend_from_slice(&head[wire::RESPONSE_HEADER_LEN..]);
    out.freeze()
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
