//! The client: calls over one connection, each on its own stream, with
//! deadlines and cancellation on drop.

mod stream;
mod streaming;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quicall_transport::{ClientEndpoint, ClientTls, Connection, Limits};
use tokio::time::{Instant, timeout_at};

use crate::message::frame;
use crate::wire::{ErrorCode, REQUEST_HEADER_LEN, RequestHead};
use crate::{
    Chunks, Code, Encode, Message, Metadata, MetadataError, Method, Msg, Status, TRACEPARENT,
    TraceContext,
};
pub use streaming::{ClientStream, RequestSink, ResponseStream};

pub(crate) use stream::{Answer, CallStream, connection_status, transport_status};
pub(crate) use streaming::{
    Responses, Timing, bidi_halves, check_shape, client_stream_on, first_part, open_on,
    response_stream,
};

/// Client limits and defaults.
///
/// ```
/// use quicall_rpc::ClientOptions;
/// use std::time::Duration;
/// let options = ClientOptions {
///     default_deadline: Some(Duration::from_secs(2)),
///     ..ClientOptions::default()
/// };
/// assert_eq!(options.max_response_size, 16 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Transport limits (timeouts, flow-control windows).
    pub transport: Limits,
    /// Largest response body accepted; a larger one fails the call with
    /// RESOURCE_EXHAUSTED before it is read. Default 16 MiB.
    pub max_response_size: u32,
    /// Deadline of a call that sets none. Default 30 s; `None` for no limit.
    pub default_deadline: Option<Duration>,
    /// Run around every call, in order (see [`ClientInterceptor`]).
    pub interceptors: Interceptors,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            transport: Limits::default(),
            max_response_size: 16 << 20,
            default_deadline: Some(Duration::from_secs(30)),
            interceptors: Interceptors::default(),
        }
    }
}

/// Runs around every call a [`Client`] or a
/// [`Cluster`](crate::cluster::Cluster) makes: adds metadata to it (a
/// token, a request id) and sees how it ended.
///
/// ```
/// use quicall_rpc::{ClientInterceptor, ClientOptions, Metadata, MetadataError};
///
/// struct Token(String);
///
/// impl ClientInterceptor for Token {
///     fn before(&self, _method: &'static str, metadata: &mut Metadata) -> Result<(), MetadataError> {
///         metadata.insert("authorization", format!("Bearer {}", self.0))?;
///         Ok(())
///     }
/// }
///
/// let mut options = ClientOptions::default();
/// options.interceptors.push(Token("7f3a".into()));
/// ```
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Before the call is sent: may add to (or change) its metadata. An
    /// error fails the call with INVALID_ARGUMENT, not sent.
    fn before(&self, method: &'static str, metadata: &mut Metadata) -> Result<(), MetadataError> {
        let _ = (method, metadata);
        Ok(())
    }

    /// After the call: its status (OK on success) and how long it took.
    /// It may run while a stream is dropped (a stream given up ends
    /// CANCELLED); a panic in it is logged and changes nothing.
    fn after(&self, method: &'static str, code: Code, elapsed: Duration) {
        let _ = (method, code, elapsed);
    }
}

/// The interceptors of a client, run in the order they were pushed.
#[derive(Clone, Default)]
pub struct Interceptors(Vec<Arc<dyn ClientInterceptor>>);

impl Interceptors {
    /// Adds one, run after those before it.
    pub fn push(&mut self, interceptor: impl ClientInterceptor) {
        self.0.push(Arc::new(interceptor));
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The call's metadata after every interceptor's `before`.
    pub(crate) fn before(
        &self,
        method: &'static str,
        metadata: &Metadata,
    ) -> Result<Metadata, Status> {
        let mut metadata = metadata.clone();
        for interceptor in &self.0 {
            interceptor
                .before(method, &mut metadata)
                .map_err(|e| Status::invalid_argument(e.to_string()).not_processed())?;
        }
        Ok(metadata)
    }

    /// Tells every interceptor of an outcome. A panic in one is logged:
    /// `after` runs where a stream is dropped, and a panic there while the
    /// caller's code unwinds from one of its own would abort the process.
    pub(crate) fn after(&self, method: &'static str, code: Code, elapsed: Duration) {
        for interceptor in &self.0 {
            let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                interceptor.after(method, code, elapsed);
            }));
            if let Err(panic) = told {
                tracing::error!(
                    method,
                    "client interceptor panicked after the call: {}",
                    crate::server::panic_message(&*panic)
                );
            }
        }
    }
}

