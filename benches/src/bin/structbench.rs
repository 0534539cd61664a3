//! The structured workload of the load benchmark: a List call whose
//! response is 100 entries with string keys (about 4 KiB), as a
//! fixed-layout message, an rkyv archive and a protobuf message over
//! quicall, and as the same protobuf message over tonic gRPC (mutual TLS
//! everywhere). Every response is read completely (each key's length and
//! each size) and checked.
//!
//! ```sh
//! cargo run --release -p quicall-benches --bin structbench -- --secs 5 --rounds 3
//! ```
//!
//! Servers run on a runtime of their own and clients on another, as two
//! processes would; the cells of a round run one after another, and the
//! rounds interleave the systems, so that a shared machine's drift falls on
//! all alike. The table gives the median round of each cell.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use quicall::zerocopy::FromZeros;
use quicall::{Client, ClientOptions, Server, ServerOptions};
use quicall_benches::harness::grpc;
use quicall_benches::harness::systems::Pki;
use quicall_benches::structured::{self as s, ListRequest, PbListRequest};

#[derive(Parser)]
#[command(
    about = "The structured List workload: fixed, rkyv and protobuf over quicall, protobuf over tonic"
)]
struct Args {
    /// Seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Rounds (the table shows each cell's median round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Callers, each waiting for its answer before its next call.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Worker threads of the server runtime and of the client runtime each.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Fixed,
    Rkyv,
    Proto,
    Tonic,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fixed => "quicall fixed-layout",
            Kind::Rkyv => "quicall rkyv",
            Kind::Proto => "quicall protobuf",
            Kind::Tonic => "tonic gRPC protobuf",
        }
    }
}

enum Caller {
    Quicall(Client),
    Tonic(tonic::client::Grpc<tonic::transport::Channel>),
}

impl Caller {
    async fn list(&self, kind: Kind) -> anyhow::Result<u64> {
        Ok(match (self, kind) {
            (Caller::Quicall(c), Kind::Fixed) => {
                let prefix = s::FixedPrefix::new_zeroed();
                s::digest_fixed(&*c.call(&s::LIST_FIXED, &prefix).await?)
            }
            (Caller::Quicall(c), Kind::Rkyv) => {
                let request = ListRequest {
                    prefix: "tenant-7/user/".into(),
                };
                s::digest_rkyv(&*c.call(&s::LIST_RKYV, &request).await?)
            }
            (Caller::Quicall(c), Kind::Proto) => {
                let request = PbListRequest {
                    prefix: "tenant-7/user/".into(),
                };
                s::digest_proto(&*c.call(&s::LIST_PROTO, &request).await?)
            }
            (Caller::Tonic(grpc), Kind::Tonic) => s::call_tonic(grpc).await?,
            _ => anyhow::bail!("no such pair"),
        })
    }
}

struct Cell {
    calls_per_sec: f64,
    p50: u64,
    p99: u64,
    errors: u64,
}

async fn run_cell(caller: Arc<Caller>, kind: Kind, args: &Args) -> Cell {
    let expected = s::expected_digest();
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (caller, errors) = (caller.clone(), errors.clone());
        tasks.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while Instant::now() < end {
                let began = Instant::now();
                match caller.list(kind).await {
                    Ok(digest) if digest == expected => {
                        let _ = histogram.record(began.elapsed().as_micros().max(1) as u64);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        });
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    while let Some(Ok(h)) = tasks.join_next().await {
        let _ = histogram.add(h);
    }
    Cell {
        calls_per_sec: histogram.len() as f64 / start.elapsed().as_secs_f64(),
        p50: histogram.value_at_quantile(0.5),
        p99: histogram.value_at_quantile(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
    };
    let (servers, clients) = (runtime("server")?, runtime("client")?);
    let pki = Pki::new()?;
    let grpc_tls = pki.grpc_tls();
    let server: Server = servers.block_on(async {
        Server::bind(
            "127.0.0.1:0".parse()?,
            pki.server_tls(),
            s::router(),
            ServerOptions::default(),
        )
        .context("binding the quicall server")
    })?;
    let (tonic_addr, _tonic) = servers.block_on(s::serve_tonic(&grpc_tls))?;
    let kinds = [Kind::Fixed, Kind::Rkyv, Kind::Proto, Kind::Tonic];
    let mut cells: Vec<Vec<Cell>> = kinds.iter().map(|_| Vec::new()).collect();
    clients.block_on(async {
        let quicall = Arc::new(Caller::Quicall(
            Client::connect(
                server.local_addr(),
                "localhost",
                pki.client_tls(),
                ClientOptions::default(),
            )
            .await?,
        ));
        let tonic = Arc::new(Caller::Tonic(
            grpc::connect(tonic_addr, Some(&grpc_tls)).await?,
        ));
        for round in 0..args.rounds {
            for (i, &kind) in kinds.iter().enumerate() {
                let caller = if kind == Kind::Tonic {
                    &tonic
                } else {
                    &quicall
                };
                let cell = run_cell(caller.clone(), kind, &args).await;
                eprintln!(
                    "round {}: {:<22} {:>9.0} calls/s  p50 {:>6} us  p99 {:>6} us  errors {}",
                    round + 1,
                    kind.name(),
                    cell.calls_per_sec,
                    cell.p50,
                    cell.p99,
                    cell.errors
                );
                cells[i].push(cell);
            }
        }
        anyhow::Ok(())
    })?;
    println!(
        "List of {} entries, {} callers, {} s x {} rounds, median round:",
        s::ENTRIES,
        args.concurrency,
        args.secs,
        args.rounds
    );
    println!("| system | calls/s | p50 (µs) | p99 (µs) | errors |");
    println!("|---|---:|---:|---:|---:|");
    for (kind, rounds) in kinds.iter().zip(&mut cells) {
        rounds.sort_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec));
        let median = &rounds[rounds.len() / 2];
        println!(
            "| {} | {:.0} | {} | {} | {} |",
            kind.name(),
            median.calls_per_sec,
            median.p50,
            median.p99,
            rounds.iter().map(|c| c.errors).sum::<u64>()
        );
    }
    Ok(())
}
