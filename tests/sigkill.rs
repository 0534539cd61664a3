//! A server process killed with SIGKILL mid-load, the hard way: no
//! CONNECTION_CLOSE, no graceful anything. Three `quicall serve` processes
//! and a cluster client in this process.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicall::certs::{read_certs, read_key};
use quicall::demo::{ADD, AddRequest};
use quicall::{CallOptions, ClientTls, Cluster, ClusterOptions, Discovery, Status};
use zerocopy::little_endian::I64;

use common::serve_process::{ServeProcess, write_certs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idempotent_call_fails_when_a_server_process_is_killed_and_it_is_used_again_after_restart()
 {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let mut servers: Vec<_> = (0..3)
        .map(|_| ServeProcess::start(dir.path(), "127.0.0.1:0"))
        .collect();
    let tls = ClientTls::new(read_certs(&dir.path().join("ca.crt")).unwrap()).with_identity(
        read_certs(&dir.path().join("ops.crt")).unwrap(),
        read_key(&dir.path().join("ops.key")).unwrap(),
    );
    let list = servers
        .iter()
        .map(|s| (s.addr.clone(), "localhost".to_string()))
        .collect();
    let cluster = Cluster::new(Discovery::Static(list), tls, ClusterOptions::default())
        .await
        .unwrap();

    // 16 callers, 2 s deadlines (the figures: 8 of 33,000 calls lost
    // before the liveness check), bounded to 6,000 calls.
    const CALLS: usize = 6_000;
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<Status>::new()));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (cluster, done, failures) = (cluster.clone(), done.clone(), failures.clone());
        callers.spawn(async move {
            while done.fetch_add(1, Ordering::SeqCst) < CALLS {
                let request = AddRequest {
                    a: I64::new(2),
                    b: I64::new(3),
                };
                match cluster
                    .call_with(
                        &ADD,
                        &request,
                        CallOptions::deadline(Duration::from_secs(2)),
                    )
                    .await
                {
                    Ok(reply) => assert_eq!(reply.sum.get(), 5),
                    Err(status) => failures.lock().unwrap().push(status),
                }
            }
        });
    }
    let killed_at = tokio::time::timeout(Duration::from_secs(60), async {
        while done.load(Ordering::SeqCst) < CALLS / 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        servers[0].kill();
        done.load(Ordering::SeqCst)
    })
    .await
    .expect("load stalled before the kill");
    tokio::time::timeout(Duration::from_secs(60), async {
        while callers.join_next().await.is_some() {}
    })
    .await
    .expect("load did not finish");
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} idempotent calls failed after SIGKILL at call {killed_at}: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // The same port again: the cluster sends it calls without waiting out
    // QUIC's 30 s idle timeout (the test gives up after 30 s).
    let addr = servers[0].addr.clone();
    let restarted_at = tokio::time::Instant::now();
    servers[0] = ServeProcess::start(dir.path(), &addr);
    let calls_of = |cluster: &Cluster| {
        cluster
            .snapshot()
            .servers
            .iter()
            .find(|s| s.addr.to_string() == addr)
            .map_or(0, |s| {
                s.stats.calls - s.stats.by_code[quicall::Code::Unavailable.as_u16() as usize]
            })
    };
    let before = calls_of(&cluster);
    tokio::time::timeout(Duration::from_secs(30), async {
        while calls_of(&cluster) == before {
            let request = AddRequest {
                a: I64::new(1),
                b: I64::new(1),
            };
            let r = cluster
                .call_with(
                    &ADD,
                    &request,
                    CallOptions::deadline(Duration::from_secs(2)),
                )
                .await;
            assert!(r.is_ok(), "{r:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the restarted server got no call in 30 s");
    println!(
        "killed at call {killed_at}; restarted server answered {:?} after its restart",
        restarted_at.elapsed()
    );
}
