//! Typed methods: constants naming a request type, a response type and a
//! stable identifier.

use std::fmt;
use std::marker::PhantomData;

use crate::Message;

/// A method: its name, its 64-bit identifier (FNV-1a 64 of the name, computed
/// at compile time), whether it is idempotent, and the request and response
/// types, shared by client and server code.
///
/// ```
/// use quicall_rpc::Method;
/// use zerocopy::little_endian::I64;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// #[repr(C)]
/// pub struct AddRequest { pub a: I64, pub b: I64 }
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// #[repr(C)]
/// pub struct AddResponse { pub sum: I64 }
///
/// pub const ADD: Method<AddRequest, AddResponse> = Method::new("calc.Calc/Add").idempotent();
/// // Variable-length data: a byte slice.
/// pub const ECHO: Method<[u8], [u8]> = Method::new("demo.Echo/Echo");
///
/// assert_eq!(ADD.id(), quicall_rpc::method_id("calc.Calc/Add"));
/// assert!(ADD.is_idempotent() && !ECHO.is_idempotent());
/// ```
pub struct Method<Req: ?Sized, Resp: ?Sized> {
    name: &'static str,
    id: u64,
    idempotent: bool,
    exact: bool,
    hedge: Option<Hedge>,
    shape: Shape,
    _types: PhantomData<fn(*const Req) -> *const Resp>,
}

impl<Req: Message + ?Sized, Resp: Message + ?Sized> Method<Req, Resp> {
    /// A method named `name` (by convention `package.Service/Method`).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            id: method_id(name),
            idempotent: false,
            exact: false,
            hedge: None,
            shape: Shape::Unary,
            _types: PhantomData,
        }
    }

    /// Declares a server-streaming method: one request, then any number of
    /// responses on the same stream, ended by a status (docs/wire.md,
    /// section 15). Served with [`Router::route_server_stream`](crate::Router::route_server_stream),
    /// called with [`Client::server_stream`](crate::Client::server_stream).
    ///
    /// ```
    /// use quicall_rpc::Method;
    /// const LIST: Method<[u8], [u8]> = Method::new("kv.Store/List").server_streaming();
    /// assert!(LIST.is_server_streaming());
    /// ```
    pub const fn server_streaming(self) -> Self {
        self.shaped(Shape::ServerStreaming)
    }

    /// Declares a client-streaming method: any number of requests on the
    /// same stream, then one response (docs/wire.md, section 16). Served
    /// with [`Router::route_client_stream`](crate::Router::route_client_stream),
    /// called with [`Client::client_stream`](crate::Client::client_stream).
    ///
    /// ```
    /// use quicall_rpc::{Method, Shape};
    /// const UPLOAD: Method<[u8], [u8]> = Method::new("kv.Store/Load").client_streaming();
    /// assert_eq!(UPLOAD.shape(), Shape::ClientStreaming);
    /// ```
    pub const fn client_streaming(self) -> Self {
        self.shaped(Shape::ClientStreaming)
    }

    /// Declares a bidirectional method: a stream of requests and a stream
    /// of responses on the same QUIC stream, at the same time (docs/wire.md,
    /// section 16). Served with [`Router::route_bidi_stream`](crate::Router::route_bidi_stream),
    /// called with [`Client::bidi_stream`](crate::Client::bidi_stream).
    ///
    /// ```
    /// use quicall_rpc::{Method, Shape};
    /// const CHAT: Method<[u8], [u8]> = Method::new("chat.Room/Talk").bidi_streaming();
    /// assert_eq!(CHAT.shape(), Shape::Bidirectional);
    /// assert!(CHAT.shape().streams_requests() && CHAT.shape().streams_responses());
    /// ```
    pub const fn bidi_streaming(self) -> Self {
        self.shaped(Shape::Bidirectional)
    }

    const fn shaped(mut self, shape: Shape) -> Self {
        assert!(self.hedge.is_none(), "a stream cannot be hedged");
        self.shape = shape;
        self
    }

    /// Whether the method is server-streaming (one request, a stream of
    /// responses).
    pub const fn is_server_streaming(&self) -> bool {
        matches!(self.shape, Shape::ServerStreaming)
    }

    /// The method's shape: unary, or which sides stream.
    pub const fn shape(&self) -> Shape {
        self.shape
    }

    /// Refuses bodies that do not have exactly their type's size, on both
    /// sides, instead of reading them by the evolution rules (see
    /// [`Msg`](crate::Msg): a longer body's tail ignored, a shorter one's
    /// missing fields read as zero). For methods whose messages will never
    /// grow and where a size mismatch can only be a mistake.
    ///
    /// Evolution is the default because it has to be in place in the old
    /// version for a rolling upgrade to work: a peer deployed before the
    /// first field was added must already read longer bodies.
    pub const fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// Whether the method refuses bodies of another size than its types'.
    pub const fn is_exact(&self) -> bool {
        self.exact
    }

    /// A received body of this method's request type, by its rules.
    pub(crate) fn request(&self, body: crate::Chunks) -> Result<crate::Msg<Req>, crate::BodyError> {
        crate::Msg::receive_chunks(body, self.exact)
    }

    /// A received body of this method's response type, by its rules.
    pub(crate) fn response(
        &self,
        body: crate::Chunks,
    ) -> Result<crate::Msg<Resp>, crate::BodyError> {
        crate::Msg::receive_chunks(body, self.exact)
    }

    /// Declares the method idempotent: running it twice has the effect of
    /// running it once, so a failed call may be retried or hedged.
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Hedges calls of this method made through a
    /// [`Cluster`](crate::cluster::Cluster): when no answer has come after
    /// the [`Hedge`] delay, the same call goes to a second server and the
    /// first answer wins. Only idempotent methods may be hedged (checked at
    /// compile time for a `const`).
    ///
    /// ```
    /// use quicall_rpc::{Hedge, Method};
    /// use std::time::Duration;
    /// const GET: Method<[u8], [u8]> = Method::new("kv.Store/Get")
    ///     .idempotent()
    ///     .hedged(Hedge::Percentile(0.95));
    /// assert_eq!(GET.hedge(), Some(Hedge::Percentile(0.95)));
    /// ```
    pub const fn hedged(mut self, hedge: Hedge) -> Self {
        assert!(self.idempotent, "only idempotent methods can be hedged");
        assert!(
            matches!(self.shape, Shape::Unary),
            "a stream cannot be hedged"
        );
        self.hedge = Some(hedge);
        self
    }
}

