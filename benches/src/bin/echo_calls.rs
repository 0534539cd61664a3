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
    /// quicall, raw-quinn, grpc-tls or grpc-plain.
    system: System,
    /// Number of calls.
    calls: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pki = Pki::new()?;
        let echo = Echo::start(args.system, &pki, &quicall::Limits::default()).await?;
        let payload = Bytes::from(vec![7u8; args.payload]);
        for _ in 0..args.calls {
            let len = echo.call(&payload).await.context("echo call")?;
            anyhow::ensure!(len == args.payload, "echo returned {len} bytes");
        }
        Ok(())
    })
}