impl std::fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} interceptors", self.0.len())
    }
}

/// Options of one call.
///
/// ```
/// use quicall_rpc::CallOptions;
/// use std::time::Duration;
/// let options = CallOptions::deadline(Duration::from_millis(50));
/// assert_eq!(options.deadline, Some(Duration::from_millis(50)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Time budget of the call, sent to the server, which stops the handler
    /// when it runs out; `None` takes the client's default.
    pub deadline: Option<Duration>,
    /// Metadata sent with the call (docs/wire.md section 13): tokens,
    /// tenants, request ids. A [`Cluster`](crate::cluster::Cluster) sends
    /// it with every attempt and hedge of the call.
    pub metadata: Metadata,
}

impl CallOptions {
    /// A call with this time budget.
    pub fn deadline(deadline: Duration) -> Self {
        Self {
            deadline: Some(deadline),
            ..Self::default()
        }
    }

    /// The same options with this metadata.
    ///
    /// ```
    /// use quicall_rpc::{CallOptions, Metadata};
    /// let options = CallOptions::default()
    ///     .with_metadata(Metadata::new().with("tenant", "acme")?);
    /// assert_eq!(options.metadata.get_str("tenant"), Some("acme"));
    /// # Ok::<(), quicall_rpc::MetadataError>(())
    /// ```
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A response and the metadata the server sent with it.
pub struct Response<T: Message + ?Sized> {
    /// The response message.
    pub message: Msg<T>,
    /// The metadata the server sent back (empty if none).
    pub metadata: Metadata,
}

impl<T: Message + ?Sized> std::fmt::Debug for Response<T>
where
    T::View: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("message", &self.message)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// A client of one server, over one QUIC connection. Cloning is cheap; clones
/// share the connection. Calls run concurrently, each on its own stream, and
/// never wait behind each other.
///
/// A `Client` does not reconnect: once its connection is closed, calls fail
/// with UNAVAILABLE. For reconnection with backoff, retries of safe calls and
/// many servers, use a [`Cluster`](crate::cluster::Cluster) (of one server,
/// if need be).
///
/// ```no_run
/// use quicall_rpc::{CallOptions, Client, ClientOptions, Method};
/// use std::time::Duration;
/// # async fn run(tls: quicall_transport::ClientTls) -> Result<(), quicall_rpc::Status> {
/// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
/// let client = Client::connect("127.0.0.1:4433".parse().unwrap(), "localhost", tls,
///                              ClientOptions::default()).await?;
/// let reply = client.call(&ECHO, "hello").await?;
/// assert_eq!(&*reply, b"hello");
/// let reply = client
///     .call_with(&ECHO, "quick", CallOptions::deadline(Duration::from_millis(20)))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
    endpoint: Option<ClientEndpoint>,
    options: Arc<ClientOptions>,
}

