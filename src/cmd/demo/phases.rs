//! Part two of the demo: a cluster client (default policy: power of two
//! choices by peak-EWMA latency) under load while one server turns slow,
//! another is killed mid-load and then restarted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use quicall::certs::{read_certs, read_key};
use quicall::demo::{ADD, COUNT, ECHO};
use quicall::metrics::StatsSnapshot;
use quicall::rpc::balance::EjectionConfig;
use quicall::rpc::cluster::ClusterSnapshot;
use quicall::{
    CallOptions, ClientOptions, ClientTls, Cluster, ClusterOptions, Discovery, Limits, PoolOptions,
};
use tokio::time::Instant;
use zerocopy::little_endian::U64;

use super::tls::add_request;
use super::{Args, CLIENT, DemoServer, fmt_latency};

pub const NORMAL: Duration = Duration::from_millis(1);
const SLOW: Duration = Duration::from_millis(20);

pub async fn run(dir: &Path, servers: &mut [DemoServer], args: &Args) -> anyhow::Result<()> {
    for server in servers.iter() {
        server.knobs.set_service_time(NORMAL);
    }
    let cluster = connect(dir, servers).await?;
    let phase = Duration::from_secs_f64(args.phase_secs.max(0.2));
    println!(
        "\ncluster client: policy {}, {} callers, each call add or echo (both idempotent; echo hedged at its p95), \
         every server spending {} per call",
        quicall::Policy::default(),
        args.concurrency,
        fmt_latency(Some(NORMAL)),
    );

    // 1. Steady state.
    let before = cluster.snapshot();
    load(&cluster, args.concurrency, phase).await;
    let steady = report(&cluster, &before, servers, "1. all three servers healthy");
    ensure!(
        steady.errors() == 0,
        "calls failed with all servers healthy"
    );

    // 2. One server 20x slower.
    servers[1].knobs.set_service_time(SLOW);
    let before = cluster.snapshot();
    load(&cluster, args.concurrency, phase).await;
    let slow_phase = report(
        &cluster,
        &before,
        servers,
        &format!(
            "2. {} made 20x slower ({} per call)",
            servers[1].name,
            fmt_latency(Some(SLOW))
        ),
    );
    let slow_share = share(&cluster.snapshot(), &before, servers[1].addr);
    println!(
        "   -> the slow server took {:.1}% of the calls (a third would be 33.3%)",
        slow_share * 100.0
    );
    ensure!(
        slow_phase.errors() == 0,
        "calls failed with one slow server"
    );
    ensure!(slow_share < 1.0 / 3.0, "the slow server was not avoided");

    // 3. Another server killed in the middle of the load.
    let before = cluster.snapshot();
    let loader = tokio::spawn({
        let (cluster, concurrency) = (cluster.clone(), args.concurrency);
        async move { load(&cluster, concurrency, phase).await }
    });
    tokio::time::sleep(phase / 3).await;
    servers[2].kill();
    println!(
        "\n   ({} killed mid-load with SIGKILL: no close reached its clients; \
         they noticed the silence)",
        servers[2].name
    );
    loader.await?;
    let killed = report(
        &cluster,
        &before,
        servers,
        &format!(
            "3. {} killed mid-load ({} still slow)",
            servers[2].name, servers[1].name
        ),
    );
    println!(
        "   -> failed idempotent calls: {}, retried elsewhere: {}",
        killed.errors(),
        killed.retries
    );
    ensure!(
        killed.errors() == 0,
        "idempotent calls failed when a server died"
    );

    // 4. The killed server restarted on the same port.
    servers[2].restart().await?;
    println!(
        "\n   ({} restarted on {})",
        servers[2].name, servers[2].addr
    );
    let before = cluster.snapshot();
    load(&cluster, args.concurrency, phase * 2).await;
    let restarted = report(
        &cluster,
        &before,
        servers,
        &format!("4. {} restarted", servers[2].name),
    );
    let back = share(&cluster.snapshot(), &before, servers[2].addr);
    println!(
        "   -> the restarted server took {:.1}% of the calls",
        back * 100.0
    );
    ensure!(restarted.errors() == 0, "calls failed after the restart");
    ensure!(back > 0.0, "the restarted server got no traffic");

    // 5. A stream through the cluster: one call, a million messages.
    let n = 1_000_000u64;
    let began = Instant::now();
    let mut numbers = cluster
        .server_stream(
            &COUNT,
            &U64::new(n),
            CallOptions::deadline(Duration::from_secs(60)),
        )
        .await?;
    let (mut next, mut in_order) = (0u64, true);
    while let Some(number) = numbers.message().await? {
        in_order &= number.get() == next;
        next += 1;
    }
    let took = began.elapsed();
    println!(
        "\n5. one server stream through the cluster: {next} messages in order in {:.2} s \
         ({:.0} messages/s, one call)",
        took.as_secs_f64(),
        next as f64 / took.as_secs_f64()
    );
    ensure!(
        in_order && next == n,
        "the stream lost or reordered messages"
    );

    let total = cluster.snapshot().total;
    println!("\nall phases: {}", summary(&total));
    cluster.close();
    Ok(())
}

