//! Streaming calls on the client: a server stream's responses read as the
//! caller asks for them, a request stream written message by message, and
//! both at once.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use quicall_transport::quinn::{SendStream, WriteError};
use tokio::time::{Instant, timeout_at};

use super::stream::{Answer, CallStream, StreamPart, connection_status, write_status};
use super::{CallOptions, Client, Ending, Response, begin_call, begin_stream};
use crate::io;
use crate::message::{frame, frame_append};
use crate::meter::Flow;
use crate::pull::{Pulled, Source};
use crate::wire::{ErrorCode, MESSAGE_HEADER_LEN, message_header};
use crate::{Chunks, Code, Encode, Message, Metadata, Method, Msg, Shape, Status};

/// A call's time: when it began, and its deadline with its budget.
#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) start: Instant,
    deadline: Option<(Instant, Duration)>,
}

impl Timing {
    /// A call beginning now, with `budget` if any.
    pub(crate) fn new(budget: Option<Duration>) -> Self {
        let start = Instant::now();
        Timing {
            start,
            deadline: budget.map(|budget| (start + budget, budget)),
        }
    }

    pub(crate) fn budget(&self) -> Option<Duration> {
        self.deadline.map(|(_, budget)| budget)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.map(|(deadline, _)| deadline)
    }

    /// `work`, cut at the deadline with DEADLINE_EXCEEDED (`what` says
    /// what did not finish).
    async fn within<T>(
        &self,
        what: impl FnOnce() -> String,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        match self.deadline {
            Some((deadline, budget)) => timeout_at(deadline, work).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "{} not done within {budget:?}",
                    what()
                )))
            }),
            None => work.await,
        }
    }
}

/// A stream's reading side: the call, what was read past the last message,
/// and the span ended with the stream.
pub(crate) struct Responses {
    call: CallStream,
    /// The deadline's timer, made at the first read that waits.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The first message, read before it was asked for (by a cluster, to
    /// know that the server answers before the call is pinned to it).
    first: Option<Bytes>,
    pending: Bytes,
    method: &'static str,
    max_message: u32,
    timing: Timing,
    ending: Ending,
    metadata: Metadata,
    /// A cluster's count of the method's messages.
    flow: Option<Arc<Flow>>,
    done: bool,
}

impl Responses {
    fn new(
        call: CallStream,
        method: &'static str,
        max_message: u32,
        (timing, ending): (Timing, Ending),
    ) -> Self {
        Responses {
            flow: None,
            call,
            timer: None,
            first: None,
            pending: Bytes::new(),
            method,
            max_message,
            timing,
            ending,
            metadata: Metadata::new(),
            done: false,
        }
    }

    async fn read(&mut self) -> Result<Option<Bytes>, Status> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        if self.done {
            return Ok(None);
        }
        // A reader that always finds a message waiting still lets other
        // tasks run.
        tokio::task::consume_budget().await;
        if let Some(body) = CallStream::ready_message(&mut self.pending, self.max_message) {
            return Ok(Some(body));
        }
        let read = self
            .call
            .read_stream_part(&mut self.pending, self.max_message);
        // One timer for the whole stream, not one per message.
        let part = match self.timing.deadline {
            None => read.await,
            Some((deadline, budget)) => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                tokio::select! {
                    biased;
                    part = read => part,
                    () = timer.as_mut() => Err(Status::deadline_exceeded(format!(
                        "stream of {} not done within {budget:?}",
                        self.method
                    ))),
                }
            }
        };
        let result = match part {
            Ok(StreamPart::Message(body)) => return Ok(Some(body)),
            Ok(StreamPart::End(metadata)) => {
                self.metadata = metadata.map(|m| *m).unwrap_or_default();
                Ok(None)
            }
            Err(status) => Err(status),
        };
        self.end(result.as_ref().err().map_or(Code::Ok, Status::code));
        result
    }

    /// The next message if all of it is here already: no await, no timer,
    /// no future (a stream read as fast as it comes finds most messages
    /// so, several to each chunk QUIC delivers). `None` sends the reader
    /// the long way, which also tells of anything but a message.
    fn ready(&mut self) -> Option<Bytes> {
        if self.first.is_some() || self.done {
            return None;
        }
        let body = CallStream::ready_message(&mut self.pending, self.max_message)?;
        if let Some(flow) = &self.flow {
            flow.responses(1, MESSAGE_HEADER_LEN + body.len());
        }
        Some(body)
    }

    fn end(&mut self, code: Code) {
        self.done = true;
        self.ending.end(code, self.timing.start);
    }
}

