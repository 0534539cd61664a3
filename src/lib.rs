//! # quicall
//!
//! Fast, secure remote procedure calls over QUIC.
//!
//! Every call is one bidirectional QUIC stream on a TLS 1.3 connection
//! (mutual TLS when the server asks for it). Messages are read in place
//! from the received bytes: fixed-layout structs (zerocopy), never parsed,
//! or rkyv archives, validated and never deserialized; protobuf messages
//! (prost, feature `prost`) for other languages.
//!
//! ## Goals
//! - Low and predictable latency: no head-of-line blocking between calls,
//!   no copy or parse of payloads, bounded work per call.
//! - Secure by default: there is no plaintext mode; servers can require client
//!   certificates, and handlers see the verified peer identity.
//! - Bounded everything: message sizes, calls in flight, streams,
//!   connections, handshake and idle times, with safe defaults.
//!
//! ## Non-goals
//! - A schema language of its own: services are Rust traits (or constants),
//!   and the wire format is specified byte by byte in `docs/wire.md` so that
//!   other languages can speak it (with protobuf bodies).
//! - Plaintext or TCP transports.
//!
//! ## The parts
//! - [`certs`]: a CA and node certificates (rcgen), PEM in and out.
//! - [`transport`]: QUIC endpoints (quinn) with rustls, mutual TLS, peer
//!   identity, limits.
//! - [`rpc`]: wire format, typed methods, statuses, server, client.
//! - [`demo`]: the methods of the demo cluster (`add`, `echo`, `whoami`).
//!
//! ## Example
//! ```no_run
//! use quicall::demo::{ADD, AddRequest};
//! use quicall::{Client, ClientOptions, ClientTls, Server, ServerOptions, ServerTls, ClientAuth};
//! use quicall::certs::{CertificateAuthority, NodeSpec};
//! use zerocopy::little_endian::I64;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = CertificateAuthority::new("my CA", quicall::certs::DEFAULT_VALIDITY)?;
//! let server_cert = ca.issue(&NodeSpec::server("node-1").san("localhost"))?;
//! let client_cert = ca.issue(&NodeSpec::client("alice"))?;
//!
//! let tls = ServerTls::new(server_cert.chain(), server_cert.key_der(),
//!                          ClientAuth::Required(vec![ca.cert_der().clone()]));
//! let server = Server::bind("127.0.0.1:0".parse()?, tls, quicall::demo::router(), ServerOptions::default())?;
//!
//! let tls = ClientTls::new(vec![ca.cert_der().clone()])
//!     .with_identity(client_cert.chain(), client_cert.key_der());
//! let client = Client::connect(server.local_addr(), "localhost", tls, ClientOptions::default()).await?;
//! let reply = client.call(&ADD, &AddRequest { a: I64::new(2), b: I64::new(3) }).await?;
//! assert_eq!(reply.sum.get(), 5);
//! # Ok(()) }
//! ```
//!
//! ## Services
//!
//! `#[quicall::service]` on a trait declares a service: it keeps the trait
//! as the server's, and generates, in a module named after it (`calc` for
//! `Calc`), the method constants (`calc::ADD`, named `calc.Calc/Add`), a
//! request type per method (its arguments, archived by rkyv), a typed
//! client `calc::Client` over anything that makes calls (a [`Client`] of
//! one server or a [`Cluster`]: both are [`Caller`]s), and `calc::router`,
//! which serves an implementation of the trait.
//!
//! ```
//! use quicall::certs::{CertificateAuthority, NodeSpec, DEFAULT_VALIDITY};
//! use quicall::{ClientAuth, ClientTls, Context, Server, ServerTls, Status};
//!
//! #[quicall::service(package = "calc")]
//! pub trait Calc {
//!     /// Adds two numbers.
//!     #[quicall(idempotent)]
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calculator;
//!
//! impl Calc for Calculator {
//!     async fn add(&self, _ctx: Context, a: i64, b: i64) -> Result<i64, Status> {
//!         Ok(a + b)
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #   let ca = CertificateAuthority::new("CA", DEFAULT_VALIDITY)?;
//! #   let node = ca.issue(&NodeSpec::server("node").san("localhost"))?;
//! #   let alice = ca.issue(&NodeSpec::client("alice"))?;
//! #   let server_tls = ServerTls::new(node.chain(), node.key_der(),
//! #       ClientAuth::Required(vec![ca.cert_der().clone()]));
//! #   let client_tls = ClientTls::new(vec![ca.cert_der().clone()])
//! #       .with_identity(alice.chain(), alice.key_der());
//!     let router = calc::router(Calculator)?;
//!     let server = Server::bind("127.0.0.1:0".parse()?, server_tls, router, Default::default())?;
//!     let client = quicall::Client::connect(server.local_addr(), "localhost", client_tls,
//!                                           Default::default()).await?;
//!
//!     let calc = calc::Client::new(client);
//!     let sum = calc.add(2, 3).await?;
//!     println!("{sum}"); // 5
//!     assert_eq!(sum, 5);
//!     assert_eq!(calc::ADD.name(), "calc.Calc/Add");
//!     Ok(())
//! }
//! ```
//!
//! The rules:
//! - methods are `async fn(&self, args...) -> Response`, declared with
//!   owned types that derive rkyv's `Archive` and `Serialize` (numbers,
//!   `bool`, `char`, `String`, `Vec<T>`, `Option<T>`, tuples, arrays, your
//!   own structs with `#[rkyv(crate = quicall::rkyv)]`);
//! - the server's method gets a [`Context`] first; numbers, `bool` and
//!   `char` arrive as values and everything else as its archived view,
//!   read in place (`&Archived<String>` reads as a `&str`), and it returns
//!   `Result<Response, Status>`;
//! - the client's method takes the arguments by value; it returns numbers,
//!   `bool`, `char` and `()` as values and anything else as a
//!   [`Msg<Rkyv<Response>>`](Msg), the archived response read in place;
//! - `#[quicall(server_stream)]` makes a method answer with a stream: the
//!   server's method returns `Result<stream::BoxStream<Response>, Status>`
//!   ([`stream::boxed`] of any stream of `Result<Response, Status>`), the
//!   client's returns a [`ResponseStream`];
//!   `#[quicall(client_stream)]` and `#[quicall(bidi_stream)]` make the
//!   requests a stream: the arguments become the fields of each request
//!   message (`MethodRequest`), the server's method gets
//!   [`Requests<Rkyv<MethodRequest>>`](Requests) in their place, and the
//!   client's method takes no argument and returns a [`ClientStream`] (send,
//!   then finish) or a [`RequestSink`] and a [`ResponseStream`];
//! - `#[quicall(idempotent)]`, `#[quicall(hedge = Hedge::Percentile(0.95))]`,
//!   `#[quicall(exact)]` and `#[quicall(name = "Sum")]` on a method; the
//!   attribute takes `package = "..."`, `name = "..."` (the service's name,
//!   the trait's by default) and `crate = "..."` (where quicall is);
//! - a method grows by appending arguments of type `Option<T>` (or numbers),
//!   its response by appending such fields ([`Rkyv`] says why): old and new
//!   clients and servers then call each other;
//! - declare a service at module level (its generated module sees the
//!   types of the enclosing module, not of a function body).
//!
//! The constant-based API below stays for fixed-layout messages and for
//! those who prefer to write methods by hand.
//!
//! ## Depending on it
//!
//! One dependency line gives the library without the command-line tool's
//! dependencies (clap, tracing-subscriber ...):
//!
//! ```toml
//! [dependencies]
//! quicall = { version = "0.1", default-features = false }
//! tokio = { version = "1", features = ["rt-multi-thread", "macros"] }
//! ```
//!
//! `bytes` and `zerocopy` are re-exported: message types derive zerocopy's
//! traits through `quicall::zerocopy`, with no dependency of their own:
//!
//! ```
//! use quicall::zerocopy::little_endian::I64;
//! use quicall::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
//! use quicall::{Method, Msg};
//!
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
//! #[zerocopy(crate = "quicall::zerocopy")]
//! #[repr(C)]
//! pub struct Pair { pub a: I64, pub b: I64 }
//!
//! pub const SWAP: Method<Pair, Pair> = Method::new("demo.Pair/Swap");
//! let pair = Msg::<Pair>::new(quicall::bytes::Bytes::from(vec![1u8; 16])).unwrap();
//! assert_eq!(pair.a.get(), 0x0101_0101_0101_0101);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod demo;
#[cfg(feature = "otel")]
pub mod otel;

