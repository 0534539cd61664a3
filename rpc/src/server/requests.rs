//! A call's stream of requests (client-streaming and bidirectional methods):
//! each message read only when the handler asks for it, its length checked
//! from its header before any of it is read, its bytes charged to the
//! server's and the caller's request budgets until the handler asks for the
//! next one.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use futures_core::Stream;
use quicall_transport::quinn::{ReadError, RecvStream};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::shares::{Peer, charge, release};
use crate::io::{self, ReadFail};
use crate::meter::Flow;
use crate::pull::{Pulled, Source};
use crate::wire::{ErrorCode, MESSAGE_HEADER_LEN, WireError, decode_message};
use crate::{Message, Msg, Status};

/// The untyped reader of a request stream: the call's receive side and
/// what it is allowed.
pub(crate) struct Reader {
    recv: RecvStream,
    /// Bytes received past the last message.
    pending: Bytes,
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    /// Bytes of the last message handed out, charged until the next read.
    held: usize,
    deadline: Instant,
    /// Cancelled when the call is over, however it ended.
    over: CancellationToken,
    method: &'static str,
    /// The method's message counters, if the server meters it.
    flow: Option<Arc<Flow>>,
    read: u64,
    state: State,
}

enum State {
    Open,
    Finished,
    Failed(Status),
}

impl Reader {
    pub(super) fn new(
        recv: RecvStream,
        pending: Bytes,
        (shared, peer): (Arc<Shared>, Arc<Peer>),
        deadline: Instant,
        over: CancellationToken,
        (method, flow): (&'static str, Option<Arc<Flow>>),
    ) -> Self {
        Self {
            recv,
            pending,
            shared,
            peer,
            held: 0,
            deadline,
            over,
            method,
            flow,
            read: 0,
            state: State::Open,
        }
    }

    /// The next message's body, `None` after the caller's last one, or the
    /// status that ends the stream (then again on every later read).
    async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        match &self.state {
            State::Open => {}
            State::Finished => return Ok(None),
            State::Failed(status) => return Err(status.clone()),
        }
        release(
            &self.shared.body_bytes,
            &self.peer,
            std::mem::take(&mut self.held),
        );
        // A handler that always finds a request waiting still lets other
        // tasks run.
        tokio::task::consume_budget().await;
        if let Some(ready) = self.ready() {
            return match ready {
                Ok(body) => Ok(Some(self.counted(body))),
                Err((status, stop)) => Err(self.fail(status, stop)),
            };
        }
        let (over, deadline) = (self.over.clone(), self.deadline);
        let read = tokio::select! {
            biased;
            read = self.read() => read,
            () = over.cancelled() => Err((Status::cancelled("the call is over"), None)),
            () = sleep_until(deadline) => Err((
                Status::deadline_exceeded("deadline passed while reading the request stream"),
                Some(ErrorCode::TIMEOUT),
            )),
        };
        match read {
            Ok(Some(body)) => Ok(Some(self.counted(body))),
            Ok(None) => {
                self.state = State::Finished;
                Ok(None)
            }
            Err((status, stop)) => Err(self.fail(status, stop)),
        }
    }

    /// The next message if all of it has arrived already, counted (no
    /// await, no timer, no future); `None` sends the reader the long way,
    /// which also tells of a bad header or the end.
    fn take_ready(&mut self) -> Option<Result<Bytes, Status>> {
        if !matches!(self.state, State::Open) {
            return None;
        }
        release(
            &self.shared.body_bytes,
            &self.peer,
            std::mem::take(&mut self.held),
        );
        Some(match self.ready()? {
            Ok(body) => Ok(self.counted(body)),
            Err((status, stop)) => Err(self.fail(status, stop)),
        })
    }

    /// `body`, the next message, counted.
    fn counted(&mut self, body: Bytes) -> Bytes {
        self.read += 1;
        if let Some(flow) = &self.flow {
            flow.requests(1, MESSAGE_HEADER_LEN + body.len());
        }
        body
    }

