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

/// The host part of `host:port` (brackets removed from an IPv6 literal).
pub fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
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

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("node-1.example:4433"), "node-1.example");
        assert_eq!(host_of("127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(host_of("[::1]:4433"), "::1");
    }
}
