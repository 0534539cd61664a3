//! Makes a given number of echo calls through one system, one at a time, on
//! one thread: a fixed amount of work for instruction counters, which,
//! unlike timings, do not move with a shared machine's noise.
//!
//! ```sh
//! cargo build --release -p quicall-benches --bin echo_calls
//! valgrind --tool=callgrind target/release/echo_calls quicall 12000
//! valgrind --tool=callgrind target/release/echo_calls quicall 2000
//! ```
//!
//! The difference of the two totals over 10,000 is the instructions per call
//! (client and server, user space), set-up and handshake cancelled out.

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use quicall_benches::harness::systems::Pki;
use quicall_benches::harness::{Echo, System};

#[derive(Parser)]
#[command(about = "N sequential echo calls through one system, on one thread")]
struct Args {
    /// quicall, raw-quinn, grpc-tls, grpc-plain or tarpc.
    system: System,
    /// Number of calls.
    calls: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Metadata entries sent with each call (quicall only): a token, a
    /// tenant and a W3C traceparent, then more of the same size.
    #[arg(long, default_value_t = 0)]
    metadata: usize,
    /// A `tracing` subscriber that keeps quicall's spans (at debug level)
    /// and formats nothing: the cost of tracing on, without a subscriber's
    /// own work.
    #[arg(long)]
    tracing: bool,
    /// OpenTelemetry on: quicall's spans through `tracing-opentelemetry`
    /// into the SDK's batch processor, and its metrics into the SDK's
    /// aggregation, exported to nowhere (the SDK's cost, not an exporter's).
    #[arg(long, conflicts_with = "tracing")]
    otel: bool,
    /// Through a cluster client of the one quicall server (its selection,
    /// budget, throttle and per-server stats on the path).
    #[arg(long)]
    cluster: bool,
    /// With `--cluster`: the cluster client's throttle off.
    #[arg(long, requires = "cluster")]
    no_throttle: bool,
}

/// An exporter that drops what it is given.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        _batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

impl opentelemetry_sdk::metrics::exporter::PushMetricExporter for Discard {
    async fn export(
        &self,
        _metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(
        &self,
        _timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> opentelemetry_sdk::metrics::Temporality {
        opentelemetry_sdk::metrics::Temporality::Cumulative
    }
}

/// `n` entries: an authorization token, a tenant, a traceparent, then
/// `extra-N` entries of 16 bytes.
fn metadata(n: usize) -> anyhow::Result<quicall::Metadata> {
    let mut metadata = quicall::Metadata::new();
    let first = [
        ("authorization", "Bearer 0123456789abcdef0123456789abcdef"),
        ("tenant", "acme-corporation"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    for i in 0..n {
        match first.get(i) {
            Some((key, value)) => metadata.insert(key, value)?,
            None => metadata.insert(&format!("extra-{i}"), "0123456789abcdef")?,
        };
    }
    Ok(metadata)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tracing {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("quicall=debug"));
        tracing::subscriber::set_global_default(subscriber)?;
    }
    let _otel = if args.otel {
        use tracing_subscriber::layer::SubscriberExt;
        let otel = quicall::otel::Otel::with_exporters(Discard, Discard, "echo_calls", None);
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("quicall=debug"))
            .with(otel.layer());
        tracing::subscriber::set_global_default(subscriber)?;
        Some(otel)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pki = Pki::new()?;
        let echo = Echo::start(args.system, &pki, &quicall::Limits::default()).await?;
        let payload = Bytes::from(vec![7u8; args.payload]);
        if args.cluster {
            let Echo::Quicall {
                _server: Some(server),
                ..
            } = &echo
            else {
                anyhow::bail!("--cluster is for quicall");
            };
            let defaults = quicall::ClusterOptions::default();
            let options = quicall::ClusterOptions {
                throttle: defaults.throttle.filter(|_| !args.no_throttle),
                ..defaults
            };
            let servers = quicall::Discovery::fixed([(
                server.local_addr().to_string(),
                "localhost".to_string(),
            )]);
            let cluster = quicall::Cluster::new(servers, pki.client_tls(), options).await?;
            for _ in 0..args.calls {
                let reply = cluster
                    .call(&quicall::demo::ECHO, payload.clone())
                    .await
                    .context("echo call")?;
                echoed(reply.len(), args.payload)?;
            }
            return Ok(());
        }
        if args.metadata > 0 {
            let Echo::Quicall { client, .. } = &echo else {
                anyhow::bail!("--metadata is for quicall");
            };
            let options = quicall::CallOptions::default().with_metadata(metadata(args.metadata)?);
            for _ in 0..args.calls {
                let reply = client
                    .call_with(&quicall::demo::ECHO, payload.clone(), options.clone())
                    .await
                    .context("echo call")?;
                echoed(reply.len(), args.payload)?;
            }
            return Ok(());
        }
        for _ in 0..args.calls {
            let len = echo.call(&payload).await.context("echo call")?;
            echoed(len, args.payload)?;
        }
        Ok(())
    })
}

/// An echo returns what it was sent.
fn echoed(len: usize, sent: usize) -> anyhow::Result<()> {
    anyhow::ensure!(len == sent, "echo returned {len} of {sent} bytes");
    Ok(())
}
