//! A DNS client of a network lab's dnsmasq, for a cluster's discovery
//! (hickory, with no cache: the system resolver reads the machine's
//! resolv.conf, not the lab's). Shared by tests/netlab.rs and the `hosts`
//! example.

use std::net::{Ipv4Addr, SocketAddr};

/// Resolves `name:port` targets through the lab's DNS server.
pub struct LabResolver(hickory_resolver::TokioResolver);

impl LabResolver {
    /// A resolver asking only the DNS server at `server` (port 53).
    pub fn new(server: Ipv4Addr) -> Self {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        let servers = NameServerConfigGroup::from_ips_clear(&[server.into()], 53, true);
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            config,
            hickory_resolver::name_server::TokioConnectionProvider::default(),
        );
        builder.options_mut().cache_size = 0;
        LabResolver(builder.build())
    }

    /// Whether the server answers for `name` (with records or without).
    pub async fn answers(&self, name: &str) -> bool {
        match self.0.ipv4_lookup(name).await {
            Ok(_) => true,
            Err(e) => e.is_no_records_found(),
        }
    }
}

impl quicall::rpc::cluster::Resolve for LabResolver {
    fn resolve<'a>(
        &'a self,
        target: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
    > {
        Box::pin(async move {
            let Some((name, port)) = target.rsplit_once(':') else {
                return Err(std::io::Error::other(format!("{target}: no port")));
            };
            let port: u16 = port.parse().map_err(std::io::Error::other)?;
            match self.0.ipv4_lookup(name).await {
                Ok(answer) => Ok(answer
                    .iter()
                    .map(|a| SocketAddr::new(a.0.into(), port))
                    .collect()),
                Err(e) if e.is_no_records_found() => Ok(Vec::new()),
                Err(e) => Err(std::io::Error::other(e)),
            }
        })
    }
}