/// Declares a service from a trait: see [the crate docs](crate#services).
pub use quicall_macros::service;

pub use bytes;
pub use rkyv;
pub use zerocopy;

#[cfg(feature = "prost")]
pub use prost;
#[cfg(feature = "prost")]
pub use quicall_rpc::Proto;

pub use quicall_certs as certs;
pub use quicall_rpc as rpc;
pub use quicall_transport as transport;

pub use quicall_rpc::balance::Policy;
pub use quicall_rpc::cluster::{Cluster, ClusterOptions, Discovery};
pub use quicall_rpc::{
    Access, BodyError, Bytes, CallOptions, Caller, Chunks, Client, ClientOptions, Code, Context,
    Encode, EncodeError, Gauges, Message, Method, Msg, Rkyv, RouteError, Router, Server,
    ServerOptions, ShutdownReport, Status, method_id, wire,
};
pub use quicall_rpc::{
    ClientInterceptor, Interceptor, Interceptors, Metadata, MetadataError, Outcome, Response,
    TraceContext,
};
pub use quicall_rpc::{ClientStream, RequestSink, Requests, ResponseStream, Shape, stream};
pub use quicall_rpc::{Hedge, metrics};
pub use quicall_transport::{ClientAuth, ClientTls, Limits, PeerIdentity, PoolOptions, ServerTls};