impl Source for Responses {
    async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        let read = self.read().await;
        if let (Some(flow), Ok(Some(body))) = (&self.flow, &read) {
            flow.responses(1, MESSAGE_HEADER_LEN + body.len());
        }
        read
    }
}

impl Drop for Responses {
    fn drop(&mut self) {
        if !self.done {
            self.ending.end(Code::Cancelled, self.timing.start);
        }
    }
}

static NO_METADATA: LazyLock<Metadata> = LazyLock::new(Metadata::new);

/// The responses of a server-streaming or bidirectional call, in order:
/// read with [`ResponseStream::message`] or as a [`Stream`]. Reading slowly
/// slows the server (QUIC flow control): nothing is buffered beyond the
/// connection's receive window. Dropping it before the end cancels the call
/// (the stream is reset, and the server drops the handler's stream). The
/// call's deadline covers the whole stream.
pub struct ResponseStream<Resp: ?Sized> {
    responses: Pulled<Responses>,
    exact: bool,
    _resp: PhantomData<fn() -> *const Resp>,
}

impl<Resp: Message + ?Sized> ResponseStream<Resp> {
    /// The next response, `None` once the stream has ended well (the
    /// server's metadata is then in [`ResponseStream::metadata`]), or the
    /// status the call ended with. After the end or a failure, `None`.
    pub async fn message(&mut self) -> Result<Option<Msg<Resp>>, Status> {
        let ready = std::future::poll_fn(|cx| self.poll_ready(cx)).await;
        if let Some(body) = ready {
            return self.decode(Ok(Some(body)));
        }
        let body = self.responses.next().await;
        self.decode(body)
    }

    /// A message already here, taken in this poll (nothing is held across
    /// a wait, so a dropped read loses nothing), within the task's
    /// cooperative budget: a reader that always finds one still lets other
    /// tasks run. `Ready(None)`: none is, read the long way.
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Bytes>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let body = self.responses.source().and_then(Responses::ready);
        if body.is_some() {
            coop.made_progress();
        }
        Poll::Ready(body)
    }

    /// The metadata the server sent with the end of the stream (empty
    /// before the end, or if it sent none).
    pub fn metadata(&self) -> &Metadata {
        self.responses.get().map_or(&NO_METADATA, |r| &r.metadata)
    }

    fn decode(&mut self, body: Result<Option<Bytes>, Status>) -> Result<Option<Msg<Resp>>, Status> {
        let Some(body) = body? else {
            return Ok(None);
        };
        Msg::receive(body, self.exact).map(Some).map_err(|e| {
            let status = Status::internal(format!("bad stream message: {e}"));
            if let Some(responses) = self.responses.source() {
                responses.end(status.code());
            }
            status
        })
    }
}

impl<Resp: Message + ?Sized> Stream for ResponseStream<Resp> {
    type Item = Result<Msg<Resp>, Status>;

    /// A message already received costs no allocation; one that must be
    /// waited for costs one (the read's future), which
    /// [`ResponseStream::message`] does not.
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(body) = std::task::ready!(this.poll_ready(cx)) {
            return Poll::Ready(this.decode(Ok(Some(body))).transpose());
        }
        this.responses
            .poll_next(cx)
            .map(|body| this.decode(body).transpose())
    }
}

/// How writing a request message failed.
enum SendFail {
    /// The server stopped reading the requests: its answer says why.
    Stopped,
    Other(Status),
}

impl SendFail {
    fn into_status(self) -> Status {
        match self {
            SendFail::Stopped => write_status(WriteError::Stopped(0u32.into())),
            SendFail::Other(status) => status,
        }
    }
}

