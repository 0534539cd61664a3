//! Calls through a user-space loopback UDP proxy that drops, delays and
//! reorders datagrams: QUIC recovers, and every call completes correctly.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{LossyProxy, Pki, bounded, serve};
use quicall::demo::{ADD, AddRequest, ECHO};
use quicall::{CallOptions, Client, ClientOptions};
use std::sync::atomic::Ordering as AtomicOrdering;
use zerocopy::little_endian::I64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_complete_through_loss_delay_and_reordering() {
    let pki = Pki::new();
    let server = serve(&pki, quicall::demo::router());
    // 10% of datagrams dropped and 20% held back up to 5 ms, each way.
    let proxy = LossyProxy::start(server.local_addr(), 0.10, 0.20, Duration::from_millis(5)).await;
    let client = bounded(Client::connect(
        proxy.addr,
        "localhost",
        pki.client_tls(),
        ClientOptions::default(),
    ))
    .await
    .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200i64 {
        let client = client.clone();
        calls.spawn(async move {
            let options = CallOptions::deadline(Duration::from_secs(30));
            if i % 2 == 0 {
                let request = AddRequest {
                    a: I64::new(i),
                    b: I64::new(1),
                };
                let reply = client.call_with(&ADD, &request, options).await.unwrap();
                assert_eq!(reply.sum.get(), i + 1);
            } else {
                // Up to 64 KiB: many packets, so losses fall inside messages.
                let len = (i as usize * 331) % 65_536;
                let payload: Vec<u8> = (0..len).map(|k| (k as u64 * 7 + i as u64) as u8).collect();
                let reply = client
                    .call_with(&ECHO, bytes::Bytes::from(payload.clone()), options)
                    .await
                    .unwrap();
                assert_eq!(&*reply, &payload[..], "echo {i} intact");
            }
        });
    }
    bounded(async {
        while let Some(result) = calls.join_next().await {
            result.unwrap();
        }
    })
    .await;
    let dropped = proxy.dropped.load(Ordering::Relaxed);
    let delayed = proxy.delayed.load(Ordering::Relaxed);
    println!("proxy dropped {dropped} and delayed {delayed} datagrams");
    assert!(dropped > 0 && delayed > 0, "the proxy did interfere");
}

/// Every call started ends in an answer or a status, through loss, delay,
/// reordering and a server restart: nothing is silently lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_accounted_for_through_loss_and_a_restart() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    let pki = Pki::new();
    let lossy = serve(&pki, quicall::demo::router());
    let mut steady = Some(serve(&pki, quicall::demo::router()));
    let steady_addr = steady.as_ref().unwrap().local_addr();
    let proxy = LossyProxy::start(lossy.local_addr(), 0.05, 0.10, Duration::from_millis(3)).await;
    let servers = quicall::Discovery::fixed([
        (proxy.addr.to_string(), "localhost".to_string()),
        (steady_addr.to_string(), "localhost".to_string()),
    ]);
    let options = quicall::ClusterOptions {
        client: ClientOptions {
            transport: quicall::Limits {
                handshake_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(3),
                keep_alive: Some(Duration::from_millis(500)),
                ..quicall::Limits::default()
            },
            ..ClientOptions::default()
        },
        ..quicall::ClusterOptions::default()
    };
    let cluster = quicall::Cluster::new(servers, pki.client_tls(), options)
        .await
        .unwrap();
    let (started, answers, statuses) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8i64 {
        let (cluster, started, answers, statuses) = (
            cluster.clone(),
            started.clone(),
            answers.clone(),
            statuses.clone(),
        );
        workers.spawn(async move {
            for i in 0..150i64 {
                started.fetch_add(1, AtomicOrdering::SeqCst);
                let request = AddRequest {
                    a: I64::new(w),
                    b: I64::new(i),
                };
                // ADD is idempotent: retried elsewhere when a server goes away.
                match cluster
                    .call_with(
                        &ADD,
                        &request,
                        CallOptions::deadline(Duration::from_secs(10)),
                    )
                    .await
                {
                    Ok(reply) => {
                        assert_eq!(reply.sum.get(), w + i);
                        answers.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        statuses.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    // Restart the direct server in the middle of the run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    steady
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(2))
        .await;
    let restarted = bounded(async {
        loop {
            if std::net::UdpSocket::bind(steady_addr).is_ok()
                && let Ok(server) = quicall::Server::bind(
                    steady_addr,
                    pki.server_tls(),
                    quicall::demo::router(),
                    quicall::ServerOptions::default(),
                )
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bounded(async {
        while let Some(result) = workers.join_next().await {
            result.unwrap();
        }
    })
    .await;
    let (started, answers, statuses) = (
        started.load(Ordering::SeqCst),
        answers.load(Ordering::SeqCst),
        statuses.load(Ordering::SeqCst),
    );
    println!("{started} calls: {answers} answers, {statuses} statuses");
    assert_eq!(started, 1200);
    assert_eq!(
        started,
        answers + statuses,
        "every call ended one way or the other"
    );
    assert_eq!(
        statuses, 0,
        "idempotent calls all succeeded (retried where needed)"
    );
    drop(restarted);
}
