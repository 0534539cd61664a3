//! The `quicall` command: certificates, a server, a client, and the demo cluster.

mod cmd;

use clap::{Parser, Subcommand};

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
