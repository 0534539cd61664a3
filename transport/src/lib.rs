//! QUIC and TLS 1.3 for quicall, on quinn and rustls.
//!
//! This crate knows nothing of methods or messages. It gives the RPC layer:
//!
//! - [`ServerEndpoint`] and [`ClientEndpoint`]: quinn endpoints with TLS 1.3 only
//!   and the ALPN protocol [`ALPN`] (`quicall/1`). There is no plaintext mode.
//! - [`ServerTls`] / [`ClientTls`]: certificates and keys, and [`ClientAuth`],
//!   which decides whether the server requires client certificates from a CA
//!   (mutual TLS).
//! - [`PeerIdentity`]: the verified peer certificate's names and SHA-256
//!   fingerprint, available on every [`Connection`].
//! - [`Limits`]: streams per connection, connections per server, handshake and
//!   idle timeouts, keep-alive and flow-control windows, with safe defaults.
//! - [`Failure`]: what a connection error means to a caller (authentication,
//!   timeout, unreachable, closed ...).
//!
//! ```no_run
//! use quicall_transport::{ClientAuth, ClientEndpoint, ClientTls, Limits, ServerEndpoint, ServerTls};
//! # async fn run(chain: Vec<quicall_transport::CertificateDer<'static>>,
//! #              key: quicall_transport::PrivateKeyDer<'static>,
//! #              ca: Vec<quicall_transport::CertificateDer<'static>>) -> Result<(), Box<dyn std::error::Error>> {
//! let tls = ServerTls::new(chain.clone(), key.clone_key(), ClientAuth::Required(ca.clone()));
//! let server = ServerEndpoint::bind("127.0.0.1:0".parse()?, tls, Limits::default())?;
//! let client = ClientEndpoint::new(ClientTls::new(ca).with_identity(chain, key), Limits::default())?;
//! let conn = client.connect(server.local_addr()?, "localhost").await?;
//! println!("server is {:?}", conn.peer().map(|p| p.name()));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bbr;
mod chain;
mod client;
mod connection;
mod error;
mod handshakes;
mod identity;
mod limits;
mod liveness;
mod pool;
#[cfg(test)]
mod probe_sim;
mod server;
mod socket;
mod throttle;
mod timer;
mod tls;

pub use chain::{MAX_CHAIN_BYTES, MAX_INTERMEDIATES};
pub use client::ClientEndpoint;
pub use connection::Connection;
pub use error::{Failure, TransportError, describe};
pub use identity::PeerIdentity;
pub use limits::{Congestion, GSO_MTU_LIMIT, Limits};
pub use liveness::silence_threshold;
pub use pool::{CallGuard, Pool, PoolOptions, Slot, SlotStatus};
pub use server::{Incoming, ServerEndpoint};
pub use tls::{ALPN, ClientAuth, ClientTls, ServerTls};

/// The quinn crate this transport is built on, for stream types and errors.
pub use quinn;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
