//! The `quicall` command: certificates, a server, a client, and the demo cluster.

mod cmd;

use clap::{Parser, Subcommand};
use tracing_subscriber::prelude::*;

/// Fast, secure remote procedure calls over QUIC.
#[derive(Parser)]
#[command(name = "quicall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mutual-TLS demo cluster (3 servers on loopback) and exit.
    Demo(cmd::demo::Args),
    /// Write a CA and node certificates for a cluster.
    Certs(cmd::certs::Args),
    /// Serve the demo methods (add, echo, whoami) over QUIC.
    Serve(cmd::serve::Args),
    /// Call a method on a server and print the answer.
    Call(cmd::call::Args),
    /// Good clients and attackers against a local cluster, for a bounded time.
    Soak(cmd::soak::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    let registry = tracing_subscriber::registry().with(log);
    #[cfg(feature = "otel")]
    let (registry, otel) = {
        let endpoint = match &cli.command {
            Command::Serve(args) => args.otlp.as_deref(),
            _ => None,
        };
        match endpoint.map(otlp).transpose() {
            Ok(otel) => {
                // Every call's span, whatever RUST_LOG says for the log.
                let layer = otel.as_ref().map(|otel| {
                    otel.layer()
                        .with_filter(tracing_subscriber::EnvFilter::new("quicall=debug,info"))
                });
                (registry.with(layer), otel)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
    };
    registry.init();
    let result = match cli.command {
        Command::Certs(args) => cmd::certs::run(args),
        command => runtime().and_then(|rt| {
            rt.block_on(async {
                match command {
                    Command::Demo(args) => cmd::demo::run(args).await,
                    Command::Serve(args) => cmd::serve::run(args).await,
                    Command::Call(args) => cmd::call::run(args).await,
                    Command::Soak(args) => cmd::soak::run(args).await,
                    Command::Certs(_) => unreachable!("handled above"),
                }
            })
        }),
    };
    // Exports what is still buffered; a collector that is not there
    // costs the export, not the server's exit status.
    #[cfg(feature = "otel")]
    if let Some(Err(e)) = otel.map(quicall::otel::Otel::shutdown) {
        eprintln!("warning: the last spans and metrics were not exported: {e}");
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// OpenTelemetry export over OTLP to `endpoint`, as service
/// `OTEL_SERVICE_NAME` (`quicall` when unset).
#[cfg(feature = "otel")]
fn otlp(endpoint: &str) -> anyhow::Result<quicall::otel::Otel> {
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "quicall".to_owned());
    Ok(quicall::otel::Otel::otlp(endpoint, &service)?)
}
