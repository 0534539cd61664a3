//! The network lab (quicall-netlab) itself, and quicall across it: a
//! server and a client on hosts of their own (network namespaces joined by
//! a bridge, each with its own address), the lab dropping a share of every
//! packet in both directions with nftables. Skipped, saying why, where
//! namespaces cannot be made (not root, no nftables).

mod common;
#[path = "common/lab_dns.rs"]
mod lab_dns;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::Pki;
use lab_dns::LabResolver;
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
    datagram_order(from, to, n as u32).len()
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
    // 5% of every packet a host receives: about 1,000 of 20,000 dropped
    // by the lab (the bounds are six standard deviations wide).
    b.set_path(Path {
        loss: 0.05,
        ..Path::default()
    })
    .unwrap();
    let got = datagrams_through(a, b, 20_000);
    let (received, dropped) = b.received_and_dropped().unwrap();
    assert_eq!(received, 20_000, "every datagram reached b's link");
    assert!((800..1200).contains(&dropped), "{dropped} of 20000 dropped");
    let arrived = got as u64;
    assert!(
        arrived + dropped <= 20_000 && arrived + dropped >= 19_800,
        "{got} arrived, {dropped} dropped by the lab"
    );
    // Packet by packet, as on a wire, with no delay too (the loss falls
    // on packets, not on TCP's 64 KB offload batches): b's link saw at
    // least a packet per 1,448 bytes of a megabyte.
    b.set_path(Path::default()).unwrap();
    assert!(tcp_echo(a, b, 1_000_000).1, "TCP's bytes came back intact");
    let (received, _) = b.received_and_dropped().unwrap();
    assert!(
        received >= 1_000_000 / 1448,
        "b was sent {received} packets"
    );
    // Cut: nothing; healed: everything again (the loss removed).
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

/// Moves the calling thread onto `host` and binds a UDP socket there, at
/// `port` (0: any), whose reads give up after `timeout`.
fn udp_on(host: &Host, port: u16, timeout: Duration) -> UdpSocket {
    host.enter().unwrap();
    let socket = UdpSocket::bind((host.addr(), port)).unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    socket
}

