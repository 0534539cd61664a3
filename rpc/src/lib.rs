//! quicall's RPC layer: the wire format, typed zero-copy methods, status
//! codes, the server and the client.
//!
//! Every call is one bidirectional QUIC stream: the client writes a 24-byte
//! [`wire::RequestHeader`] and the request body and finishes its side; the
//! server answers with an 8-byte [`wire::ResponseHeader`] and the response
//! body, and finishes. Messages are fixed-layout zerocopy structs (or byte
//! slices) and [`Rkyv`] archives, received as [`Msg`] views over the
//! received bytes (no copy, no parse; archives validated first), or
//! `Proto` messages (feature `prost`). Calls carry [`Metadata`] both
//! ways; [`Interceptor`]s and [`ClientInterceptor`]s run around them, a
//! [`TraceContext`] follows them across services, and servers and
//! clusters keep metrics for Prometheus (and OpenTelemetry, with feature
//! `otel`). Failures are [`Status`]es with a
//! [`Code`].
//!
//! ```no_run
//! use quicall_rpc::{Client, ClientOptions, Method, Router, Server, ServerOptions, Status};
//! use zerocopy::little_endian::I64;
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
//!
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
//! #[repr(C)]
//! struct AddRequest { a: I64, b: I64 }
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
//! #[repr(C)]
//! struct AddResponse { sum: I64 }
//! const ADD: Method<AddRequest, AddResponse> = Method::new("calc.Calc/Add").idempotent();
//!
//! # async fn run(server_tls: quicall_transport::ServerTls, client_tls: quicall_transport::ClientTls)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().route(&ADD, |_ctx, req| async move {
//!     Ok::<_, Status>(AddResponse { sum: I64::new(req.a.get() + req.b.get()) })
//! })?;
//! let server = Server::bind("127.0.0.1:0".parse()?, server_tls, router, ServerOptions::default())?;
//! let client = Client::connect(server.local_addr(), "localhost", client_tls, ClientOptions::default()).await?;
//! let sum = client.call(&ADD, &AddRequest { a: I64::new(2), b: I64::new(3) }).await?;
//! assert_eq!(sum.sum.get(), 5);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod balance;
mod caller;
mod client;
pub mod cluster;
mod exporter;
mod io;
mod message;
mod metadata;
mod meter;
mod method;
pub mod metrics;
#[cfg(feature = "otel")]
mod otel;
mod pull;
mod server;
mod status;
pub mod stream;
pub mod trace;
pub mod wire;

pub use caller::Caller;
pub use client::{
    CallOptions, Client, ClientInterceptor, ClientOptions, ClientStream, Interceptors, RequestSink,
    Response, ResponseStream,
};
#[cfg(feature = "prost")]
pub use message::Proto;
pub use message::{
    Archivable, BodyError, BodyWriter, Chunks, Encode, EncodeError, Message, Msg, ROOT_ALIGN, Rkyv,
    Serializer, encode,
};
pub use metadata::{
    DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_ENTRIES, Metadata, MetadataError, TRACEPARENT,
    TRACESTATE,
};
pub use method::{Hedge, Method, Shape, method_id};
pub use server::{
    Access, Context, Gauges, InterceptFuture, Interceptor, Outcome, Requests, RouteError, Router,
    Server, ServerOptions, ShutdownReport,
};
pub use status::{Code, Status};
pub use trace::TraceContext;

pub use bytes::Bytes;
pub use quicall_transport as transport;
pub use rkyv;
pub use zerocopy;
