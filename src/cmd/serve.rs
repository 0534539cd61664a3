//! `quicall serve`: the demo methods on a real address, until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use quicall::{ClientAuth, Server, ServerOptions, ServerTls};

/// Arguments of `quicall serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (host:port).
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: String,
    /// The server's certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The server's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA certificate(s) that client certificates must chain to (PEM).
    /// Client certificates are required unless --no-client-auth is given.
    #[arg(long, required_unless_present = "no_client_auth")]
    ca: Option<PathBuf>,
    /// Certificate revocation list(s) of the client CA (PEM), as written by
    /// `quicall certs --revoke`: revoked client certificates are refused.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Do not ask clients for certificates (still TLS 1.3, still encrypted).
    #[arg(long)]
    no_client_auth: bool,
    /// Seconds that calls in flight get to finish on Ctrl-C.
    #[arg(long, default_value_t = 5)]
    grace: u64,
    /// Milliseconds every call spends in the server before it is answered
    /// (a stand-in for real work, for demos and load tests).
    #[arg(long, default_value_t = 0.0)]
    service_time_ms: f64,
    /// Serve the server's metrics (Prometheus text format) over HTTP on
    /// this address (host:port), for Prometheus to scrape.
    #[arg(long)]
    metrics: Option<String>,
    /// Export traces (the `quicall.serve` span of every call, continuing
    /// the caller's trace) and metrics over OTLP/gRPC to this collector
    /// (`http://127.0.0.1:4317`), as service `quicall` unless
    /// OTEL_SERVICE_NAME says otherwise; metrics every 60 s unless
    /// OTEL_METRIC_EXPORT_INTERVAL (ms) says otherwise.
    #[cfg(feature = "otel")]
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Listening for SIGTERM from the start: one that comes before the
    // server says it is up still shuts it down gracefully.
    let stop = stop_signal()?;
    let (chain, key) = super::identity(&args.cert, &args.key)?;
    let client_auth = match (&args.ca, args.no_client_auth) {
        (_, true) => ClientAuth::None,
        (Some(ca), false) => ClientAuth::Required(quicall::certs::read_certs(ca)?),
        (None, false) => unreachable!("clap requires --ca"),
    };
    let addr = super::resolve(&args.listen).await?;
    let mut tls = ServerTls::new(chain, key, client_auth);
    if let Some(crl) = &args.crl {
        tls = tls.with_crls(quicall::certs::read_crls(crl)?);
    }
    let knobs = std::sync::Arc::new(quicall::demo::Knobs::default());
    knobs.set_service_time(Duration::from_secs_f64(args.service_time_ms.max(0.0) / 1e3));
    let router = quicall::demo::router_with(knobs);
    let server = Server::bind(addr, tls, router, ServerOptions::default())?;
    // The first line names the QUIC address (scripts read it); the metrics
    // address, if any, comes on the second.
    let metrics = match &args.metrics {
        Some(listen) => Some(server.serve_metrics(super::resolve(listen).await?).await?),
        None => None,
    };
    println!(
        "serving add, sum, echo and whoami on {} ({}); Ctrl-C or SIGTERM to stop",
        server.local_addr(),
        if args.no_client_auth {
            "TLS"
        } else {
            "mutual TLS"
        }
    );
    if let Some(metrics) = metrics {
        println!("metrics on http://{metrics}/metrics");
    }
    stop.await?;
    println!(
        "shutting down: letting calls in flight finish (up to {} s)",
        args.grace
    );
    let report = server.shutdown(Duration::from_secs(args.grace)).await;
    println!("stopped; {} calls cut off", report.unfinished_calls);
    Ok(())
}

/// Ctrl-C, or SIGTERM (what Kubernetes, systemd and `docker stop` send):
/// either begins a graceful shutdown. Both are listened for from the call,
/// not from the first poll.
fn stop_signal() -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => Ok(()),
                _ = term.recv() => Ok(()),
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async { tokio::signal::ctrl_c().await })
}