impl Client {
    /// Connects to the server at `addr`, whose certificate must name
    /// `server_name` and chain to a CA that `tls` trusts.
    ///
    /// A server that refuses this client's certificate may do so only after
    /// the handshake completes on the client's side; the first call then
    /// fails with UNAUTHENTICATED.
    ///
    /// Each `connect` makes a client endpoint of its own: a UDP socket and
    /// quinn's receive buffers (its largest UDP payload × 64 × 32, 13 MB
    /// with the default loopback MTU bound, zeroed). A process that
    /// connects often or to many servers connects from one
    /// [`ClientEndpoint`] and wraps each connection with
    /// [`Client::from_connection`], or uses a
    /// [`Cluster`](crate::cluster::Cluster), which keeps one endpoint for
    /// all its servers:
    ///
    /// ```no_run
    /// use quicall_rpc::transport::{ClientEndpoint, ClientTls, Limits};
    /// use quicall_rpc::{Client, ClientOptions};
    /// # async fn run(tls: ClientTls) -> Result<(), Box<dyn std::error::Error>> {
    /// let endpoint = ClientEndpoint::new(tls, Limits::default())?;
    /// let mut clients = Vec::new();
    /// for addr in ["10.0.0.7:4433", "10.0.0.8:4433"] {
    ///     let conn = endpoint.connect(addr.parse()?, "node").await?;
    ///     clients.push(Client::from_connection(conn, ClientOptions::default()));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: ClientTls,
        options: ClientOptions,
    ) -> Result<Client, Status> {
        let endpoint = ClientEndpoint::new(tls, options.transport.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let conn = endpoint
            .connect(addr, server_name)
            .await
            .map_err(|e| stream::transport_status(&e))?;
        Ok(Client {
            conn,
            endpoint: Some(endpoint),
            options: Arc::new(options),
        })
    }

    /// A client over an established connection.
    pub fn from_connection(conn: Connection, options: ClientOptions) -> Client {
        Client {
            conn,
            endpoint: None,
            options: Arc::new(options),
        }
    }

    /// The connection (peer identity, statistics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Calls `method` with `request` and the client's default deadline.
    ///
    /// Dropping the returned future cancels the call: the stream is reset and
    /// the server drops the handler.
    pub fn call<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
    ) -> impl Future<Output = Result<Msg<Resp>, Status>>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        self.call_with(method, request, CallOptions::default())
    }

    /// Calls `method` with `request` and per-call options.
    pub fn call_with<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
    ) -> impl Future<Output = Result<Msg<Resp>, Status>>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        self.call_inner(method, request, options, false, |response| response.message)
    }

    /// Calls `method` and returns the response with the metadata the
    /// server sent back (with a failure too: [`Status::metadata`]). The
    /// request tells the server that this caller reads response metadata.
    pub fn call_full<Req, Resp>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
    ) -> impl Future<Output = Result<Response<Resp>, Status>>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        self.call_inner(method, request, options, true, |response| response)
    }

    /// The call, encoded when first polled (in the caller's trace, if it
    /// is in one), its output mapped by `output`.
    async fn call_inner<Req, Resp, T>(
        &self,
        method: &Method<Req, Resp>,
        request: impl Encode<Req>,
        options: CallOptions,
        read_metadata: bool,
        output: fn(Response<Resp>) -> T,
    ) -> Result<T, Status>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
    {
        let budget = options.deadline.or(self.options.default_deadline);
        let start = Instant::now();
        let interceptors = &self.options.interceptors;
        let (span, framed) = begin_call(
            method,
            request,
            budget,
            options.metadata,
            interceptors,
            read_metadata,
        );
        let result = match framed {
            Ok((head, tail)) => {
                let exchange = self.exchange(head, tail, Resp::KEEPS_CHUNKS);
                within(start, budget, method.name(), exchange).await
            }
            Err(status) => Err(status),
        };
        let result = result.and_then(|answer| {
            let message = method
                .response(answer.body)
                .map_err(|e| Status::internal(format!("bad response: {e}")))?;
            Ok(Response {
                message,
                metadata: answer.metadata.map(|m| *m).unwrap_or_default(),
            })
        });
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        end_span(span, code, start);
        if !interceptors.is_empty() {
            interceptors.after(method.name(), code, start.elapsed());
        }
        result.map(output)
    }

    /// One request and its response on a new stream; the response body
    /// (kept in chunks if `keep_chunks`).
    async fn exchange(
        &self,
        head: Bytes,
        tail: Chunks,
        keep_chunks: bool,
    ) -> Result<Answer, Status> {
        let max = self.options.max_response_size;
        exchange(&self.conn, head, tail, (max, keep_chunks)).await
    }

    /// Closes the connection (and the endpoint, if this client made it);
    /// calls in flight fail with UNAVAILABLE.
    pub fn close(&self) {
        self.conn.close(ErrorCode::NO_ERROR.get(), b"client closed");
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(ErrorCode::NO_ERROR.get(), b"client closed");
        }
    }
}

/// Runs `call` of `method` until `start + budget`, or for ever without a
/// budget; past the deadline the call's future is dropped (resetting its
/// streams) and the caller gets DEADLINE_EXCEEDED. An UNKNOWN_METHOD answer
/// is told with the name of the method called (the server knows only its
/// identifier).
pub(crate) async fn within<T>(
    start: Instant,
    budget: Option<Duration>,
    method: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let result = match budget {
        None => call.await,
        Some(budget) => timeout_at(start + budget, call).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer from {method} within {budget:?}"
            )))
        }),
    };
    result.map_err(|status| match status.code() {
        Code::UnknownMethod => {
            let message = format!("the server has no method {method} ({})", status.message());
            status.with_message(message)
        }
        _ => status,
    })
}

