//! A cluster of hosts with real DNS, shown to a person: three quicall
//! servers, each on a host of its own (a network namespace with its own
//! address), one name served by a real DNS server (dnsmasq) on a fourth,
//! and a cluster client on a fifth that finds the servers through that
//! name while it calls. Every path between hosts has a round trip of 1 ms
//! and loses 0.1% of packets. Second by second it prints what each server
//! answered, and what failed, while the name gains a record, loses one,
//! and one server's host vanishes (every packet to or from it dropped,
//! nothing closed: a pulled cable, a dead machine).
//!
//! Needs root (network namespaces), nftables and dnsmasq (Debian's
//! `nftables` and `dnsmasq-base`, installed where missing):
//!
//! ```text
//! sudo cargo run --release --example hosts
//! ```

#[path = "../tests/common/lab_dns.rs"]
mod lab_dns;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quicall::certs::{CertificateAuthority, NodeSpec};
use quicall::{
    CallOptions, ClientAuth, ClientTls, Cluster, ClusterOptions, Discovery, Method, Router, Server,
    ServerOptions, ServerTls, Status,
};
use quicall_netlab::{Dnsmasq, Host, Lab, LabError, Path};

/// Which server answered: its host's name.
const WHERE: Method<[u8], [u8]> = Method::new("hosts.Where/Name").idempotent();

/// The name the servers are found by.
const NAME: &str = "replicas.lab.";

