//! `streambench`: streaming calls on loopback, quicall against tonic gRPC
//! with mutual TLS in the same run (the streams `loadbench` ends with, on
//! their own; see `quicall_benches::harness::streams`).
//!
//! ```text
//! cargo run --release -p quicall-benches --bin streambench
//! ```

use clap::Parser;
use quicall_benches::harness::streams::{self, StreamArgs};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    streams: StreamArgs,
}

fn main() -> anyhow::Result<()> {
    streams::run(Args::parse().streams)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        super::Args::command().debug_assert();
    }
}