/// A write's outcome: `Ok(Err(Stopped))` when the server stopped reading
/// (its answer says why), `Err` with the status of any other failure.
async fn written_or_stopped(
    write: impl Future<Output = Result<(), WriteError>>,
) -> Result<Result<(), SendFail>, Status> {
    match write.await {
        Ok(()) => Ok(Ok(())),
        Err(WriteError::Stopped(_)) => Ok(Err(SendFail::Stopped)),
        Err(e) => Err(write_status(e)),
    }
}

fn too_large() -> Status {
    Status::invalid_argument("request message exceeds the protocol's 4 GiB limit")
}

/// The requests of a client-streaming or bidirectional call, sent one
/// message at a time. [`RequestSink::send`] returns once QUIC has taken the
/// message (flow control: a server that reads slowly slows the sender);
/// [`RequestSink::finish`] ends the requests. Dropped without `finish`, it
/// resets its side: the server's handler sees the call cancelled.
pub struct RequestSink<Req: ?Sized> {
    send: Option<SendStream>,
    /// Where short messages are framed, header and body together, before
    /// QUIC takes them (one chunk per message, not two; one allocation per
    /// [`crate::io::BATCH`] bytes, not per message).
    batch: BytesMut,
    method: &'static str,
    timing: Timing,
    sent: u64,
    /// Bytes QUIC took since this sender last let other tasks run.
    unyielded: usize,
    /// A write began and has not ended: set while a send waits for QUIC,
    /// still set if its future was dropped then (part of a message may be
    /// on the stream, and anything sent after it would be read as its
    /// rest).
    torn: bool,
    /// A cluster's count of the method's messages.
    flow: Option<Arc<Flow>>,
    _req: PhantomData<fn(*const Req)>,
}

impl<Req: Message + ?Sized> RequestSink<Req> {
    fn new(send: Option<SendStream>, method: &'static str, timing: Timing) -> Self {
        Self {
            send,
            batch: BytesMut::new(),
            method,
            timing,
            sent: 0,
            unyielded: 0,
            torn: false,
            flow: None,
            _req: PhantomData,
        }
    }

    /// Sends one request. Fails with the status of the failure: the
    /// deadline, a lost connection, or CANCELLED when the server no longer
    /// reads the requests (it has answered; the response says why).
    ///
    /// Each `send` is one write to QUIC, which wakes the connection's
    /// driver if it is idle; from a task on another worker of a
    /// multi-thread runtime that can be a wake across threads per request.
    /// Many small requests in a row go faster through
    /// [`RequestSink::send_all`] (those ready at once in one write): 1.7-1.9
    /// times the messages per second in the streams benchmark with two
    /// workers a side (docs/benchmarks.md).
    pub async fn send(&mut self, request: impl Encode<Req>) -> Result<(), Status> {
        self.send_message(request)
            .await
            .map_err(SendFail::into_status)
    }

    /// Sends every request `requests` yields, in order, and returns how
    /// many it sent (the requests are not finished:
    /// [`RequestSink::finish`] ends them). The requests the stream has
    /// ready at once are framed together and handed to QUIC in one write
    /// (up to 64 KiB; a body of 2 KiB or more goes as a chunk of its own,
    /// uncopied), where [`RequestSink::send`] costs one write per request:
    /// for small requests sent back to back, far less work per message.
    /// What the stream yielded is sent before it is polled again after it
    /// waits, so nothing waits for a batch to fill. Fails as `send` does; a
    /// request that cannot be encoded fails with INVALID_ARGUMENT after
    /// those before it were sent.
    ///
    /// ```no_run
    /// # async fn example(client: quicall_rpc::Client) -> Result<(), quicall_rpc::Status> {
    /// use quicall_rpc::{CallOptions, Method, stream};
    ///
    /// const ECHO: Method<[u8], [u8]> = Method::new("demo.Lines/Echo").bidi_streaming();
    ///
    /// let (mut lines, mut echoes) = client.bidi_stream(&ECHO, CallOptions::default()).await?;
    /// let sent = lines
    ///     .send_all(stream::iter((0..10_000).map(|i| format!("line {i}").into_bytes())))
    ///     .await?;
    /// lines.finish();
    /// assert_eq!(sent, 10_000);
    /// while let Some(echo) = echoes.message().await? {
    ///     println!("{}", String::from_utf8_lossy(&echo));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_all<S, R>(&mut self, requests: S) -> Result<u64, Status>
    where
        S: Stream<Item = R>,
        R: Encode<Req>,
    {
        let before = self.sent;
        self.send_stream(requests)
            .await
            .map_err(SendFail::into_status)?;
        Ok(self.sent - before)
    }