/// Round trips of `n` datagrams from `from` to an echo on `to`, one at a
/// time (those that came back).
fn echo_round_trips(from: &Host, to: &Host, n: usize) -> Vec<Duration> {
    let target = SocketAddr::new(to.addr().into(), 9001);
    let echo = {
        let to = to.clone();
        std::thread::spawn(move || {
            let socket = udp_on(&to, target.port(), Duration::from_millis(500));
            let mut buf = [0u8; 64];
            while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                socket.send_to(&buf[..len], peer).unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let from = from.clone();
    let rtts = std::thread::spawn(move || {
        let socket = udp_on(&from, 0, Duration::from_millis(300));
        let mut buf = [0u8; 64];
        (0..n as u32)
            .filter_map(|i| {
                let sent = std::time::Instant::now();
                socket.send_to(&i.to_le_bytes(), target).unwrap();
                // A reply to an earlier probe that was late is skipped.
                loop {
                    let len = socket.recv(&mut buf).ok()?;
                    if buf[..len] == i.to_le_bytes() {
                        return Some(sent.elapsed());
                    }
                }
            })
            .collect()
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    rtts
}

/// Connects over TCP from `from` to an echo on `to`, sends `bytes` and
/// reads them back: how long the connection took, and whether the bytes
/// came back intact.
fn tcp_echo(from: &Host, to: &Host, bytes: u32) -> (Duration, bool) {
    let listener = {
        let to = to.clone();
        std::thread::spawn(move || {
            to.enter().unwrap();
            let listener = std::net::TcpListener::bind((to.addr(), 9002)).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            std::io::copy(&mut stream.try_clone().unwrap(), &mut stream).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let (from, to_addr) = (from.clone(), to.addr());
    let result = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        from.enter().unwrap();
        let started = std::time::Instant::now();
        let mut stream = std::net::TcpStream::connect((to_addr, 9002)).unwrap();
        let connect = started.elapsed();
        let sent: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        stream.write_all(&sent).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap();
        (connect, echoed == sent)
    })
    .join()
    .unwrap();
    listener.join().unwrap();
    result
}

#[test]
fn the_lab_delays_every_protocol_and_its_jitter_reorders() {
    let ms = Duration::from_millis;
    let Some(lab) = lab(&["a", "b"], Path::default()) else {
        return;
    };
    let (a, b) = (lab.host("a"), lab.host("b"));
    // Each host's packets held 4 ms on their way: no echo comes back in
    // under 8 ms (a packet is never early), and every one comes back.
    for host in [a, b] {
        host.set_path(Path {
            delay: ms(4),
            ..Path::default()
        })
        .unwrap();
    }
    let rtts = echo_round_trips(a, b, 50);
    assert!(rtts.len() >= 49, "{} of 50 echoes", rtts.len());
    assert!(rtts.iter().all(|rtt| *rtt >= ms(8)), "{rtts:?}");
    // TCP meets the same path: its handshake takes a round trip.
    let (connect, echoed) = tcp_echo(a, b, 1_000_000);
    assert!(connect >= ms(8), "TCP connected in {connect:?}");
    assert!(echoed, "TCP's bytes came back intact");
    // Packet by packet, as on a wire (the loss falls on packets, not on
    // TCP's 64 KB offload batches): b's link saw the 50 probes and at
    // least a packet per 1,448 bytes of the megabyte.
    let (received, _) = b.received_and_dropped().unwrap();
    assert!(
        received >= 50 + 1_000_000 / 1448,
        "b was sent {received} packets"
    );
    // Jitter: each packet's time drawn on its own, so a burst arrives out
    // of order, and whole.
    a.set_path(Path {
        delay: ms(1),
        jitter: ms(5),
        ..Path::default()
    })
    .unwrap();
    let order = datagram_order(a, b, 1000);
    let overtaken = order.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(order.len() >= 990, "{} of 1000 arrived", order.len());
    assert!(overtaken > 0, "no packet overtook another");
    // Without the delay, the direct path again: an echo under 8 ms.
    for host in [a, b] {
        host.set_path(Path::default()).unwrap();
    }
    let rtts = echo_round_trips(a, b, 20);
    assert!(rtts.iter().any(|rtt| *rtt < ms(8)), "{rtts:?}");
    assert_eq!(lab.delay_overflows(), 0);
}

/// The sequence numbers of the datagrams of `n` sent from `from` to `to`,
/// in the order they arrived. The lab drops between the hosts: no send
/// fails. Paced, so that no queue on the way overflows (a loaded machine
/// may still drop a few: the checks allow for it).
fn datagram_order(from: &Host, to: &Host, n: u32) -> Vec<u32> {
    let target = SocketAddr::new(to.addr().into(), 9003);
    let receiver = {
        let to = to.clone();
        std::thread::spawn(move || {
            let socket = udp_on(&to, target.port(), Duration::from_millis(500));
            let (mut order, mut buf) = (Vec::new(), [0u8; 4]);
            while socket.recv(&mut buf).is_ok() {
                order.push(u32::from_le_bytes(buf));
            }
            order
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let from = from.clone();
    std::thread::spawn(move || {
        let socket = udp_on(&from, 0, Duration::from_millis(500));
        for i in 0..n {
            socket.send_to(&i.to_le_bytes(), target).unwrap();
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .join()
    .unwrap();
    receiver.join().unwrap()
}

#[test]
fn calls_cross_a_lab_that_loses_five_percent_of_packets_and_reorders() {
    // 5% lost each way, 1-2 ms each way: packets overtake each other.
    let Some(lab) = lab(
        &["server", "client"],
        Path {
            loss: 0.05,
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
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
                    for n in 0..40u64 {
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
    let (received, dropped) = lab.host("client").received_and_dropped().unwrap();
    // QUIC saw the losses the lab made, and recovered from every one.
    assert!(
        dropped > 0 && lost > 0,
        "client sent {received}, dropped {dropped}, quinn lost {lost}"
    );
    drop(server);
    drop((servers, clients));
}

/// Which server answered.
const WHERE: quicall::Method<[u8], [u8]> = quicall::Method::new("test.Lab/Where").idempotent();

#[test]
fn a_cluster_follows_real_dns_and_loses_no_call_when_a_host_vanishes() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let names = ["dns", "client", "s1", "s2", "s3"];
    // The path of the `hosts` example: a 1 ms round trip, 0.1% loss.
    let path = Path {
        loss: 0.001,
        delay: Duration::from_micros(500),
        ..Path::default()
    };
    let Some(lab) = lab(&names, path) else {
        return;
    };
    let dns = match quicall_netlab::Dnsmasq::start(lab.host("dns")) {
        Ok(dns) => dns,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let ip = |name: &str| lab.host(name).addr();
    dns.answer("replicas.lab", &[ip("s1"), ip("s2")]).unwrap();

    let pki = Arc::new(Pki::new());
    // Three servers, each on a host of its own, all on port 4433.
    let servers: Vec<(tokio::runtime::Runtime, Server)> = ["s1", "s2", "s3"]
        .into_iter()
        .map(|name| {
            let runtime = runtime_on(lab.host(name));
            let (pki, addr) = (pki.clone(), SocketAddr::new(ip(name).into(), 4433));
            let server = runtime
                .block_on(runtime.spawn(async move {
                    let router = quicall::Router::new()
                        .route(&WHERE, move |_ctx, _req| async move {
                            Ok::<_, quicall::Status>(name)
                        })
                        .unwrap();
                    Server::bind(addr, pki.server_tls(), router, ServerOptions::default())
                }))
                .unwrap()
                .unwrap();
            (runtime, server)
        })
        .collect();

    let clients = runtime_on(lab.host("client"));
    let dns_ip = ip("dns");
    let (cluster, resolver_ok) = clients
        .block_on(clients.spawn({
            let pki = pki.clone();
            async move {
                let resolver = LabResolver::new(dns_ip);
                let resolver_ok = resolver.answers("replicas.lab.").await;
                let options = quicall::ClusterOptions {
                    resolve_interval: Duration::from_millis(200),
                    ..quicall::ClusterOptions::default()
                };
                let discovery = quicall::Discovery::dns_with(
                    "replicas.lab.:4433",
                    "localhost",
                    Arc::new(resolver),
                );
                let cluster = quicall::Cluster::new(discovery, pki.client_tls(), options)
                    .await
                    .unwrap();
                (cluster, resolver_ok)
            }
        }))
        .unwrap();
    assert!(resolver_ok, "the lab's dnsmasq answers");

    // The load: 8 callers, idempotent calls with 5 s deadlines, until told
    // to stop; every answer counted by server, every failure kept, and each
    // caller's finished calls counted apart (`calls[i]`).
    let answers: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..8).map(|_| AtomicUsize::new(0)).collect());
    let total = |calls: &[AtomicUsize]| {
        calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (cluster, answers, failures) = (cluster.clone(), answers.clone(), failures.clone());
            let (stop, calls) = (stop.clone(), calls.clone());
            clients.spawn(async move {
                let options = CallOptions::deadline(Duration::from_secs(5));
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                    match cluster.call_with(&WHERE, "", options.clone()).await {
                        Ok(who) => {
                            let who = String::from_utf8_lossy(&who).into_owned();
                            *answers.lock().unwrap().entry(who).or_default() += 1;
                        }
                        Err(status) => failures.lock().unwrap().push(status.to_string()),
                    }
                    calls[i].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    let count = |name: &str| answers.lock().unwrap().get(name).copied().unwrap_or(0);
    // Waits (at most 30 s) until `done` holds.
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let started = std::time::Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(30), "never: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // 1. Two records: both servers answer, the third none.
    wait_until("s1 and s2 answer", &|| {
        count("s1") >= 50 && count("s2") >= 50
    });
    assert_eq!(count("s3"), 0);
    // 2. A record added: s3 joins.
    dns.answer("replicas.lab", &[ip("s1"), ip("s2"), ip("s3")])
        .unwrap();
    wait_until("s3 answers", &|| count("s3") >= 50);
    // 3. A record removed: s1 gets no more calls.
    dns.answer("replicas.lab", &[ip("s2"), ip("s3")]).unwrap();
    let s1_addr = SocketAddr::new(ip("s1").into(), 4433);
    wait_until("s1 leaves the cluster", &|| {
        !cluster.servers().contains(&s1_addr)
    });
    // A call that picked s1 just before it left may still finish there: once
    // every caller has finished one more call, every later call was sent
    // after s1 left.
    let at_removal: Vec<usize> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    wait_until("every caller finishes its call in flight", &|| {
        calls
            .iter()
            .zip(&at_removal)
            .all(|(c, &n)| c.load(Ordering::Relaxed) > n)
    });
    let s1_before = count("s1");
    let calls_before = total(&calls);
    wait_until("200 more calls", &|| total(&calls) >= calls_before + 200);
    assert_eq!(count("s1"), s1_before, "a removed server gets no calls");
    // 4. s2's host vanishes mid-load (every packet to or from it dropped,
    // nothing closed): its calls go elsewhere, none is lost.
    lab.host("s2").cut().unwrap();
    let s3_before = count("s3");
    wait_until("s3 carries the load", &|| count("s3") >= s3_before + 500);
    stop.store(true, Ordering::Relaxed);
    for caller in load {
        clients.block_on(caller).unwrap();
    }
    // The cut caught calls on their way to s2 (their attempts failed, and
    // were made again elsewhere).
    let s2_attempts = format!(
        "quicall_client_attempts_total{{server=\"{}:4433\",",
        ip("s2")
    );
    let metrics = cluster.metrics_text();
    let failed_on_s2: f64 = metrics
        .lines()
        .filter(|l| l.starts_with(&s2_attempts) && !l.contains("code=\"OK\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failed_on_s2 >= 1.0, "no attempt met the cut:\n{metrics}");
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {:?}",
        failures.len(),
        total(&calls),
        &failures[..failures.len().min(5)]
    );
    drop(cluster);
    drop(servers);
    drop(clients);
}

#[test]
fn a_loopback_with_a_small_mtu_is_started_within_it() {
    // A loopback connection starts at its MTU bound (6,500) where `lo`
    // carries it, and at what `lo` carries where its MTU is smaller:
    // starting above it would lose every full packet until quinn's
    // black-hole detection stepped down.
    let Some(lab) = lab(&["host"], Path::default()) else {
        return;
    };
    let host = lab.host("host");
    let set_mtu = std::process::Command::new("ip")
        .args(["-n", host.namespace(), "link", "set", "lo", "mtu", "1500"])
        .status()
        .unwrap();
    assert!(set_mtu.success(), "ip link set lo mtu 1500");
    let pki = Arc::new(Pki::new());
    let runtime = runtime_on(host);
    let (mtu, lost) = runtime
        .block_on(runtime.spawn(async move {
            let server = common::serve(&pki, quicall::demo::router());
            let client = common::connect(&pki, &server).await;
            let body = vec![7u8; 1 << 20];
            let options = CallOptions::deadline(Duration::from_secs(30));
            for _ in 0..3 {
                let reply = client
                    .call_with(&ECHO_CHUNKS, &body[..], options.clone())
                    .await
                    .unwrap();
                assert_eq!(reply.to_bytes(), body);
            }
            let stats = client.connection().quinn().stats();
            (stats.path.current_mtu, stats.path.lost_packets)
        }))
        .unwrap();
    // It starts at 1,452 (1,500 less IPv6 and UDP headers); discovery may
    // then find what IPv4 leaves, 1,472, and no more.
    assert!(
        mtu <= 1500 - 28,
        "ran at {mtu} over a loopback of MTU 1,500"
    );
    assert_eq!(lost, 0, "no packet should be too large for the loopback");
}