    /// The next message if all of it has arrived already (the common case
    /// for short messages, many to a packet): no timer, no await. `None`
    /// when it has not, or when its header is bad (the reading that waits
    /// tells why).
    fn ready(&mut self) -> Option<Result<Bytes, (Status, Option<ErrorCode>)>> {
        let header = self.pending.get(..MESSAGE_HEADER_LEN)?;
        let len = decode_message(header, self.shared.options.max_request_size).ok()? as usize;
        if self.pending.len() < MESSAGE_HEADER_LEN + len {
            return None;
        }
        if let Err(refusal) = charge(&self.shared.body_bytes, &self.peer, len) {
            let status =
                super::call::refusal_status(Some(refusal), &self.peer, &self.shared.options);
            return Some(Err((status, Some(ErrorCode::REJECTED))));
        }
        self.held = len;
        self.pending.advance(MESSAGE_HEADER_LEN);
        Some(Ok(self.pending.split_to(len)))
    }

    /// Ends the stream with `status`, stopping the caller's side with
    /// `stop` if it is to send no more.
    fn fail(&mut self, status: Status, stop: Option<ErrorCode>) -> Status {
        if let Some(code) = stop {
            let _ = self.recv.stop(code.into());
        }
        release(
            &self.shared.body_bytes,
            &self.peer,
            std::mem::take(&mut self.held),
        );
        self.state = State::Failed(status.clone());
        status
    }

    async fn read(&mut self) -> Result<Option<Bytes>, (Status, Option<ErrorCode>)> {
        let n = self.read + 1;
        let first = std::mem::take(&mut self.pending);
        let (header, rest) =
            match io::read_prefix(&mut self.recv, MESSAGE_HEADER_LEN, first, |_| true).await {
                Ok(read) => read,
                Err(ReadFail::Finished { got: 0 }) => return Ok(None),
                Err(fail) => return Err(failed(fail, n, "message header")),
            };
        let options = &self.shared.options;
        let len = match decode_message(&header, options.max_request_size) {
            Ok(len) => len as usize,
            Err(WireError::TooLarge { len, max }) => {
                return Err((
                    Status::invalid_argument(format!(
                        "request message {n} of {len} bytes exceeds the server's limit of {max}"
                    )),
                    Some(ErrorCode::REJECTED),
                ));
            }
            Err(e) => {
                return Err((
                    Status::invalid_argument(format!("bad header of request message {n}: {e}")),
                    Some(ErrorCode::PROTOCOL),
                ));
            }
        };
        // The message has a time of its own, as a unary body has.
        let by = Instant::now() + options.transfer_time(options.body_timeout, len);
        let (shared, peer, held) = (&self.shared, &self.peer, &mut self.held);
        let mut refused = None;
        let body = io::read_prefix(&mut self.recv, len, rest, |n| {
            match charge(&shared.body_bytes, peer, n) {
                Ok(()) => {
                    *held += n;
                    true
                }
                Err(refusal) => {
                    refused = Some(refusal);
                    false
                }
            }
        });
        let body = tokio::select! {
            biased;
            body = body => body,
            () = sleep_until(by) => return Err((
                Status::deadline_exceeded(format!(
                    "request message {n} of {len} bytes not received within {:?}",
                    options.transfer_time(options.body_timeout, len)
                )),
                Some(ErrorCode::TIMEOUT),
            )),
        };
        match body {
            Ok((body, rest)) => {
                self.pending = rest;
                Ok(Some(body))
            }
            Err(ReadFail::Refused) => Err((
                super::call::refusal_status(refused, &self.peer, options),
                Some(ErrorCode::REJECTED),
            )),
            Err(fail) => Err(failed(fail, n, "message")),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        release(&self.shared.body_bytes, &self.peer, self.held);
    }
}

/// The status of a request stream that broke inside message `n`.
fn failed(fail: ReadFail, n: u64, what: &str) -> (Status, Option<ErrorCode>) {
    match fail {
        ReadFail::Finished { got } => (
            Status::invalid_argument(format!(
                "request stream ended inside the {what} of request {n} (after {got} bytes)"
            )),
            None,
        ),
        ReadFail::Read(ReadError::Reset(_)) => (
            Status::cancelled(format!("the caller reset its requests at request {n}")),
            None,
        ),
        ReadFail::Read(ReadError::ConnectionLost(e)) => (
            Status::unavailable(format!("connection lost at request {n}: {e}")),
            None,
        ),
        ReadFail::Read(e) => (
            Status::internal(format!("reading request {n}: {e}")),
            Some(ErrorCode::PROTOCOL),
        ),
        ReadFail::Refused => (
            Status::resource_exhausted("request memory budget in use"),
            Some(ErrorCode::REJECTED),
        ),
    }
}

/// The requests of a client-streaming or bidirectional call, in the order
/// the caller sent them: read with [`Requests::message`] or as a [`Stream`].
///
/// A message is read from the network only when asked for, so a handler
/// that reads slowly slows the caller (QUIC flow control); its length is
/// checked against the server's request limit from its header, before any
/// of it is read, and its bytes count against the server's and the
/// caller's request memory until the next message is asked for. The stream
/// ends (`None`) when the caller finishes its side; a malformed message, a
/// caller that resets its side, the deadline or a lost connection end it
/// with a status, which a handler usually returns with `?`. A handler that
/// answers before reading every request stops the caller's side.
///
/// ```
/// use quicall_rpc::{Method, Router, Status};
/// use zerocopy::little_endian::U64;
/// const SUM: Method<U64, U64> = Method::new("demo.Math/Sum").client_streaming();
///
/// let router = Router::new().route_client_stream(&SUM, |_ctx, mut numbers| async move {
///     let mut sum = 0u64;
///     while let Some(n) = numbers.message().await? {
///         sum += n.get();
///     }
///     Ok::<_, Status>(U64::new(sum))
/// })?;
/// # Ok::<(), quicall_rpc::RouteError>(())
/// ```
pub struct Requests<Req: ?Sized> {
    reader: Pulled<Reader>,
    exact: bool,
    _req: PhantomData<fn() -> *const Req>,
}

impl Source for Reader {
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, Status>> + Send {
        Reader::next(self)
    }
}

impl<Req: Message + ?Sized> Requests<Req> {
    pub(crate) fn new(reader: Reader, exact: bool) -> Self {
        Self {
            reader: Pulled::new(reader),
            exact,
            _req: PhantomData,
        }
    }