    async fn send_stream<S, R>(&mut self, requests: S) -> Result<(), SendFail>
    where
        S: Stream<Item = R>,
        R: Encode<Req>,
    {
        let mut requests = std::pin::pin!(requests);
        let mut chunks: Vec<Bytes> = Vec::new();
        loop {
            self.pace().await;
            self.usable()?;
            let next = std::future::poll_fn(|cx| requests.as_mut().poll_next(cx)).await;
            let Some(mut request) = next else {
                return Ok(());
            };
            // This request and those ready after it, framed into the
            // batch; then why the gathering stopped.
            let mut apart = io::make_room(&mut self.batch, &mut chunks);
            let mut count = 0u64;
            let stop = loop {
                match self.frame_into(request, &mut chunks) {
                    Ok(moved) => {
                        count += 1;
                        apart += moved;
                    }
                    Err(status) => break Some(Err(status)),
                }
                if self.batch.len() + apart >= io::BATCH {
                    break None;
                }
                apart += io::make_room(&mut self.batch, &mut chunks);
                let ready = std::future::poll_fn(|cx| Poll::Ready(requests.as_mut().poll_next(cx)));
                match ready.await {
                    Poll::Ready(Some(next)) => request = next,
                    Poll::Ready(None) => break Some(Ok(())),
                    Poll::Pending => break None,
                }
            };
            if !self.batch.is_empty() {
                chunks.push(self.batch.split().freeze());
            }
            if !chunks.is_empty() {
                let len = chunks.iter().map(Bytes::len).sum();
                self.write_batch(&mut chunks, count, len).await?;
                chunks.clear();
            }
            match stop {
                Some(Ok(())) => return Ok(()),
                Some(Err(status)) => return Err(SendFail::Other(status)),
                None => {}
            }
        }
    }

    /// Frames `request` at the end of the batch (a long body's chunks
    /// after it, in `chunks`), or the status that refuses it (nothing of it
    /// framed). Returns the bytes added to `chunks`.
    fn frame_into(
        &mut self,
        request: impl Encode<Req>,
        chunks: &mut Vec<Bytes>,
    ) -> Result<usize, Status> {
        let start = self.batch.len();
        let header = |len: usize| message_header(u32::try_from(len).unwrap_or(u32::MAX));
        let (tail, body_len) =
            frame_append::<Req, MESSAGE_HEADER_LEN>(&mut self.batch, request, header)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if u32::try_from(body_len).is_err() {
            self.batch.truncate(start);
            return Err(too_large());
        }
        let mut moved = 0;
        tail.for_each_chunk(|chunk| moved += io::gather(&mut self.batch, chunks, chunk));
        Ok(moved)
    }

    /// Lets other tasks run: at once after [`io::YIELD_AFTER`] bytes QUIC
    /// took without waiting (the connection's driver among them, which
    /// sends them), else within the cooperative budget. Called before a
    /// write, so that a send dropped here loses nothing.
    async fn pace(&mut self) {
        if self.unyielded >= io::YIELD_AFTER {
            self.unyielded = 0;
            tokio::task::yield_now().await;
        } else {
            tokio::task::consume_budget().await;
        }
    }

    /// Whether requests may still be sent. After a send dropped in the
    /// middle of its write, the requests are reset: the server's handler
    /// sees the call cancelled, and this send fails with CANCELLED.
    fn usable(&mut self) -> Result<(), SendFail> {
        if self.torn {
            self.torn = false;
            self.reset();
            return Err(SendFail::Other(Status::cancelled(format!(
                "a send of {} was dropped while its message was being written; \
                 the requests were reset",
                self.method
            ))));
        }
        if self.send.is_some() {
            return Ok(());
        }
        Err(SendFail::Other(Status::failed_precondition(format!(
            "the requests of {} are finished",
            self.method
        ))))
    }

