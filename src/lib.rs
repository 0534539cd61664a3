//! # quicall
//!
//! Fast, secure remote procedure calls over QUIC.
//!
//! Every call is one bidirectional QUIC stream on a TLS 1.3 connection
//! (mutual TLS when the server asks for it). Messages are fixed-layout
//! structs read in place from the received bytes (zerocopy), never parsed.
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
//! - A schema language or code generation: methods are Rust constants, and
//!   the wire format is specified byte by byte in `docs/wire.md` so that
//!   other languages can speak it.
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
    Access, BodyError, Bytes, CallOptions, Caller, Client, ClientOptions, Code, Context, Encode,
    EncodeError, Gauges, Message, Method, Msg, Rkyv, RouteError, Router, Server, ServerOptions,
    ShutdownReport, Status, method_id, wire,
};
pub use quicall_rpc::{Hedge, metrics};
pub use quicall_transport::{ClientAuth, ClientTls, Limits, PeerIdentity, PoolOptions, ServerTls};
