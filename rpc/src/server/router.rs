use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use crate::message::{frame, frame_append};
use crate::wire::{RESPONSE_HEADER_LEN, ResponseFlags, ResponseHead};
use quicall_transport::PeerIdentity;

use super::Access;
use super::requests::{Reader, Requests};
use super::unwind::panic_message;
use crate::{Chunks, Code, Context, Encode, Message, Method, Msg, Shape, Status};

/// A handler's answer, laid out for the wire: the response header followed
/// by any inline body, and a body chunk sent without a copy.
pub(crate) struct Reply {
    pub(crate) head: Bytes,
    pub(crate) tail: Chunks,
    /// A server stream's messages, each framed (a header with the MESSAGE
    /// flag and the body), sent before `head` (then the final status).
    pub(crate) stream: Option<MessageStream>,
}

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, Status>> + Send>>;

/// A server stream's messages, framed by the writer as it takes them.
pub(crate) type MessageStream = Pin<Box<dyn Frames>>;

/// A handler's stream of responses, as the server's writer takes them.
pub(crate) trait Frames: Send {
    /// Takes the handler's next message, if it has one ready, and frames
    /// it at the end of `batch` (the header with the MESSAGE flag, and the
    /// body unless it is a chunk to send apart, returned). `None` at the
    /// end; an error is the status that ends the stream (nothing of that
    /// message is framed).
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        batch: &mut BytesMut,
    ) -> std::task::Poll<Option<Result<Chunks, Status>>>;
}

/// What a handler is given: a unary request's body, or the reader of a
/// request stream.
pub(crate) enum Input {
    Body(Chunks),
    Stream(Reader),
}

trait Handler: Send + Sync {
    fn call(&self, ctx: Context, input: Input, max_response: u32) -> HandlerFuture;
}

/// A unary request of `method`, or the status that refuses it (the handler
/// never runs).
fn one_request<Req: Message + ?Sized, Resp: Message + ?Sized>(
    method: &Method<Req, Resp>,
    input: Input,
) -> Result<Msg<Req>, Status> {
    match input {
        Input::Body(body) => method
            .request(body)
            .map_err(|e| invalid_request(method.name(), &e)),
        Input::Stream(_) => Err(shape_mismatch(method.name())),
    }
}

/// The request stream of `method`, or the status that refuses it.
fn request_stream<Req: Message + ?Sized, Resp: Message + ?Sized>(
    method: &Method<Req, Resp>,
    input: Input,
) -> Result<Requests<Req>, Status> {
    match input {
        Input::Stream(reader) => Ok(Requests::new(reader, method.is_exact())),
        Input::Body(_) => Err(shape_mismatch(method.name())),
    }
}

/// Unreachable in a server (the shape is checked at admission): kept as a
/// status rather than a panic.
fn shape_mismatch(method: &'static str) -> Status {
    Status::internal(format!("{method} called with the wrong shape")).not_processed()
}