    async fn send_message(&mut self, request: impl Encode<Req>) -> Result<(), SendFail> {
        // A sender whose writes never wait (QUIC's buffers have room) still
        // lets other tasks run.
        self.pace().await;
        self.usable()?;
        let header = |len: usize| message_header(u32::try_from(len).unwrap_or(u32::MAX));
        let framed = frame::<Req, MESSAGE_HEADER_LEN>(request, header, &[])
            .map_err(|e| SendFail::Other(Status::invalid_argument(e.to_string())))?;
        if u32::try_from(framed.body_len).is_err() {
            return Err(SendFail::Other(too_large()));
        }
        let len = MESSAGE_HEADER_LEN + framed.body_len;
        let (head, tail) = io::coalesce(&mut self.batch, framed.head, framed.tail);
        let Some(send) = self.send.as_mut() else {
            return self.usable();
        };
        let write = io::write_chunks(send, head, tail);
        self.torn = true;
        let (n, method) = (self.sent + 1, self.method);
        let written = self
            .timing
            .within(
                || format!("request {n} of {method}"),
                written_or_stopped(write),
            )
            .await;
        self.settle(written, 1, len)
    }

    /// Writes `chunks`, the `count` requests framed in them (`len` bytes).
    async fn write_batch(
        &mut self,
        chunks: &mut [Bytes],
        count: u64,
        len: usize,
    ) -> Result<(), SendFail> {
        let Some(send) = self.send.as_mut() else {
            return self.usable();
        };
        let write = send.write_all_chunks(chunks);
        self.torn = true;
        let (first, last, method) = (self.sent + 1, self.sent + count, self.method);
        let written = self
            .timing
            .within(
                || format!("requests {first} to {last} of {method}"),
                written_or_stopped(write),
            )
            .await;
        self.settle(written, count, len)
    }

    /// Counts a write that went through, or ends the requests after one
    /// that failed.
    fn settle(
        &mut self,
        written: Result<Result<(), SendFail>, Status>,
        count: u64,
        len: usize,
    ) -> Result<(), SendFail> {
        self.torn = false;
        match written {
            Ok(Ok(())) => {
                self.sent += count;
                self.unyielded += len;
                if let Some(flow) = &self.flow {
                    flow.requests(count, len);
                }
                Ok(())
            }
            Ok(Err(stopped)) => {
                // Nothing more can be sent: dropping the stream is all.
                self.send = None;
                Err(stopped)
            }
            Err(status) => {
                self.reset();
                Err(SendFail::Other(status))
            }
        }
    }

    /// Ends the requests (the stream's FIN): the server's handler reads the
    /// end after the last message. Later sends fail. After a send dropped
    /// in the middle of its write, the requests are reset instead (the
    /// handler sees the call cancelled, not a message cut short).
    pub fn finish(&mut self) {
        if self.torn {
            self.torn = false;
            self.reset();
            return;
        }
        if let Some(mut send) = self.send.take() {
            // Fails only if the server stopped the side already.
            let _ = send.finish();
        }
    }

    /// How many requests were sent.
    pub fn count(&self) -> u64 {
        self.sent
    }

    fn reset(&mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.reset(ErrorCode::CANCELLED.into());
        }
    }
}

impl<Req: ?Sized> Drop for RequestSink<Req> {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.reset(ErrorCode::CANCELLED.into());
        }
    }
}

/// A client-streaming call: [`send`](ClientStream::send) the requests,
/// then [`finish`](ClientStream::finish) for the one response. Dropping it
/// before the answer cancels the call.
pub struct ClientStream<Req: ?Sized, Resp: ?Sized> {
    sink: RequestSink<Req>,
    call: CallStream,
    max_response: u32,
    exact: bool,
    ending: Ending,
    /// The answer, when it came before the last request.
    early: Option<Result<Answer, Status>>,
    done: bool,
    _resp: PhantomData<fn() -> *const Resp>,
}

