//! Time to pick a server among 3, 100 and 10,000: flat for power of two
//! choices and round-robin (O(1)), linear for least-outstanding (O(n)).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quicall::rpc::balance::{Candidate, Policy};

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for n in [3usize, 100, 10_000] {
        let servers: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                in_flight: (i % 7) as u32,
                latency_ns: 1e6 + (i % 13) as f64 * 1e5,
            })
            .collect();
        for policy in [
            Policy::PeakEwma,
            Policy::RoundRobin,
            Policy::LeastOutstanding,
        ] {
            let mut turn = 0u64;
            group.bench_with_input(
                BenchmarkId::new(policy.name(), n),
                &servers,
                |b, servers| {
                    b.iter(|| {
                        turn += 1;
                        let mut rng = || fastrand::u64(..);
                        black_box(policy.pick(servers.len(), |i| Some(servers[i]), turn, &mut rng))
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