/// Seconds the load runs.
const SECONDS: u64 = 14;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path {
        loss: 0.001,
        delay: Duration::from_micros(500),
        ..Path::default()
    };
    let lab = match Lab::new(&["dns", "client", "s1", "s2", "s3"], path) {
        Ok(lab) => lab,
        Err(e @ LabError::Unavailable(_)) => {
            eprintln!("{e} (run as root, where network namespaces can be made)");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    let dns = Dnsmasq::start(lab.host("dns"))?;
    let ip = |name: &str| lab.host(name).addr();
    dns.answer(NAME, &[ip("s1"), ip("s2")])?;
    println!(
        "hosts: dns {}, client {}, s1 {}, s2 {}, s3 {}; every path 1 ms round trip, 0.1% loss",
        ip("dns"),
        ip("client"),
        ip("s1"),
        ip("s2"),
        ip("s3")
    );

    // A CA, a certificate for the servers (one name for all: the client
    // reaches them by address, and checks this name) and one for the
    // client: mutual TLS.
    let ca = CertificateAuthority::new("hosts example CA", Duration::from_secs(3600))?;
    let server_cert = ca.issue(&NodeSpec::server("replica").san("replica"))?;
    let client_cert = ca.issue(&NodeSpec::client("caller"))?;
    let roots = vec![ca.cert_der().clone()];

    // Three servers, each on its own host, all on port 4433.
    let mut servers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let runtime = runtime_on(lab.host(name))?;
        let tls = ServerTls::new(
            server_cert.chain(),
            server_cert.key_der(),
            ClientAuth::Required(roots.clone()),
        );
        let addr = SocketAddr::new(ip(name).into(), 4433);
        let server = runtime.block_on(runtime.spawn(async move {
            let router = Router::new()
                .route(
                    &WHERE,
                    move |_ctx, _req| async move { Ok::<_, Status>(name) },
                )
                .expect("one route");
            Server::bind(addr, tls, router, ServerOptions::default())
        }))??;
        servers.push((runtime, server));
    }

    // The client, on its own host, finding the servers through the name.
    let clients = runtime_on(lab.host("client"))?;
    let tls = ClientTls::new(roots).with_identity(client_cert.chain(), client_cert.key_der());
    let dns_ip = dns.addr();
    let cluster = clients.block_on(clients.spawn(async move {
        let options = ClusterOptions {
            resolve_interval: Duration::from_millis(200),
            ..ClusterOptions::default()
        };
        let resolver = Arc::new(lab_dns::LabResolver::new(dns_ip));
        assert!(resolver.answers(NAME).await, "dnsmasq does not answer");
        let discovery = Discovery::dns_with(format!("{NAME}:4433"), "replica", resolver);
        Cluster::new(discovery, tls, options).await
    }))??;

    // 16 callers, each calling again as soon as it has an answer.
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (cluster, stats, stop) = (cluster.clone(), stats.clone(), stop.clone());
            clients.spawn(async move {
                let options = CallOptions::deadline(Duration::from_secs(5));
                while !stop.load(Ordering::Relaxed) && started.elapsed().as_secs() < SECONDS + 5 {
                    let sent = Instant::now();
                    let result = cluster.call_with(&WHERE, "", options.clone()).await;
                    stats.record(result.map(|who| who.to_vec()), sent.elapsed());
                }
            })
        })
        .collect();

    println!(
        "\n{:>4}  {:>8} {:>8} {:>8} {:>8}  {:>8}  what happens",
        "s", "s1", "s2", "s3", "failed", "max ms"
    );
    for second in 0..SECONDS {
        let event = match second {
            0 => "the name has s1 and s2",
            3 => {
                dns.answer(NAME, &[ip("s1"), ip("s2"), ip("s3")])?;
                "s3's record added"
            }
            6 => {
                dns.answer(NAME, &[ip("s2"), ip("s3")])?;
                "s1's record removed"
            }
            9 => {
                lab.host("s2").cut()?;
                "s2's host vanishes"
            }
            _ => "",
        };
        stats.note(event);
        std::thread::sleep(Duration::from_secs(second + 1).saturating_sub(started.elapsed()));
        let (counts, failed, max, note) = stats.take();
        let count = |name: &str| counts.get(name).copied().unwrap_or(0);
        println!(
            "{:>4}  {:>8} {:>8} {:>8} {:>8}  {:>8.1}  {}",
            second + 1,
            count("s1"),
            count("s2"),
            count("s3"),
            failed,
            max.as_secs_f64() * 1000.0,
            note
        );
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        clients.block_on(caller)?;
    }
    let (calls, failures) = (
        stats.calls.load(Ordering::Relaxed),
        stats.failures.load(Ordering::Relaxed),
    );
    if failures == 0 {
        println!(
            "\n{calls} calls, none failed: every call is idempotent, so the cluster client sent each one that met the vanished host again elsewhere (after about a second: the time it takes to tell a silent host from a slow one)"
        );
    } else {
        println!("\n{calls} calls, {failures} failed");
    }
    let (received, dropped) = lab.host("client").received_and_dropped()?;
    println!("the network lost {dropped} of the {received} packets sent to the client's host");
    drop(cluster);
    drop(servers);
    Ok(())
}

/// A runtime whose threads are on `host`.
fn runtime_on(host: &Host) -> std::io::Result<tokio::runtime::Runtime> {
    let host = host.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || host.enter().expect("entering a lab host"))
        .enable_all()
        .build()
}

/// Answers by server, failures and the slowest call, per second.
#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    failures: AtomicU64,
    second: Mutex<Second>,
}

#[derive(Default)]
struct Second {
    answers: BTreeMap<String, u64>,
    failed: u64,
    max: Duration,
    note: String,
}

impl Stats {
    fn record(&self, result: Result<Vec<u8>, Status>, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut second = self.second.lock().unwrap_or_else(|e| e.into_inner());
        second.max = second.max.max(took);
        match result {
            Ok(who) => {
                *second
                    .answers
                    .entry(String::from_utf8_lossy(&who).into_owned())
                    .or_default() += 1
            }
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                second.failed += 1;
            }
        }
    }

    fn note(&self, what: &str) {
        let mut second = self.second.lock().unwrap_or_else(|e| e.into_inner());
        second.note = what.to_owned();
    }

    /// This second's figures, and a fresh second.
    fn take(&self) -> (BTreeMap<String, u64>, u64, Duration, String) {
        let mut second = self.second.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *second);
        (taken.answers, taken.failed, taken.max, taken.note)
    }
}