impl<Req: Message + ?Sized, Resp: Message + ?Sized> ClientStream<Req, Resp> {
    /// Sends one request. When the server has answered already (it stopped
    /// reading), fails with the status it answered with, or with CANCELLED
    /// if it answered OK ([`finish`](ClientStream::finish) returns that
    /// answer).
    pub async fn send(&mut self, request: impl Encode<Req>) -> Result<(), Status> {
        let sent = self.sink.send_message(request).await;
        self.after_send(sent).await
    }

    /// Sends every request `requests` yields, those ready at once together
    /// (see [`RequestSink::send_all`]), and returns how many it sent; fails
    /// as [`send`](ClientStream::send) does.
    pub async fn send_all<S, R>(&mut self, requests: S) -> Result<u64, Status>
    where
        S: Stream<Item = R>,
        R: Encode<Req>,
    {
        let before = self.sink.sent;
        let sent = self.sink.send_stream(requests).await;
        self.after_send(sent).await?;
        Ok(self.sink.sent - before)
    }

    /// What a send's caller is told: when the server stopped reading, the
    /// status it answered with (kept for [`finish`](ClientStream::finish)).
    async fn after_send(&mut self, sent: Result<(), SendFail>) -> Result<(), Status> {
        match sent {
            Ok(()) => Ok(()),
            Err(SendFail::Other(status)) => Err(status),
            Err(SendFail::Stopped) => {
                let answer = self.answer().await;
                let status = match &answer {
                    Err(status) => status.clone(),
                    Ok(_) => Status::cancelled(format!(
                        "{} answered before the last request; finish() returns the answer",
                        self.sink.method
                    )),
                };
                self.early = Some(answer);
                Err(status)
            }
        }
    }

    /// Ends the requests and waits for the response.
    pub async fn finish(mut self) -> Result<Response<Resp>, Status> {
        self.sink.finish();
        let answer = match self.early.take() {
            Some(answer) => answer,
            None => self.answer().await,
        };
        let code = answer.as_ref().err().map_or(Code::Ok, Status::code);
        self.done = true;
        self.ending.end(code, self.sink.timing.start);
        let answer = answer?;
        let message = Msg::receive_chunks(answer.body, self.exact)
            .map_err(|e| Status::internal(format!("bad response: {e}")))?;
        Ok(Response {
            message,
            metadata: answer.metadata.map(|m| *m).unwrap_or_default(),
        })
    }

    /// How many requests were sent.
    pub fn count(&self) -> u64 {
        self.sink.count()
    }

    async fn answer(&mut self) -> Result<Answer, Status> {
        let method = self.sink.method;
        let read = self
            .call
            .read_response(self.max_response, Resp::KEEPS_CHUNKS);
        let what = || format!("answer of {method}");
        self.sink.timing.within(what, read).await
    }
}

impl<Req: ?Sized, Resp: ?Sized> Drop for ClientStream<Req, Resp> {
    fn drop(&mut self) {
        if !self.done {
            self.ending.end(Code::Cancelled, self.sink.timing.start);
        }
    }
}

