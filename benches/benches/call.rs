//! One call's round trip over loopback with mutual TLS: `add` (16-byte
//! request, 8-byte response) and `echo` of 64 B and 16 KiB, on a
//! current-thread runtime (client and server share it). Also prints the heap
//! allocations per call, client and server together.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quicall::demo::{ADD, AddRequest, ECHO};
use quicall_benches::{CountingAlloc, loopback_pair};
use zerocopy::little_endian::I64;

quicall_benches::counting_allocator!();

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_server, client) = rt.block_on(loopback_pair());
    let request = AddRequest {
        a: I64::new(2),
        b: I64::new(3),
    };

    // Allocations per call, measured outside criterion's own bookkeeping.
    rt.block_on(async {
        for _ in 0..1000 {
            client.call(&ADD, &request).await.unwrap();
        }
        let calls = 10_000;
        let before = CountingAlloc::count();
        for _ in 0..calls {
            client.call(&ADD, &request).await.unwrap();
        }
        let per_call = (CountingAlloc::count() - before) as f64 / calls as f64;
        println!("heap allocations per add call (client + server, quinn included): {per_call:.1}");
    });

    // Echo of 64 B, quicall against raw quinn (same TLS and transport).
    rt.block_on(async {
        let pki = quicall_benches::harness::systems::Pki::new().unwrap();
        let payload = bytes::Bytes::from(vec![7u8; 64]);
        for system in quicall_benches::harness::System::all() {
            let echo =
                quicall_benches::harness::Echo::start(system, &pki, &quicall::Limits::default())
                    .await
                    .unwrap();
            for _ in 0..1000 {
                echo.call(&payload).await.unwrap();
            }
            let calls = 10_000;
            let before = CountingAlloc::count();
            for _ in 0..calls {
                echo.call(&payload).await.unwrap();
            }
            let per_call = (CountingAlloc::count() - before) as f64 / calls as f64;
            println!(
                "heap allocations per 64 B echo call, {system} (client + server): {per_call:.1}"
            );
        }
    });

    let mut group = c.benchmark_group("round_trip");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("add", |b| {
        b.to_async(&rt).iter(|| async {
            let reply = client.call(&ADD, &request).await.unwrap();
            assert_eq!(reply.sum.get(), 5);
        })
    });
    for size in [64usize, 16 << 10] {
        let payload = bytes::Bytes::from(vec![0xa5u8; size]);
        group.bench_function(format!("echo_{size}B"), |b| {
            b.to_async(&rt).iter(|| async {
                let reply = client.call(&ECHO, payload.clone()).await.unwrap();
                assert_eq!(reply.len(), size);
            })
        });
    }
    group.finish();

    // One 64 B echo by each system on this one thread: with client and
    // server taking turns on it, the time per call is the work per call.
    let pki = quicall_benches::harness::systems::Pki::new().unwrap();
    let payload = bytes::Bytes::from(vec![7u8; 64]);
    let mut group = c.benchmark_group("echo_64B_one_thread");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for system in quicall_benches::harness::System::all() {
        let echo = rt
            .block_on(quicall_benches::harness::Echo::start(
                system,
                &pki,
                &quicall::Limits::default(),
            ))
            .unwrap();
        group.bench_function(system.name(), |b| {
            b.to_async(&rt).iter(|| async {
                assert_eq!(echo.call(&payload).await.unwrap(), 64);
            })
        });
    }
    group.finish();

    // The same `add` through a cluster client of one and of three servers:
    // the cost of selection, accounting and metrics on top of one call.
    let (one_server, one) = rt.block_on(quicall_benches::loopback_cluster(1));
    rt.block_on(async {
        for _ in 0..1000 {
            one.call(&ADD, &request).await.unwrap();
        }
        let calls = 10_000;
        let before = CountingAlloc::count();
        for _ in 0..calls {
            one.call(&ADD, &request).await.unwrap();
        }
        let per_call = (CountingAlloc::count() - before) as f64 / calls as f64;
        println!("heap allocations per add call through a 1-server cluster: {per_call:.1}");
    });
    drop((one_server, one));
    let (servers, cluster) = rt.block_on(quicall_benches::loopback_cluster(3));
    rt.block_on(async {
        for _ in 0..1000 {
            cluster.call(&ADD, &request).await.unwrap();
        }
        let calls = 10_000;
        let before = CountingAlloc::count();
        for _ in 0..calls {
            cluster.call(&ADD, &request).await.unwrap();
        }
        let per_call = (CountingAlloc::count() - before) as f64 / calls as f64;
        println!("heap allocations per add call through a 3-server cluster: {per_call:.1}");
    });
    let mut group = c.benchmark_group("cluster_round_trip");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("add_3_servers", |b| {
        b.to_async(&rt).iter(|| async {
            let reply = cluster.call(&ADD, &request).await.unwrap();
            assert_eq!(reply.sum.get(), 5);
        })
    });
    group.finish();
    drop(servers);
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