/// A request's bytes: the header and any inline body, and a body chunk.
pub(crate) type Framed = (Bytes, Chunks);

/// A call's span (in the current trace, if any) and its bytes: what a
/// [`Client`] and a [`Cluster`](crate::cluster::Cluster) do first.
pub(crate) fn begin_call<Req, Resp>(
    method: &Method<Req, Resp>,
    request: impl Encode<Req>,
    budget: Option<Duration>,
    metadata: Metadata,
    interceptors: &Interceptors,
    read_metadata: bool,
) -> (Option<Box<tracing::Span>>, Result<Framed, Status>)
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
{
    begin(method.name(), metadata, interceptors, |metadata| {
        let metadata = (read_metadata || !metadata.is_empty()).then_some(metadata);
        frame_request(method, request, budget, metadata)
    })
}

/// The span and the header of a call whose requests are a stream: the
/// header (with the STREAM flag) and the metadata block; the messages
/// follow. The caller always reads the response's metadata.
pub(crate) fn begin_stream<Req, Resp>(
    method: &Method<Req, Resp>,
    budget: Option<Duration>,
    metadata: Metadata,
    interceptors: &Interceptors,
) -> (Option<Box<tracing::Span>>, Result<Bytes, Status>)
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
{
    begin(method.name(), metadata, interceptors, |metadata| {
        let block = metadata.as_bytes();
        let head = RequestHead {
            method_id: method.id(),
            body_len: 0,
            deadline: budget,
            metadata_len: Some(metadata_len(block)?),
            stream: true,
        };
        let mut out = BytesMut::with_capacity(REQUEST_HEADER_LEN + block.len());
        out.extend_from_slice(&head.encode());
        out.extend_from_slice(block);
        Ok(out.freeze())
    })
}

/// The span, then the metadata after the interceptors' and with the
/// trace's `traceparent`, then `frame` of it.
fn begin<T>(
    method: &'static str,
    metadata: Metadata,
    interceptors: &Interceptors,
    frame: impl FnOnce(&Metadata) -> Result<T, Status>,
) -> (Option<Box<tracing::Span>>, Result<T, Status>) {
    let span = call_span(method);
    let own = crate::trace::own_span(span.as_deref(), TraceContext::current(), true);
    let framed = call_metadata(method, metadata, interceptors, own).and_then(|m| frame(&m));
    (span, framed)
}

/// A call's `tracing` span (when a subscriber wants it: boxed, so that
/// futures stay small without one): the method and, in a trace, the trace
/// and span ids; status and latency are recorded by [`end_span`].
pub(crate) fn call_span(method: &'static str) -> Option<Box<tracing::Span>> {
    use tracing::field::Empty;
    if !tracing::enabled!(target: "quicall", tracing::Level::DEBUG) {
        return None;
    }
    let span = tracing::debug_span!(
        target: "quicall",
        "quicall.call",
        method,
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
        status = Empty,
        latency_us = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
    );
    Some(Box::new(span))
}

/// Records a call's status and latency on its span (a client's or a
/// server's).
/// What a stream's end is told to, wherever the stream ends: its span
/// (status and latency recorded) and the client's interceptors (`after`).
/// Told once; dropped untold, it tells nothing.
pub(crate) struct Ending {
    span: Option<Box<tracing::Span>>,
    /// The interceptors, if there are any, and the method they are told of.
    interceptors: Option<(Interceptors, &'static str)>,
}

impl Ending {
    pub(crate) fn new(
        span: Option<Box<tracing::Span>>,
        interceptors: &Interceptors,
        method: &'static str,
    ) -> Self {
        Ending {
            span,
            interceptors: (!interceptors.is_empty()).then(|| (interceptors.clone(), method)),
        }
    }