impl Client {
    /// Calls the server-streaming `method` with `request`: the responses
    /// come as a [`ResponseStream`] once the request is sent. The
    /// deadline (`options`, or the client's default) covers the whole
    /// stream.
    ///
    /// ```no_run
    /// # use quicall_rpc::{CallOptions, Client, Method, Status};
    /// # async fn run(client: Client) -> Result<(), Status> {
    /// const LIST: Method<[u8], [u8]> = Method::new("kv.Store/List").server_streaming();
    /// let mut keys = client.server_stream(&LIST, "prefix/", CallOptions::default()).await?;
    /// while let Some(key) = keys.message().await? {
    ///     println!("{}", String::from_utf8_lossy(&key));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn server_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
    ) -> Result<ResponseStream<Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        check_shape(method, Shape::ServerStreaming)?;
        let timing = Timing::new(options.deadline.or(self.options.default_deadline));
        let (span, framed) = begin_call(
            method,
            request,
            timing.budget(),
            options.metadata,
            &self.options.interceptors,
            false,
        );
        let mut ending = Ending::new(span, &self.options.interceptors, method.name());
        let call = self.open(method.name(), framed, true, timing).await;
        let call = ended_on_error(call, &mut ending, timing)?;
        let max = self.options.max_response_size;
        let responses = Responses::new(call, method.name(), max, (timing, ending));
        Ok(response_stream(responses, method))
    }

    /// Calls the client-streaming `method`: send the requests with
    /// [`ClientStream::send`], then [`ClientStream::finish`] for the
    /// response. The deadline covers the whole call.
    ///
    /// ```no_run
    /// # use quicall_rpc::{CallOptions, Client, Method, Status};
    /// # async fn run(client: Client) -> Result<(), Status> {
    /// const LOAD: Method<[u8], [u8]> = Method::new("kv.Store/Load").client_streaming();
    /// let mut load = client.client_stream(&LOAD, CallOptions::default()).await?;
    /// for line in ["a=1", "b=2"] {
    ///     load.send(line).await?;
    /// }
    /// let answer = load.finish().await?;
    /// println!("{}", String::from_utf8_lossy(&answer.message));
    /// # Ok(()) }
    /// ```
    pub async fn client_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> Result<ClientStream<Req, Resp>, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        check_shape(method, Shape::ClientStreaming)?;
        let (ending, call, timing) = self.open_requests(method, options).await?;
        Ok(client_stream_on(
            call,
            method,
            (timing, ending),
            self.options.max_response_size,
            None,
        ))
    }

    /// Calls the bidirectional `method`: requests go through the
    /// [`RequestSink`] while responses come from the [`ResponseStream`],
    /// both at once (each may be moved to a task of its own). The call ends
    /// with the response stream's end; the deadline covers it all.
    ///
    /// ```no_run
    /// # use quicall_rpc::{CallOptions, Client, Method, Status};
    /// # async fn run(client: Client) -> Result<(), Status> {
    /// const CHAT: Method<[u8], [u8]> = Method::new("chat.Room/Talk").bidi_streaming();
    /// let (mut say, mut hear) = client.bidi_stream(&CHAT, CallOptions::default()).await?;
    /// say.send("hello").await?;
    /// say.finish();
    /// while let Some(line) = hear.message().await? {
    ///     println!("{}", String::from_utf8_lossy(&line));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn bidi_stream<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> Result<(RequestSink<Req>, ResponseStream<Resp>), Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        check_shape(method, Shape::Bidirectional)?;
        let (ending, call, timing) = self.open_requests(method, options).await?;
        Ok(bidi_halves(
            call,
            method,
            (timing, ending),
            self.options.max_response_size,
            None,
        ))
    }

    /// Opens a call whose requests are a stream, its header sent.
    async fn open_requests<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        options: CallOptions,
    ) -> Result<(Ending, CallStream, Timing), Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        let timing = Timing::new(options.deadline.or(self.options.default_deadline));
        let (span, head) = begin_stream(
            method,
            timing.budget(),
            options.metadata,
            &self.options.interceptors,
        );
        let mut ending = Ending::new(span, &self.options.interceptors, method.name());
        let framed = head.map(|head| (head, Chunks::new()));
        let call = self.open(method.name(), framed, false, timing).await;
        let call = ended_on_error(call, &mut ending, timing)?;
        Ok((ending, call, timing))
    }

    /// A new stream with the request (or a request stream's header) sent.
    async fn open(
        &self,
        method: &'static str,
        framed: Result<super::Framed, Status>,
        finish: bool,
        timing: Timing,
    ) -> Result<CallStream, Status> {
        let (head, tail) = framed?;
        timing
            .within(
                || format!("stream of {method} opened"),
                open_on(&self.conn, head, tail, finish),
            )
            .await
    }
}

/// A new stream on `conn` with `head` and `tail` written (`finish`: and
/// the send side ended).
pub(crate) async fn open_on(
    conn: &quicall_transport::Connection,
    head: Bytes,
    tail: Chunks,
    finish: bool,
) -> Result<CallStream, Status> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| connection_status(&e).not_processed())?;
    let mut call = CallStream::new(send, recv);
    call.send_request(head, tail, finish).await?;
    Ok(call)
}