/// Which sides of a method's call are streams of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// A stream each way.
    Bidirectional,
}

impl Shape {
    /// Whether the requests are a stream of messages (the request header's
    /// STREAM flag).
    pub const fn streams_requests(self) -> bool {
        matches!(self, Shape::ClientStreaming | Shape::Bidirectional)
    }

    /// Whether the responses are a stream of messages.
    pub const fn streams_responses(self) -> bool {
        matches!(self, Shape::ServerStreaming | Shape::Bidirectional)
    }

    /// Its name in messages: `unary`, `server-streaming` ...
    pub const fn name(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::ServerStreaming => "server-streaming",
            Shape::ClientStreaming => "client-streaming",
            Shape::Bidirectional => "bidirectional",
        }
    }
}

/// When a hedged call sends its second copy.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Hedge {
    /// After a fixed delay.
    After(std::time::Duration),
    /// After the given quantile (0.0 to 1.0, for example 0.95) of this
    /// method's own observed latency. Until the method has a few dozen
    /// observations, calls are not hedged.
    Percentile(f64),
}

impl<Req: ?Sized, Resp: ?Sized> Method<Req, Resp> {
    /// The method name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The identifier sent on the wire.
    pub const fn id(&self) -> u64 {
        self.id
    }

    /// Whether the method is idempotent.
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The method's hedging, if any.
    pub const fn hedge(&self) -> Option<Hedge> {
        self.hedge
    }
}

impl<Req: ?Sized, Resp: ?Sized> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req: ?Sized, Resp: ?Sized> Copy for Method<Req, Resp> {}

impl<Req: ?Sized, Resp: ?Sized> fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method")
            .field("name", &self.name)
            .field("id", &format_args!("{:#018x}", self.id))
            .field("idempotent", &self.idempotent)
            .field("hedge", &self.hedge)
            .finish()
    }
}

/// The identifier of a method name: 64-bit FNV-1a over the name's UTF-8
/// bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
///
/// ```
/// assert_eq!(quicall_rpc::method_id(""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(quicall_rpc::method_id("a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub const fn method_id(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(method_id("foobar"), 0x85944171f73967e8);
        assert_eq!(method_id("calc.Calc/Add"), method_id("calc.Calc/Add"));
        assert_ne!(method_id("calc.Calc/Add"), method_id("calc.Calc/Sub"));
    }

    #[test]
    fn ids_are_computed_at_compile_time() {
        const ID: u64 = method_id("calc.Calc/Add");
        const M: Method<[u8], [u8]> = Method::new("calc.Calc/Add");
        assert_eq!(M.id(), ID);
    }
}
