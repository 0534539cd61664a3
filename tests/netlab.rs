//! The network lab (quicall-netlab) itself, and quicall across it: a
//! server and a client on hosts of their own (network namespaces joined by
//! a bridge, each with its own address), the lab dropping a share of every
//! packet in both directions with nftables. Skipped, saying why, where
//! namespaces cannot be made (not root, no nftables).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::Pki;
use quicall::demo::{ECHO, ECHO_CHUNKS};
use quicall::{CallOptions, Client, ClientOptions, Server, ServerOptions};
use quicall_netlab::{Host, Lab, Path};

/// The lab, or `None` (and a line saying why) where it cannot be made.
fn lab(hosts: &[&str], path: Path) -> Option<Lab> {
    match Lab::new(hosts, path) {
        Ok(lab) => Some(lab),
        Err(e @ quicall_netlab::LabError::Unavailable(_)) => {
            eprintln!("SKIPPED: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A runtime whose threads are in `host`'s namespace.
fn runtime_on(host: &Host) -> tokio::runtime::Runtime {
    let host = host.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || host.enter().expect("entering the host"))
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `n` datagrams from `from` to `to` and counts those that arrive.
fn datagrams_through(from: &Host, to: &Host, n: usize) -> usize {
    let target = SocketAddr::new(to.addr().into(), 9000);
    let receiver = {
        let to = to.clone();
        std::thread::spawn(move || {
            to.enter().unwrap();
            let socket = UdpSocket::bind(target).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let (mut got, mut buf) = (0, [0u8; 64]);
            while socket.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let from = from.clone();
    std::thread::spawn(move || {
        from.enter().unwrap();
        let socket = UdpSocket::bind((from.addr(), 0)).unwrap();
        for i in 0..n {
            // The lab drops between the hosts: no send fails.
            socket.send_to(&(i as u32).to_le_bytes(), target).unwrap();
            if i % 32 == 31 {
                // Paced, so that no queue on the way overflows (a loaded
                // machine may still drop a few: the checks allow for it).
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .join()
    .unwrap();
    receiver.join().unwrap()
}

#[test]
fn the_lab_drops_its_share_cuts_and_heals() {
    let Some(lab) = lab(&["a", "b"], Path::default()) else {
        return;
    };
    let (a, b) = (lab.host("a"), lab.host("b"));
    assert_ne!(a.addr(), b.addr());
    // No loss: everything arrives (but for what a loaded machine drops).
    assert!(datagrams_through(a, b, 2000) >= 1980);
    // 5% of every packet a host sends: about 1,000 of 20,000 dropped by
    // the lab (the bounds are six standard deviations wide).
    a.set_path(Path {
        loss: 0.05,
        ..Path::default()
    })
    .unwrap();
    let got = datagrams_through(a, b, 20_000);
    let (sent, dropped) = a.sent_and_dropped().unwrap();
    assert_eq!(sent, 20_000, "every datagram crossed the hub");
    assert!((800..1200).contains(&dropped), "{dropped} of 20000 dropped");
    let arrived = got as u64;
    assert!(
        arrived + dropped <= 20_000 && arrived + dropped >= 19_800,
        "{got} arrived, {dropped} dropped by the lab"
    );
    // Cut: nothing; healed: everything again (the loss removed).
    a.set_path(Path::default()).unwrap();
    b.cut().unwrap();
    assert_eq!(datagrams_through(a, b, 500), 0);
    b.heal().unwrap();
    assert!(datagrams_through(a, b, 500) >= 495);
    let names: Vec<String> = lab
        .hosts()
        .iter()
        .map(|h| h.namespace().to_owned())
        .collect();
    drop(lab);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(names.iter().all(|ns| !left.contains(ns.as_str())), "{left}");
}

#[test]
fn calls_cross_a_lab_that_loses_five_percent_of_packets() {
    let Some(lab) = lab(
        &["server", "client"],
        Path {
            loss: 0.05,
            ..Path::default()
        },
    ) else {
        return;
    };
    let pki = Arc::new(Pki::new());
    let servers = runtime_on(lab.host("server"));
    let clients = runtime_on(lab.host("client"));
    let addr = SocketAddr::new(lab.host("server").addr().into(), 0);
    let server: Server = {
        let pki = pki.clone();
        servers
            .block_on(servers.spawn(async move {
                Server::bind(
                    addr,
                    pki.server_tls(),
                    quicall::demo::router(),
                    ServerOptions::default(),
                )
            }))
            .unwrap()
            .unwrap()
    };
    let server_addr = server.local_addr();
    assert_eq!(server_addr.ip(), lab.host("server").addr());
    let lost = clients
        .block_on(clients.spawn(async move {
            let client = Client::connect(
                server_addr,
                "localhost",
                pki.client_tls(),
                ClientOptions::default(),
            )
            .await
            .unwrap();
            let mut calls = tokio::task::JoinSet::new();
            for caller in 0..16u64 {
                let client = client.clone();
                calls.spawn(async move {
                    let options = CallOptions::deadline(Duration::from_secs(60));
                    for n in 0..60u64 {
                        // Small calls, and every tenth one of 200 KB: many
                        // packets, so losses fall inside messages.
                        let len = if n % 10 == 9 { 200_000 } else { 64 };
                        let body: Vec<u8> =
                            (0..len).map(|i| (i as u64 ^ caller ^ n) as u8).collect();
                        if n % 2 == 0 {
                            let reply = client
                                .call_with(&ECHO, body.clone(), options.clone())
                                .await
                                .unwrap();
                            assert_eq!(&*reply, &body[..]);
                        } else {
                            let reply = client
                                .call_with(&ECHO_CHUNKS, &body[..], options.clone())
                                .await
                                .unwrap();
                            assert_eq!(reply.to_bytes(), body);
                        }
                    }
                });
            }
            while let Some(done) = calls.join_next().await {
                done.unwrap();
            }
            client.connection().quinn().stats().path.lost_packets
        }))
        .unwrap();
    let (sent, dropped) = lab.host("client").sent_and_dropped().unwrap();
    // QUIC saw the losses the lab made, and recovered from every one.
    assert!(
        dropped > 0 && lost > 0,
        "sent {sent}, dropped {dropped}, quinn lost {lost}"
    );
    drop(server);
    drop((servers, clients));
}