/// A cluster client of the demo servers. The defaults notice a silent
/// server in about a second; here a dead server's reconnection attempts are
/// also given up after a second (instead of 10 s), and ejections are
/// short, so that the four phases fit in a few seconds.
async fn connect(dir: &Path, servers: &[DemoServer]) -> anyhow::Result<Cluster> {
    let tls = ClientTls::new(read_certs(&dir.join("ca.crt"))?).with_identity(
        read_certs(&dir.join(format!("{CLIENT}.crt")))?,
        read_key(&dir.join(format!("{CLIENT}.key")))?,
    );
    let options = ClusterOptions {
        ejection: EjectionConfig {
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(10),
            ..EjectionConfig::default()
        },
        client: ClientOptions {
            transport: Limits {
                handshake_timeout: Duration::from_secs(1),
                ..Limits::default()
            },
            ..ClientOptions::default()
        },
        pool: PoolOptions {
            backoff_max: Duration::from_millis(500),
            ..PoolOptions::default()
        },
        ..ClusterOptions::default()
    };
    let list = servers
        .iter()
        .map(|s| (s.addr.to_string(), "localhost".to_string()));
    Ok(Cluster::new(Discovery::fixed(list), tls, options).await?)
}

/// `concurrency` callers calling add and echo in turn for `duration`.
async fn load(cluster: &Cluster, concurrency: usize, duration: Duration) {
    let end = Instant::now() + duration;
    let payload = Arc::new([0x5au8; 64]);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (cluster, payload) = (cluster.clone(), payload.clone());
        workers.spawn(async move {
            let options = CallOptions::deadline(Duration::from_secs(5));
            let mut i = w as i64;
            while Instant::now() < end {
                if i % 2 == 0 {
                    let _ = cluster
                        .call_with(&ADD, &add_request(i, i), options.clone())
                        .await;
                } else {
                    let _ = cluster
                        .call_with(&ECHO, &payload[..], options.clone())
                        .await;
                }
                i += 1;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Prints a phase's figures per server and in total; the phase's totals.
fn report(
    cluster: &Cluster,
    before: &ClusterSnapshot,
    servers: &[DemoServer],
    title: &str,
) -> StatsSnapshot {
    let now = cluster.snapshot();
    let total = now.total.since(&before.total);
    let attempts: u64 = now
        .servers
        .iter()
        .map(|s| s.stats.calls - before_of(before, s.addr).map_or(0, |b| b.calls))
        .sum();
    println!("\n{title}");
    println!(
        "   {:<9} {:>7} {:>7} {:>9} {:>9} {:>7} {:>8} {:>7} {:>8}",
        "server", "share", "calls", "p50", "p99", "errors", "retries", "hedges", "ejected"
    );
    for server in &now.servers {
        let name = servers
            .iter()
            .find(|s| s.addr == server.addr)
            .map_or("?", |s| s.name.as_str());
        let stats = match before_of(before, server.addr) {
            Some(b) => server.stats.since(b),
            None => server.stats.clone(),
        };
        println!(
            "   {:<9} {:>6.1}% {:>7} {:>9} {:>9} {:>7} {:>8} {:>7} {:>8}",
            name,
            100.0 * stats.calls as f64 / attempts.max(1) as f64,
            stats.calls,
            fmt_latency(stats.p50()),
            fmt_latency(stats.p99()),
            stats.errors(),
            stats.retries,
            stats.hedges,
            stats.ejections,
        );
    }
    println!("   all calls: {}", summary(&total));
    total
}

/// Count, latency percentiles and outcomes of some calls, on one line.
fn summary(stats: &StatsSnapshot) -> String {
    format!(
        "count {}  p50 {}  p99 {}  max {}  errors {}  retries {}  hedges {}",
        stats.calls,
        fmt_latency(stats.p50()),
        fmt_latency(stats.p99()),
        fmt_latency(stats.max()),
        stats.errors(),
        stats.retries,
        stats.hedges,
    )
}

fn before_of(before: &ClusterSnapshot, addr: std::net::SocketAddr) -> Option<&StatsSnapshot> {
    before
        .servers
        .iter()
        .find(|s| s.addr == addr)
        .map(|s| &s.stats)
}

/// Share of the attempts of the phase since `before` that went to `addr`.
fn share(now: &ClusterSnapshot, before: &ClusterSnapshot, addr: std::net::SocketAddr) -> f64 {
    let delta = |s: &quicall::rpc::cluster::ServerSnapshot| {
        s.stats.calls - before_of(before, s.addr).map_or(0, |b| b.calls)
    };
    let all: u64 = now.servers.iter().map(delta).sum();
    let one: u64 = now
        .servers
        .iter()
        .filter(|s| s.addr == addr)
        .map(delta)
        .sum();
    one as f64 / all.max(1) as f64
}
