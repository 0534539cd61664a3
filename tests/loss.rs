//! Calls through a user-space loopback UDP proxy that drops, delays and
//! reorders datagrams: QUIC recovers, and every call completes correctly.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{LossyProxy, Pki, bounded, serve};
use quicall::demo::{ADD, AddRequest, ECHO};
use quicall::{CallOptions, Client, ClientOptions};
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
