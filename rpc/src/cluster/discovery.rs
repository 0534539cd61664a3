//! Where the servers of a cluster are: a static list, or a DNS name that is
//! resolved again and again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// Resolves `host:port` to socket addresses. The system resolver is
/// [`SystemResolver`]; tests give a fake one.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses `target` (`host:port`) stands for now.
    fn resolve<'a>(
        &'a self,
        target: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The operating system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        target: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// The servers of a cluster.
///
/// ```
/// use quicall_rpc::cluster::Discovery;
/// // Three replicas, each with the name its certificate carries:
/// let fixed = Discovery::fixed([
///     ("10.0.0.7:4433", "node-1"),
///     ("10.0.0.8:4433", "node-2"),
///     ("node-3.example.internal:4433", "node-3.example.internal"),
/// ]);
/// // Or every address behind one DNS name, followed as it changes:
/// let dns = Discovery::dns("quicall.default.svc.cluster.local:4433");
/// # let _ = (fixed, dns);
/// ```
#[derive(Clone)]
pub enum Discovery {
    /// A fixed list of (`host:port`, TLS server name), each resolved once at start.
    Static(Vec<(String, String)>),
    /// Every address `target` (`host:port`) resolves to, resolved again every
    /// [`ClusterOptions::resolve_interval`](super::ClusterOptions); servers
    /// are added and removed as the answer changes. Every server's
    /// certificate must carry `server_name`.
    Dns {
        /// `host:port` to resolve.
        target: String,
        /// The name every server's certificate carries.
        server_name: String,
        /// How to resolve.
        resolver: Arc<dyn Resolve>,
    },
}

impl Discovery {
    /// A fixed list of (`host:port`, TLS server name).
    pub fn fixed<A: Into<String>, N: Into<String>>(
        servers: impl IntoIterator<Item = (A, N)>,
    ) -> Self {
        Discovery::Static(
            servers
                .into_iter()
                .map(|(a, n)| (a.into(), n.into()))
                .collect(),
        )
    }

    /// The addresses of a DNS name, with the system resolver; the TLS server
    /// name is the host part of `target`.
    pub fn dns(target: impl Into<String>) -> Self {
        let target = target.into();
        let server_name = host_of(&target).to_owned();
        Discovery::Dns {
            target,
            server_name,
            resolver: Arc::new(SystemResolver),
        }
    }

    /// The addresses of a DNS name, with a resolver of your choice and an
    /// explicit TLS server name.
    pub fn dns_with(
        target: impl Into<String>,
        server_name: impl Into<String>,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
        Discovery::Dns {
            target: target.into(),
            server_name: server_name.into(),
            resolver,
        }
    }

    /// Resolves the servers now: (address, TLS server name), sorted and
    /// without duplicates.
    pub async fn resolve(&self) -> io::Result<Vec<(SocketAddr, String)>> {
        let mut out = Vec::new();
        match self {
            Discovery::Static(servers) => {
                for (target, name) in servers {
                    let addr = SystemResolver
                        .resolve(target)
                        .await?
                        .into_iter()
                        .next()
                        .ok_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, format!("{target}: no address"))
                        })?;
                    out.push((addr, name.clone()));
                }
            }
            Discovery::Dns {
                target,
                server_name,
                resolver,
            } => {
                for addr in resolver.resolve(target).await? {
                    out.push((addr, server_name.clone()));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub(crate) fn is_dynamic(&self) -> bool {
        matches!(self, Discovery::Dns { .. })
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discovery::Static(servers) => f.debug_tuple("Static").field(servers).finish(),
            Discovery::Dns {
                target,
                server_name,
                ..
            } => f
                .debug_struct("Dns")
                .field("target", target)
                .field("server_name", server_name)
                .finish_non_exhaustive(),
        }
    }
}

/// The host part of `host:port` (brackets removed from an IPv6 literal).
pub fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("svc.ns.svc.cluster.local:4433"),
            "svc.ns.svc.cluster.local"
        );
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:4433"), "::1");
    }
}
