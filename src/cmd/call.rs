//! `quicall call`: calls to one server, a list of servers, or every server
//! behind a DNS name, with the answer printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use quicall::demo::{ADD, AddRequest, ECHO, WHOAMI};
use quicall::{CallOptions, ClientTls, Cluster, ClusterOptions, Discovery, Policy};
use zerocopy::little_endian::I64;

/// Arguments of `quicall call`.
#[derive(clap::Args)]
pub struct Args {
    /// A server (host:port). Repeat for a static list of replicas.
    #[arg(
        long = "server",
        default_value = "127.0.0.1:4433",
        conflicts_with = "dns"
    )]
    servers: Vec<String>,
    /// Every server behind this DNS name (host:port), re-resolved
    /// periodically: for example a Kubernetes headless service.
    #[arg(long)]
    dns: Option<String>,
    /// Name the servers' certificates must carry (default: each host name).
    #[arg(long)]
    server_name: Option<String>,
    /// CA certificate(s) the servers' certificates must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// This client's certificate chain (PEM), for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Deadline of each call in milliseconds.
    #[arg(long, default_value_t = 5000)]
    deadline_ms: u64,
    /// Number of calls; above 1, prints how they spread over the servers.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Selection policy: p2c-peak-ewma, round-robin, random, least-outstanding.
    #[arg(long, default_value = "p2c-peak-ewma")]
    policy: Policy,
    #[command(subcommand)]
    method: MethodArgs,
}

#[derive(clap::Subcommand)]
enum MethodArgs {
    /// calc.Calc/Add: print A + B.
    Add {
        /// First addend.
        #[arg(allow_negative_numbers = true)]
        a: i64,
        /// Second addend.
        #[arg(allow_negative_numbers = true)]
        b: i64,
    },
    /// demo.Echo/Echo: print TEXT as the server returns it.
    Echo {
        /// Text to send.
        text: String,
    },
    /// demo.Echo/WhoAmI: print this client's name as the server verified it.
    Whoami,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let discovery = match &args.dns {
        Some(target) => match &args.server_name {
            Some(name) => Discovery::dns_with(
                target,
                name,
                std::sync::Arc::new(quicall::rpc::cluster::SystemResolver),
            ),
            None => Discovery::dns(target),
        },
        None => Discovery::fixed(args.servers.iter().map(|s| {
            let name = args
                .server_name
                .clone()
                .unwrap_or_else(|| quicall::rpc::cluster::host_of(s).to_owned());
            (s.clone(), name)
        })),
    };
    let mut tls = ClientTls::new(quicall::certs::read_certs(&args.ca)?);
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let (chain, key) = super::identity(cert, key)?;
        tls = tls.with_identity(chain, key);
    }
    let options = ClusterOptions {
        policy: args.policy,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::new(discovery, tls, options)
        .await
        .context("finding the servers")?;
    let options = CallOptions::deadline(Duration::from_millis(args.deadline_ms));
    let mut last = None;
    for _ in 0..args.count.max(1) {
        last = Some(call_once(&cluster, &args.method, options).await);
    }
    if args.count > 1 {
        print_spread(&cluster);
    }
    cluster.close();
    println!("{}", last.expect("at least one call")?);
    Ok(())
}

async fn call_once(
    cluster: &Cluster,
    method: &MethodArgs,
    options: CallOptions,
) -> Result<String, quicall::Status> {
    match method {
        MethodArgs::Add { a, b } => {
            let request = AddRequest {
                a: I64::new(*a),
                b: I64::new(*b),
            };
            cluster
                .call_with(&ADD, &request, options)
                .await
                .map(|r| r.sum.get().to_string())
        }
        MethodArgs::Echo { text } => cluster
            .call_with(&ECHO, text.as_str(), options)
            .await
            .map(|r| String::from_utf8_lossy(&r).into_owned()),
        MethodArgs::Whoami => cluster
            .call_with(&WHOAMI, "", options)
            .await
            .map(|r| String::from_utf8_lossy(&r).into_owned()),
    }
}

fn print_spread(cluster: &Cluster) {
    let snapshot = cluster.snapshot();
    let total = snapshot.total;
    eprintln!(
        "{} calls: p50 {:?}  p99 {:?}  errors {}  retries {}  hedges {}",
        total.calls,
        total.p50().unwrap_or_default(),
        total.p99().unwrap_or_default(),
        total.errors(),
        total.retries,
        total.hedges
    );
    for server in snapshot.servers {
        eprintln!(
            "  {} ({}): {} attempts, p50 {:?}, errors {}",
            server.addr,
            server.name,
            server.stats.calls,
            server.stats.p50().unwrap_or_default(),
            server.stats.errors()
        );
    }
}
