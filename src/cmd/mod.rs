//! One module per subcommand, and what they share.

pub mod call;
pub mod certs;
pub mod demo;
pub mod serve;
pub mod soak;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

/// Resolves `host:port` (an IP address or a DNS name) to its first address.
pub async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("cannot resolve {target}"))?
        .next()
        .with_context(|| format!("{target} resolves to no address"))
}

/// Reads a certificate chain and a key.
pub fn identity(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(
    Vec<quicall::transport::CertificateDer<'static>>,
    quicall::transport::PrivateKeyDer<'static>,
)> {
    Ok((
        quicall::certs::read_certs(cert)?,
        quicall::certs::read_key(key)?,
    ))
}