/// A handler's stream of responses, framed as it is taken.
fn response_stream<S, Resp, R, E>(stream: S, method: &'static str, max_response: u32) -> Reply
where
    S: Stream<Item = Result<R, E>> + Send + 'static,
    Resp: Message + ?Sized,
    R: Encode<Resp> + Send + 'static,
    E: Into<Status> + 'static,
{
    let messages: MessageStream = Box::pin(Framed::<S, Resp> {
        stream: Box::pin(stream),
        method,
        max_response,
        panicked: false,
        _resp: std::marker::PhantomData,
    });
    Reply {
        head: stream_end(),
        tail: Chunks::new(),
        stream: Some(messages),
    }
}

struct TypedHandler<Req: ?Sized, Resp: ?Sized, F> {
    f: F,
    /// Its request's size rules (exact or evolving).
    method: Method<Req, Resp>,
}

impl<Req, Resp, F, Fut, R, E> Handler for TypedHandler<Req, Resp, F>
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
    F: Fn(Context, Msg<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Encode<Resp> + Send + 'static,
    E: Into<Status>,
{
    fn call(&self, ctx: Context, input: Input, max_response: u32) -> HandlerFuture {
        let method = ctx.method;
        let fut = one_request(&self.method, input).map(|request| (self.f)(ctx, request));
        Box::pin(async move {
            let value = fut?.await.map_err(Into::into)?;
            frame_body::<Resp>(value, method, max_response)
        })
    }
}

/// The answer to a request body that is not a valid request of `method`:
/// named by the method, not by the Rust type (callers need not know the
/// server's type paths); the handler never ran.
fn invalid_request(method: &'static str, e: &crate::BodyError) -> Status {
    Status::invalid_argument(format!(
        "request body of {} bytes is not a valid request of {method}: {}",
        e.len, e.reason
    ))
    .not_processed()
}

/// `value` framed as a response body, if it fits `max_response`.
fn frame_body<Resp: Message + ?Sized>(
    value: impl Encode<Resp>,
    method: &'static str,
    max_response: u32,
) -> Result<Reply, Status> {
    let framed = frame::<Resp, RESPONSE_HEADER_LEN>(value, header(ResponseFlags::NONE), &[])
        .map_err(|e| encode_failed(method, &e))?;
    within_limit(framed.body_len, max_response)?;
    Ok(Reply {
        head: framed.head,
        tail: framed.tail,
        stream: None,
    })
}

/// The header of an OK response or message of `body_len` bytes.
fn header(flags: ResponseFlags) -> impl Fn(usize) -> [u8; RESPONSE_HEADER_LEN] {
    move |body_len| {
        ResponseHead {
            status: Code::Ok.as_u16(),
            flags,
            body_len: u32::try_from(body_len).unwrap_or(u32::MAX),
        }
        .encode()
    }
}

fn encode_failed(method: &'static str, e: &crate::EncodeError) -> Status {
    Status::internal(format!("response of {method}: {e}"))
}

/// OUT_OF_RANGE for a response body over the server's limit.
fn within_limit(body_len: usize, max_response: u32) -> Result<(), Status> {
    if u32::try_from(body_len).map_or(true, |len| len > max_response) {
        return Err(Status::new(
            Code::OutOfRange,
            format!(
                "response body of {body_len} bytes exceeds the server's limit of {max_response}"
            ),
        ));
    }
    Ok(())
}

/// The end of a stream that ended well: status OK, no body.
fn stream_end() -> Bytes {
    Bytes::copy_from_slice(
        &ResponseHead {
            status: Code::Ok.as_u16(),
            flags: ResponseFlags::NONE,
            body_len: 0,
        }
        .encode(),
    )
}

struct StreamHandler<Req: ?Sized, Resp: ?Sized, F> {
    f: F,
    method: Method<Req, Resp>,
}

impl<Req, Resp, F, Fut, S, R, E> Handler for StreamHandler<Req, Resp, F>
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
    F: Fn(Context, Msg<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    S: Stream<Item = Result<R, E>> + Send + 'static,
    R: Encode<Resp> + Send + 'static,
    E: Into<Status> + 'static,
{
    fn call(&self, ctx: Context, input: Input, max_response: u32) -> HandlerFuture {
        let method = ctx.method;
        let fut = one_request(&self.method, input).map(|request| (self.f)(ctx, request));
        Box::pin(async move {
            let stream = fut?.await.map_err(Into::into)?;
            Ok(response_stream::<S, Resp, R, E>(
                stream,
                method,
                max_response,
            ))
        })
    }
}

/// A client-streaming handler: a stream of requests, one response.
struct ClientStreamHandler<Req: ?Sized, Resp: ?Sized, F> {
    f: F,
    method: Method<Req, Resp>,
}

impl<Req, Resp, F, Fut, R, E> Handler for ClientStreamHandler<Req, Resp, F>
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
    F: Fn(Context, Requests<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Encode<Resp> + Send + 'static,
    E: Into<Status>,
{
    fn call(&self, ctx: Context, input: Input, max_response: u32) -> HandlerFuture {
        let method = ctx.method;
        let fut = request_stream(&self.method, input).map(|requests| (self.f)(ctx, requests));
        Box::pin(async move {
            let value = fut?.await.map_err(Into::into)?;
            frame_body::<Resp>(value, method, max_response)
        })
    }
}

/// A bidirectional handler: a stream of requests, a stream of responses.
struct BidiHandler<Req: ?Sized, Resp: ?Sized, F> {
    f: F,
    method: Method<Req, Resp>,
}

impl<Req, Resp, F, Fut, S, R, E> Handler for BidiHandler<Req, Resp, F>
where
    Req: Message + ?Sized,
    Resp: Message + ?Sized,
    F: Fn(Context, Requests<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    S: Stream<Item = Result<R, E>> + Send + 'static,
    R: Encode<Resp> + Send + 'static,
    E: Into<Status> + 'static,
{
    fn call(&self, ctx: Context, input: Input, max_response: u32) -> HandlerFuture {
        let method = ctx.method;
        let fut = request_stream(&self.method, input).map(|requests| (self.f)(ctx, requests));
        Box::pin(async move {
            let stream = fut?.await.map_err(Into::into)?;
            Ok(response_stream::<S, Resp, R, E>(
                stream,
                method,
                max_response,
            ))
        })
    }
}

/// A handler's stream of responses, each framed as it is taken.
struct Framed<S, Resp: ?Sized> {
    stream: Pin<Box<S>>,
    method: &'static str,
    max_response: u32,
    /// The stream panicked: it is not polled again.
    panicked: bool,
    _resp: std::marker::PhantomData<fn() -> *const Resp>,
}

impl<S, Resp, R, E> Frames for Framed<S, Resp>
where
    S: Stream<Item = Result<R, E>> + Send,
    Resp: Message + ?Sized,
    R: Encode<Resp>,
    E: Into<Status>,
{
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        batch: &mut BytesMut,
    ) -> std::task::Poll<Option<Result<Chunks, Status>>> {
        let this = self.get_mut();
        if this.panicked {
            return std::task::Poll::Ready(None);
        }
        let (method, max) = (this.method, this.max_response);
        let start = batch.len();
        // The handler's code runs here, in its stream and in its messages'
        // encoding, after the handler's future has returned: a panic ends
        // the stream with INTERNAL after the messages before it, as a
        // panic ends a unary call, and nothing of the message that panicked
        // is framed.
        let polled = catch_unwind(AssertUnwindSafe(|| {
            this.stream.as_mut().poll_next(cx).map(|item| {
                let value = item?.map_err(Into::into);
                Some(value.and_then(|value| {
                    let (tail, body_len) = frame_append::<Resp, RESPONSE_HEADER_LEN>(
                        batch,
                        value,
                        header(ResponseFlags::MESSAGE),
                    )
                    .map_err(|e| encode_failed(method, &e))?;
                    if let Err(status) = within_limit(body_len, max) {
                        batch.truncate(start);
                        return Err(status);
                    }
                    Ok(tail)
                }))
            })
        }));
        polled.unwrap_or_else(|panic| {
            this.panicked = true;
            batch.truncate(start);
            std::task::Poll::Ready(Some(Err(stream_panicked(method, &*panic))))
        })
    }
}

/// The status of a handler's stream that panicked, logged.
#[cold]
fn stream_panicked(method: &'static str, panic: &(dyn std::any::Any + Send)) -> Status {
    tracing::error!(
        method,
        "handler's stream panicked: {}",
        panic_message(panic)
    );
    Status::internal("handler panicked")
}

pub(crate) struct Route {
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
    /// Whether its request body is kept in chunks ([`Message::KEEPS_CHUNKS`]).
    pub(crate) keeps_chunks: bool,
    handler: Box<dyn Handler>,
    access: Option<Access>,
    /// Its metrics, made when a server starts serving the router.
    pub(crate) meter: Option<crate::meter::MethodMeter>,
}

impl Route {
    /// The handler's future. A handler that panics before it makes its
    /// future (a closure's code ahead of its `async` block) gives one that
    /// panics again when polled, where a panic of the future itself is
    /// caught: either way the call, and only it, fails with INTERNAL.
    pub(crate) fn call(&self, ctx: Context, input: Input, max_response: u32) -> HandlerFuture {
        catch_unwind(AssertUnwindSafe(|| {
            self.handler.call(ctx, input, max_response)
        }))
        .unwrap_or_else(|panic| Box::pin(async move { std::panic::resume_unwind(panic) }))
    }
}

/// Method identifiers are already uniform 64-bit hashes, and the table never
/// grows from network input, so they index the table as they are.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// A table from method identifier to handler.
///
/// ```
/// use quicall_rpc::{Method, Router, Status};
/// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
/// const SAME: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
///
/// let router = Router::new()
///     .route(&ECHO, |_ctx, msg| async move { Ok::<_, Status>(msg) })?;
/// // A second method with the same identifier is refused at registration.
/// assert!(router.route(&SAME, |_ctx, msg| async move { Ok::<_, Status>(msg) }).is_err());
/// # Ok::<(), quicall_rpc::RouteError>(())
/// ```
#[derive(Default)]
pub struct Router {
    routes: HashMap<u64, Route, BuildHasherDefault<IdHasher>>,
    access: Access,
    pub(crate) interceptors: Vec<std::sync::Arc<dyn super::Interceptor>>,
}

/// A method could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Another method with the same identifier is registered already.
    #[error("method {name:?} has id {id:#018x}, already taken by {existing:?}")]
    Duplicate {
        /// The method being registered.
        name: &'static str,
        /// The one registered before.
        existing: &'static str,
        /// Their shared identifier.
        id: u64,
    },
    /// A method registered with the wrong kind of handler (a unary handler
    /// for a streaming method, or the other way round).
    #[error("method {name:?} is {expected}")]
    Shape {
        /// The method being registered.
        name: &'static str,
        /// What the method is, and how to register it.
        expected: &'static str,
    },
    /// An access policy was given for a method that is not registered.
    #[error("method {0:?} is not registered")]
    NotRegistered(&'static str),
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives every route its handles in `metrics`.
    pub(crate) fn attach_meters(&mut self, metrics: &crate::meter::Metrics) {
        for route in self.routes.values_mut() {
            route.meter = Some(metrics.method(route.name));
        }
    }

    /// Adds an interceptor that runs around every call (see
    /// [`Interceptor`](super::Interceptor)), after those added before it.
    pub fn intercept(mut self, interceptor: impl super::Interceptor) -> Self {
        self.interceptors.push(std::sync::Arc::new(interceptor));
        self
    }

    /// Registers `handler` for `method`. The handler receives the call's
    /// [`Context`] and the request as a [`Msg`] view over the received bytes,
    /// and returns the response (anything that [`Encode`]s as the response
    /// type) or an error: a [`Status`], or any error type that converts into
    /// one (`anyhow::Error` with the `anyhow` feature, your own enums through
    /// `From`).
    ///
    /// Fails if a method with the same identifier is registered already.
    ///
    /// ```
    /// use quicall_rpc::{Method, Router, Status};
    /// #[derive(Debug)]
    /// enum StoreError { Missing(String), Full }
    /// impl From<StoreError> for Status {
    ///     fn from(e: StoreError) -> Status {
    ///         match e {
    ///             StoreError::Missing(key) => Status::not_found(format!("no key {key}")),
    ///             StoreError::Full => Status::resource_exhausted("store full"),
    ///         }
    ///     }
    /// }
    /// const GET: Method<[u8], [u8]> = Method::new("kv.Store/Get");
    /// let router = Router::new().route(&GET, |_ctx, key| async move {
    ///     Err::<Vec<u8>, _>(StoreError::Missing(String::from_utf8_lossy(&key).into_owned()))
    /// })?;
    /// # let _ = StoreError::Full;
    /// # Ok::<(), quicall_rpc::RouteError>(())
    /// ```
    pub fn route<Req, Resp, F, Fut, R, E>(
        mut self,
        method: &Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, RouteError>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        F: Fn(Context, Msg<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Encode<Resp> + Send + 'static,
        E: Into<Status> + 'static,
    {
        self.check_new(method, Shape::Unary)?;
        let handler = TypedHandler::<Req, Resp, F> {
            f: handler,
            method: *method,
        };
        self.insert(method, Box::new(handler));
        Ok(self)
    }

    /// Registers `handler` for the server-streaming `method`: it receives
    /// the request and returns a [`Stream`] of responses (or fails at once
    /// with a status). The responses the stream has ready at once (up to
    /// 64 KiB) are sent together, and more are taken only once QUIC's flow
    /// control has accepted those, so a slow reader slows the producer and
    /// the server buffers at most 64 KiB (or one larger message) per call
    /// beyond QUIC's windows. An error from the stream ends
    /// the call with that status after the messages before it; the end of
    /// the stream ends it with OK. The call's deadline covers the whole
    /// stream; a caller that goes away drops the stream.
    ///
    /// ```
    /// use quicall_rpc::{Method, Router, Status, stream};
    /// const COUNT: Method<[u8], [u8]> = Method::new("demo.Count/Up").server_streaming();
    /// let router = Router::new().route_server_stream(&COUNT, |_ctx, _req| async move {
    ///     Ok::<_, Status>(stream::iter((0..3u8).map(|n| Ok::<_, Status>(vec![n]))))
    /// })?;
    /// // A unary handler for it is refused.
    /// assert!(Router::new().route(&COUNT, |_ctx, req| async move { Ok::<_, Status>(req) }).is_err());
    /// # Ok::<(), quicall_rpc::RouteError>(())
    /// ```
    pub fn route_server_stream<Req, Resp, F, Fut, S, R, E>(
        mut self,
        method: &Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, RouteError>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        F: Fn(Context, Msg<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        S: Stream<Item = Result<R, E>> + Send + 'static,
        R: Encode<Resp> + Send + 'static,
        E: Into<Status> + 'static,
    {
        self.check_new(method, Shape::ServerStreaming)?;
        let handler = StreamHandler::<Req, Resp, F> {
            f: handler,
            method: *method,
        };
        self.insert(method, Box::new(handler));
        Ok(self)
    }

    /// Registers `handler` for the client-streaming `method`: it reads the
    /// caller's requests from [`Requests`] (one at a time, as it asks for
    /// them: a handler that reads slowly slows the caller) and returns one
    /// response. A handler that answers before the caller's last request
    /// stops the caller's side; the caller gets the answer.
    ///
    /// ```
    /// use quicall_rpc::{Method, Router, Status};
    /// const COUNT: Method<[u8], [u8]> = Method::new("demo.Bytes/Count").client_streaming();
    /// let router = Router::new().route_client_stream(&COUNT, |_ctx, mut chunks| async move {
    ///     let mut total = 0usize;
    ///     while let Some(chunk) = chunks.message().await? {
    ///         total += chunk.len();
    ///     }
    ///     Ok::<_, Status>(total.to_string().into_bytes())
    /// })?;
    /// # Ok::<(), quicall_rpc::RouteError>(())
    /// ```
    pub fn route_client_stream<Req, Resp, F, Fut, R, E>(
        mut self,
        method: &Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, RouteError>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        F: Fn(Context, Requests<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Encode<Resp> + Send + 'static,
        E: Into<Status> + 'static,
    {
        self.check_new(method, Shape::ClientStreaming)?;
        let handler = ClientStreamHandler::<Req, Resp, F> {
            f: handler,
            method: *method,
        };
        self.insert(method, Box::new(handler));
        Ok(self)
    }

    /// Registers `handler` for the bidirectional `method`: it is given the
    /// caller's [`Requests`] and returns a [`Stream`] of responses, usually
    /// one that reads the requests as it goes (or a
    /// [`stream::channel`](crate::stream::channel) fed by a task that owns
    /// them). Both directions flow at once, each under QUIC flow control;
    /// the call ends with the response stream's end (OK) or error.
    ///
    /// ```
    /// use quicall_rpc::{Method, Router, Status, stream};
    /// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Chat").bidi_streaming();
    /// let router = Router::new().route_bidi_stream(&ECHO, |_ctx, mut requests| async move {
    ///     let (replies, out) = stream::channel(4);
    ///     tokio::spawn(async move {
    ///         loop {
    ///             let reply = match requests.message().await {
    ///                 Ok(Some(message)) => Ok(message),
    ///                 Ok(None) => break,
    ///                 Err(status) => Err(status),
    ///             };
    ///             let failed = reply.is_err();
    ///             if replies.send(reply).await.is_err() || failed {
    ///                 break;
    ///             }
    ///         }
    ///     });
    ///     Ok::<_, Status>(out)
    /// })?;
    /// # Ok::<(), quicall_rpc::RouteError>(())
    /// ```
    pub fn route_bidi_stream<Req, Resp, F, Fut, S, R, E>(
        mut self,
        method: &Method<Req, Resp>,
        handler: F,
    ) -> Result<Self, RouteError>
    where
        Req: Message + ?Sized,
        Resp: Message + ?Sized,
        F: Fn(Context, Requests<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        S: Stream<Item = Result<R, E>> + Send + 'static,
        R: Encode<Resp> + Send + 'static,
        E: Into<Status> + 'static,
    {
        self.check_new(method, Shape::Bidirectional)?;
        let handler = BidiHandler::<Req, Resp, F> {
            f: handler,
            method: *method,
        };
        self.insert(method, Box::new(handler));
        Ok(self)
    }

    /// Whether `method` may be registered with a handler of the `handler`
    /// shape under an identifier not taken yet.
    fn check_new<Req: Message + ?Sized, Resp: Message + ?Sized>(
        &self,
        method: &Method<Req, Resp>,
        handler: Shape,
    ) -> Result<(), RouteError> {
        if method.shape() != handler {
            return Err(RouteError::Shape {
                name: method.name(),
                expected: match method.shape() {
                    Shape::Unary => "unary (Router::route)",
                    Shape::ServerStreaming => "server-streaming (Router::route_server_stream)",
                    Shape::ClientStreaming => "client-streaming (Router::route_client_stream)",
                    Shape::Bidirectional => "bidirectional (Router::route_bidi_stream)",
                },
            });
        }
        match self.routes.get(&method.id()) {
            Some(existing) => Err(RouteError::Duplicate {
                name: method.name(),
                existing: existing.name,
                id: method.id(),
            }),
            None => Ok(()),
        }
    }

    fn insert<Req: Message + ?Sized, Resp: Message + ?Sized>(
        &mut self,
        method: &Method<Req, Resp>,
        handler: Box<dyn Handler>,
    ) {
        self.routes.insert(
            method.id(),
            Route {
                name: method.name(),
                shape: method.shape(),
                keeps_chunks: Req::KEEPS_CHUNKS,
                handler,
                access: None,
                meter: None,
            },
        );
    }

    /// Sets who may call every method that has no policy of its own
    /// (default: [`Access::Any`]).
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Sets who may call `method`, in place of the router-wide policy.
    pub fn method_access<Req: ?Sized, Resp: ?Sized>(
        mut self,
        method: &Method<Req, Resp>,
        access: Access,
    ) -> Result<Self, RouteError> {
        let route = self
            .routes
            .get_mut(&method.id())
            .ok_or(RouteError::NotRegistered(method.name()))?;
        route.access = Some(access);
        Ok(self)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Route> {
        self.routes.get(&id)
    }

    /// The name of the method with identifier `id`, if one is registered:
    /// the same lookup the server makes for every call.
    ///
    /// ```
    /// use quicall_rpc::{Method, Router, Status};
    /// const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
    /// let router = Router::new().route(&ECHO, |_ctx, msg| async move { Ok::<_, Status>(msg) })?;
    /// assert_eq!(router.method_name(ECHO.id()), Some("demo.Echo/Echo"));
    /// assert_eq!(router.method_name(42), None);
    /// # Ok::<(), quicall_rpc::RouteError>(())
    /// ```
    pub fn method_name(&self, id: u64) -> Option<&'static str> {
        self.routes.get(&id).map(|r| r.name)
    }

    /// Whether `peer` may call `route`.
    pub(crate) fn allows(&self, route: &Route, peer: Option<&PeerIdentity>) -> bool {
        route
            .access
            .as_ref()
            .unwrap_or(&self.access)
            .allows(peer, route.name)
    }

    /// The registered methods, as (name, identifier).
    pub fn methods(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.routes.iter().map(|(id, route)| (route.name, *id))
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.routes.values().map(|r| r.name))
            .finish()
    }
}
