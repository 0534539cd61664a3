//! A closed-loop load over three loopback servers through one cluster
//! client: calls/s and latency percentiles from an HDR histogram.
//!
//! `cargo bench -p quicall-benches --bench cluster_load -- [SECONDS] [CALLERS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quicall::demo::{ADD, AddRequest};
use zerocopy::little_endian::I64;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: f64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let callers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (servers, cluster) = quicall_benches::loopback_cluster(3).await;
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..callers {
            let cluster = cluster.clone();
            workers.spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let request = AddRequest { a: I64::new(w as i64), b: I64::new(1) };
                while Instant::now() < end {
                    let t = Instant::now();
                    cluster.call(&ADD, &request).await.unwrap();
                    h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                }
                h
            });
        }
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        while let Some(h) = workers.join_next().await {
            all.add(h.unwrap()).unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "cluster_load: 3 servers, {callers} callers, {seconds} s: {:.0} calls/s  p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
            all.len() as f64 / elapsed,
            all.value_at_quantile(0.5),
            all.value_at_quantile(0.9),
            all.value_at_quantile(0.99),
            all.value_at_quantile(0.999),
            all.max()
        );
        for s in cluster.snapshot().servers {
            println!("  {}: {} calls, p50 {:?}", s.addr, s.stats.calls, s.stats.p50().unwrap_or_default());
        }
        let _ = Arc::new(servers);
    });
}
