//! Certificates for quicall clusters: a certificate authority and the node
//! certificates it signs, with PEM in and out.
//!
//! This crate knows nothing of QUIC. It makes what mutual TLS needs:
//!
//! - a [`CertificateAuthority`] (self-signed, ECDSA P-256) that can be written to
//!   and read back from PEM files, so one CA serves a cluster across hosts;
//! - node certificates ([`NodeCert`]) for servers and clients, each with the
//!   subject alternative names asked for (DNS names and IP addresses), a chosen
//!   validity, and the extended key usage of its [`Role`];
//! - readers for PEM files ([`read_certs`], [`read_key`]) that give the
//!   `rustls-pki-types` values a TLS stack takes.
//!
//! ```
//! use quicall_certs::{CertificateAuthority, NodeSpec};
//! use std::time::Duration;
//!
//! let ca = CertificateAuthority::new("demo CA", Duration::from_secs(86_400))?;
//! let server = ca.issue(&NodeSpec::server("node-1").san("localhost").san("127.0.0.1"))?;
//! let client = ca.issue(&NodeSpec::client("alice"))?;
//! assert!(server.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! assert_eq!(client.name(), "alice");
//! # Ok::<(), quicall_certs::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authority;
mod error;
mod node;
mod pem_files;

pub use authority::{CertificateAuthority, RevocationList};
pub use error::Error;
pub use node::{NodeCert, NodeSpec, Role};
pub use pem_files::{read_certs, read_crls, read_key, read_serial, write_private, write_public};
pub use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// Default validity of certificates made by this crate: 365 days.
pub const DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
