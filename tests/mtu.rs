//! The path MTU towards loopback peers: a connection runs at the loopback
//! bound (it starts there), and a bound above what one segmentation-offload
//! batch can carry loses nothing (quinn would otherwise send batches the
//! kernel refuses).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Pki, bounded, loopback};
use quicall::demo::{ECHO, router};
use quicall::transport::GSO_MTU_LIMIT;
use quicall::{Client, ClientOptions, Limits, Server, ServerOptions};

/// Echoes 1 MiB calls until the client's path MTU reaches `bound` (bounded
/// in count and by `bounded`'s time); returns the MTU reached and the
/// packets the client's connection declared lost.
async fn echo_until_mtu(limits: Limits, bound: u16) -> (u16, u64) {
    let pki = Pki::new();
    let server = Server::bind(
        loopback(),
        pki.server_tls(),
        router(),
        ServerOptions {
            transport: limits.clone(),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let client = Client::connect(
        server.local_addr(),
        "localhost",
        pki.client_tls(),
        ClientOptions {
            transport: limits,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let payload = Bytes::from((0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut mtu = 0;
    for _ in 0..50 {
        let answer = bounded(client.call(&ECHO, payload.clone())).await.unwrap();
        assert_eq!(
            answer.as_ref(),
            payload.as_ref(),
            "echo changed the payload"
        );
        mtu = client.connection().quinn().stats().path.current_mtu;
        if mtu >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = client.connection().quinn().stats().path.lost_packets;
    (mtu, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peers_get_the_loopback_mtu() {
    let limits = Limits::default();
    assert_eq!(limits.loopback_mtu, GSO_MTU_LIMIT);
    let (mtu, lost) = echo_until_mtu(limits.clone(), limits.loopback_mtu).await;
    assert_eq!(
        mtu, limits.loopback_mtu,
        "a loopback connection should run at the loopback bound, above the network bound {}",
        limits.max_mtu
    );
    assert_eq!(lost, 0, "no packet should be lost on loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtu_above_the_offload_limit_loses_nothing() {
    // 10 segments of 16,000 bytes would be a 160,000-byte batch: more than
    // one UDP datagram can carry, refused by the kernel and silently dropped
    // by quinn-udp. quicall turns offload off for such a connection.
    let limits = Limits {
        loopback_mtu: 16_000,
        ..Limits::default()
    };
    let (mtu, lost) = echo_until_mtu(limits, 16_000).await;
    assert!(
        mtu > GSO_MTU_LIMIT,
        "the MTU should pass the offload limit, reached {mtu}"
    );
    assert_eq!(lost, 0, "no batch should be refused and lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_beyond_any_loopback_datagram_starts_at_the_largest_one() {
    // A connection starts at its loopback bound; one above what a loopback
    // datagram can carry starts at the largest that can (65,487 bytes with
    // `lo` at its usual MTU), and calls go through at least at that size. (A bound over quinn's 65,527
    // once left the endpoint at quinn's default of 1,472 for every path.)
    let limits = Limits {
        loopback_mtu: u16::MAX,
        ..Limits::default()
    };
    let (mtu, lost) = echo_until_mtu(limits, 65_487).await;
    // Discovery may find up to IPv4's 65,507 above the start.
    assert!((65_487..=65_507).contains(&mtu), "ran at {mtu}");
    assert_eq!(lost, 0, "no packet should be refused and lost");
}
