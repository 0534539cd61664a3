//! `quicall soak`: good clients and attackers against a local mutual-TLS
//! cluster for a bounded time; prints what happened and what the servers
//! hold at the end.

mod attacks;
mod deaf;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use quicall::certs::{read_certs, read_key};
use quicall::demo::{ADD, ECHO};
use quicall::{
    CallOptions, ClientAuth, ClientTls, Cluster, ClusterOptions, Discovery, Limits, Server,
    ServerOptions, ServerTls,
};

use attacks::{Attacker, KINDS};

/// Arguments of `quicall soak`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds to run (at most 3600).
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Concurrent good callers (through one cluster client).
    #[arg(long, default_value_t = 8)]
    good: usize,
    /// Concurrent attackers.
    #[arg(long, default_value_t = 4)]
    attackers: usize,
}

const SERVERS: usize = 3;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let secs = args.secs.clamp(1, 3600);
    let dir = tempfile::Builder::new().prefix("quicall-soak-").tempdir()?;
    super::demo::write_certificates(dir.path())?;
    let file = |name: &str| dir.path().join(name);
    let ca = read_certs(&file("ca.crt"))?;

    let mut servers = Vec::new();
    for i in 1..=SERVERS {
        let tls = ServerTls::new(
            read_certs(&file(&format!("server-{i}.crt")))?,
            read_key(&file(&format!("server-{i}.key")))?,
            ClientAuth::Required(ca.clone()),
        );
        let options = ServerOptions {
            transport: Limits {
                max_connections: 256,
                max_concurrent_streams: 256,
                handshake_timeout: Duration::from_secs(2),
                ..Limits::default()
            },
            max_request_size: 1 << 20,
            header_timeout: Duration::from_secs(1),
            ..ServerOptions::default()
        };
        servers.push(Server::bind(
            "127.0.0.1:0".parse()?,
            tls,
            quicall::demo::router(),
            options,
        )?);
    }
    let addrs: Vec<_> = servers.iter().map(Server::local_addr).collect();
    println!(
        "quicall soak: {secs} s, {} good callers and {} attackers against {SERVERS} servers ({})",
        args.good,
        args.attackers,
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let good_tls = ClientTls::new(ca.clone()).with_identity(
        read_certs(&file("demo-client.crt"))?,
        read_key(&file("demo-client.key"))?,
    );
    let list = addrs
        .iter()
        .map(|a| (a.to_string(), "localhost".to_string()));
    let cluster = Cluster::new(Discovery::fixed(list), good_tls, ClusterOptions::default()).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.good {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tasks.spawn(async move {
            let payload = vec![0x33u8; 1024];
            let mut i = w as i64;
            while !stop.load(Ordering::Relaxed) {
                let options = CallOptions::deadline(Duration::from_secs(5));
                if i % 2 == 0 {
                    let _ = cluster
                        .call_with(&ADD, &super::demo::add_request(i, 1), options)
                        .await;
                } else {
                    let _ = cluster.call_with(&ECHO, &payload[..], options).await;
                }
                i += 1;
            }
        });
    }
    let attacker = Arc::new(Attacker::new(dir.path(), ca, addrs.clone())?);
    for _ in 0..args.attackers {
        let (attacker, stop) = (attacker.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                attacker.one_attack().await;
            }
        });
    }

    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10).min(end - Instant::now())).await;
        let total = cluster.snapshot().total;
        println!(
            "  {:>4} s: {} good calls ({} failed), {} attacks, max RSS {} MiB",
            started.elapsed().as_secs(),
            total.calls,
            total.errors(),
            attacker.total(),
            max_rss_mib()
        );
    }
    stop.store(true, Ordering::Relaxed);
    // Attacks and calls in progress end within their own bounds.
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    cluster.close();
    attacker.close();

    let total = cluster.snapshot().total;
    println!("\nafter {} s:", started.elapsed().as_secs());
    println!(
        "  good calls: {} completed, {} failed {:?}; p50 {:?}, p99 {:?}, max {:?}",
        total.calls - total.errors(),
        total.errors(),
        total.errors_by_code(),
        total.p50().unwrap_or_default(),
        total.p99().unwrap_or_default(),
        total.max().unwrap_or_default()
    );
    println!("  attacks by kind:");
    for (kind, count) in KINDS.iter().zip(attacker.counts()) {
        println!("    {kind:<24} {count}");
    }
    println!("  max RSS: {} MiB", max_rss_mib());
    // Give the servers their timeouts (header 1 s, handshake 2 s, idle 30 s
    // for connections whose peer vanished) to let go of everything.
    let settle_end = Instant::now() + Duration::from_secs(40);
    let mut gauges = Vec::new();
    while Instant::now() < settle_end {
        gauges = servers.iter().map(Server::gauges).collect();
        if gauges
            .iter()
            .all(|g| holds_nothing(g) && g.connection_slots == 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (addr, g) in addrs.iter().zip(&gauges) {
        println!(
            "  server {addr}: connections {} (slots {}), streams {}, calls in flight {}, buffered bytes {} (requests) {} (responses)",
            g.connections,
            g.connection_slots,
            g.streams,
            g.calls_in_flight,
            g.buffered_request_bytes,
            g.buffered_response_bytes
        );
    }
    for server in servers {
        server.shutdown(Duration::from_secs(2)).await;
    }
    ensure!(
        gauges.iter().all(holds_nothing),
        "a server still holds resources after the soak"
    );
    Ok(())
}

/// Whether a server holds no stream, call, request bytes or response bytes.
fn holds_nothing(g: &quicall::Gauges) -> bool {
    g.streams == 0
        && g.calls_in_flight == 0
        && g.buffered_request_bytes == 0
        && g.buffered_response_bytes == 0
}

/// The process's peak resident set size (VmHWM), in MiB; 0 where unknown.
fn max_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