    /// The next request, `None` once the caller has sent its last, or the
    /// status that ended the stream.
    pub async fn message(&mut self) -> Result<Option<Msg<Req>>, Status> {
        if let Some(body) = std::future::poll_fn(|cx| self.poll_ready(cx)).await {
            return self.decode(body.map(Some));
        }
        let body = self.reader.next().await;
        self.decode(body)
    }

    /// A request already here, taken in this poll (nothing is held across
    /// a wait, so a dropped read loses nothing), within the task's
    /// cooperative budget: a handler that always finds one still lets
    /// other tasks run. `Ready(None)`: none is, read the long way.
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Bytes, Status>>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let body = self.reader.source().and_then(Reader::take_ready);
        if body.is_some() {
            coop.made_progress();
        }
        Poll::Ready(body)
    }

    /// How many requests have been read so far.
    pub fn count(&self) -> u64 {
        self.reader.get().map_or(0, |r| r.read)
    }

    fn decode(&mut self, body: Result<Option<Bytes>, Status>) -> Result<Option<Msg<Req>>, Status> {
        let Some(body) = body? else {
            return Ok(None);
        };
        match Msg::receive(body, self.exact) {
            Ok(message) => Ok(Some(message)),
            Err(e) => {
                let status = match self.reader.source() {
                    Some(reader) => {
                        let status = Status::invalid_argument(format!(
                            "request message {} of {} bytes is not a valid request of {}: {}",
                            reader.read, e.len, reader.method, e.reason
                        ));
                        reader.fail(status, Some(ErrorCode::PROTOCOL))
                    }
                    None => Status::invalid_argument(e.reason.to_string()),
                };
                Err(status)
            }
        }
    }
}

impl<Req: Message + ?Sized> Stream for Requests<Req> {
    type Item = Result<Msg<Req>, Status>;

    /// A request already received costs no allocation; one that must be
    /// waited for costs one (the read's future), which
    /// [`Requests::message`] does not.
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(body) = std::task::ready!(this.poll_ready(cx)) {
            return Poll::Ready(this.decode(body.map(Some)).transpose());
        }
        this.reader
            .poll_next(cx)
            .map(|body| this.decode(body).transpose())
    }
}

impl<Req: ?Sized> std::fmt::Debug for Requests<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("read", &self.reader.get().map(|r| r.read))
            .finish_non_exhaustive()
    }
}