/// A server stream opened on `conn` and read up to its first message (or
/// its end): what a cluster's attempt does before it pins the call.
pub(crate) async fn first_part(
    conn: &quicall_transport::Connection,
    (head, tail): (Bytes, Chunks),
    method: &'static str,
    max_message: u32,
    timing: Timing,
) -> Result<Responses, Status> {
    let call = open_on(conn, head, tail, true).await?;
    let untold = Ending::new(None, &super::Interceptors::default(), method);
    let mut responses = Responses::new(call, method, max_message, (timing, untold));
    responses.first = responses.read().await?;
    Ok(responses)
}

impl Responses {
    /// Counts the stream's messages in `flow` (a cluster's metrics).
    pub(crate) fn with_flow(mut self, flow: Arc<Flow>) -> Self {
        self.flow = Some(flow);
        self
    }

    /// Gives the stream its ending (its span and interceptors, told when
    /// the stream ends).
    pub(crate) fn with_ending(mut self, mut ending: Ending) -> Self {
        if self.done {
            ending.end(Code::Ok, self.timing.start);
        } else {
            self.ending = ending;
        }
        self
    }
}

/// The typed stream of `responses`.
pub(crate) fn response_stream<Req: Message + ?Sized, Resp: Message + ?Sized>(
    responses: Responses,
    method: &Method<Req, Resp>,
) -> ResponseStream<Resp> {
    ResponseStream {
        responses: Pulled::new(responses),
        exact: method.is_exact(),
        _resp: PhantomData,
    }
}

/// A client-streaming call on `call`, whose header is sent (its messages
/// counted in `flow`, for a cluster).
pub(crate) fn client_stream_on<Req: Message + ?Sized, Resp: Message + ?Sized>(
    mut call: CallStream,
    method: &Method<Req, Resp>,
    (timing, ending): (Timing, Ending),
    max_response: u32,
    flow: Option<Arc<Flow>>,
) -> ClientStream<Req, Resp> {
    let mut sink = RequestSink::new(call.take_send(), method.name(), timing);
    sink.flow = flow;
    ClientStream {
        sink,
        call,
        max_response,
        exact: method.is_exact(),
        ending,
        early: None,
        done: false,
        _resp: PhantomData,
    }
}

/// The two halves of a bidirectional call on `call`, whose header is sent
/// (their messages counted in `flow`, for a cluster).
pub(crate) fn bidi_halves<Req: Message + ?Sized, Resp: Message + ?Sized>(
    mut call: CallStream,
    method: &Method<Req, Resp>,
    (timing, ending): (Timing, Ending),
    max_response: u32,
    flow: Option<Arc<Flow>>,
) -> (RequestSink<Req>, ResponseStream<Resp>) {
    let mut sink = RequestSink::new(call.take_send(), method.name(), timing);
    sink.flow = flow.clone();
    let mut responses = Responses::new(call, method.name(), max_response, (timing, ending));
    responses.flow = flow;
    (sink, response_stream(responses, method))
}

/// `opened`, or its status with the call's end told.
fn ended_on_error(
    opened: Result<CallStream, Status>,
    ending: &mut Ending,
    timing: Timing,
) -> Result<CallStream, Status> {
    opened.inspect_err(|status| ending.end(status.code(), timing.start))
}

/// Refuses, before anything is sent, a call made with the wrong shape's
/// function.
pub(crate) fn check_shape<Req: Message + ?Sized, Resp: Message + ?Sized>(
    method: &Method<Req, Resp>,
    called: Shape,
) -> Result<(), Status> {
    if method.shape() == called {
        return Ok(());
    }
    let how = match method.shape() {
        Shape::Unary => "Client::call",
        Shape::ServerStreaming => "Client::server_stream",
        Shape::ClientStreaming => "Client::client_stream",
        Shape::Bidirectional => "Client::bidi_stream",
    };
    Err(Status::invalid_argument(format!(
        "{} is a {} method: call it with {how}",
        method.name(),
        method.shape().name()
    ))
    .not_processed())
}