    /// The call ended with `code`, having begun at `start`.
    pub(crate) fn end(&mut self, code: Code, start: Instant) {
        end_span(self.span.take(), code, start);
        if let Some((interceptors, method)) = self.interceptors.take() {
            interceptors.after(method, code, start.elapsed());
        }
    }
}

pub(crate) fn end_span(span: Option<Box<tracing::Span>>, code: Code, start: Instant) {
    if let Some(span) = span {
        span.record("status", code.name());
        span.record("latency_us", start.elapsed().as_micros() as u64);
        span.record("otel.status_code", otel_status(code));
    }
}

/// The OpenTelemetry status of a span that ended with `code`.
fn otel_status(code: Code) -> &'static str {
    if code == Code::Ok { "ok" } else { "error" }
}

/// A call's metadata: the caller's, after the interceptors', with the
/// trace's `traceparent` unless it has one.
fn call_metadata(
    method: &'static str,
    metadata: Metadata,
    interceptors: &Interceptors,
    trace: Option<TraceContext>,
) -> Result<Metadata, Status> {
    let mut metadata = if interceptors.is_empty() {
        metadata
    } else {
        interceptors.before(method, &metadata)?
    };
    if let Some(trace) = trace.filter(|_| metadata.get(TRACEPARENT).is_none()) {
        metadata
            .insert(TRACEPARENT, trace.traceparent_bytes())
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    Ok(metadata)
}

/// A metadata block's length for the request header, or the status that
/// refuses a block too large for it.
fn metadata_len(block: &[u8]) -> Result<u16, Status> {
    u16::try_from(block.len()).map_err(|_| {
        Status::invalid_argument(format!(
            "request metadata of {} bytes (the protocol's limit is 65535)",
            block.len()
        ))
        .not_processed()
    })
}

/// The request header of a call of `method` with time budget `budget`,
/// followed by `request`'s body: the header and any inline body in one
/// buffer, a body chunk apart (uncopied).
pub(crate) fn frame_request<Req, Resp>(
    method: &Method<Req, Resp>,
    request: impl Encode<Req>,
    budget: Option<Duration>,
    metadata: Option<&Metadata>,
) -> Result<(Bytes, Chunks), Status>
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
{
    let block = metadata.map(Metadata::as_bytes);
    let metadata_len = block.map(|b| metadata_len(b)).transpose()?;
    let header = |body_len: usize| {
        RequestHead {
            method_id: method.id(),
            body_len: u32::try_from(body_len).unwrap_or(u32::MAX),
            deadline: budget,
            metadata_len,
            stream: false,
        }
        .encode()
    };
    let extra = block.map_or(&[][..], |b| &b[..]);
    let framed = frame::<Req, REQUEST_HEADER_LEN>(request, header, extra)
        .map_err(|e| Status::invalid_argument(e.to_string()).not_processed())?;
    if u32::try_from(framed.body_len).is_err() {
        return Err(
            Status::invalid_argument("request body exceeds the protocol's 4 GiB limit")
                .not_processed(),
        );
    }
    Ok((framed.head, framed.tail))
}

/// One request and its response on a new stream of `conn`; the response
/// body, of at most `max_response_size` bytes, kept in the chunks it
/// arrived in if `keep_chunks`. Dropping the future resets the stream.
pub(crate) async fn exchange(
    conn: &Connection,
    head: Bytes,
    tail: Chunks,
    (max_response_size, keep_chunks): (u32, bool),
) -> Result<Answer, Status> {
    let call = async {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| connection_status(&e).not_processed())?;
        let mut stream = CallStream::new(send, recv);
        stream.send_request(head, tail, true).await?;
        let answer = stream.read_response(max_response_size, keep_chunks).await?;
        Ok(answer)
    };
    call.await.map_err(|status| silenced(conn, status))
}

/// A call's status, saying so when the connection was given up because its
/// server went silent (rather than "closed locally").
fn silenced(conn: &Connection, status: Status) -> Status {
    match conn.silent_for() {
        Some(silent) if status.code() == Code::Unavailable => status.with_message(format!(
            "server silent for {} ms (keep-alives unanswered): connection given up",
            silent.as_millis()
        )),
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls can move between threads (spawned on a multi-threaded runtime).
    #[test]
    fn call_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        const M: Method<[u8], [u8]> = Method::new("x");
        fn check(client: &Client) {
            is_send(&client.call(&M, Bytes::new()));
        }
        let _ = check;
        assert_eq!(crate::wire::VERSION, 1);
    }
}
