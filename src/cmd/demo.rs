//! `quicall demo`: a mutual-TLS cluster of three servers on loopback, with
//! fresh certificates, answers, refusals and a latency summary.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use hdrhistogram::Histogram;
use quicall::certs::{CertificateAuthority, NodeSpec, read_certs, read_key};
use quicall::demo::{ADD, AddRequest, ECHO, WHOAMI};
use quicall::{
    Client, ClientAuth, ClientOptions, ClientTls, Code, Server, ServerOptions, ServerTls,
};
use zerocopy::little_endian::I64;

/// Arguments of `quicall demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Calls in the load phase.
    #[arg(long, default_value_t = 6000)]
    calls: usize,
    /// Concurrent callers in the load phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const SERVERS: usize = 3;
const CLIENT: &str = "demo-client";

pub async fn run(args: Args) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(120), demo(args))
        .await
        .context("the demo did not finish within 120 s")?
}

async fn demo(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("quicall-demo-").tempdir()?;
    write_certificates(dir.path())?;
    let file = |name: &str| dir.path().join(name);
    println!("quicall demo: {SERVERS} servers on loopback, mutual TLS required");
    println!(
        "certificates written to {} and read back from there\n",
        dir.path().display()
    );

    let cluster_ca = read_certs(&file("ca.crt"))?;
    let mut servers = Vec::new();
    for i in 1..=SERVERS {
        let name = format!("server-{i}");
        let tls = ServerTls::new(
            read_certs(&file(&format!("{name}.crt")))?,
            read_key(&file(&format!("{name}.key")))?,
            ClientAuth::Required(cluster_ca.clone()),
        );
        let server = Server::bind(
            "127.0.0.1:0".parse()?,
            tls,
            quicall::demo::router(),
            ServerOptions::default(),
        )?;
        println!("  {name} listening on {}", server.local_addr());
        servers.push(server);
    }

    let good_tls = || -> anyhow::Result<ClientTls> {
        Ok(ClientTls::new(cluster_ca.clone()).with_identity(
            read_certs(&file(&format!("{CLIENT}.crt")))?,
            read_key(&file(&format!("{CLIENT}.key")))?,
        ))
    };

    println!("\nclient \"{CLIENT}\" (certificate from the cluster CA):");
    let mut clients = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let client = Client::connect(
            server.local_addr(),
            "localhost",
            good_tls()?,
            ClientOptions::default(),
        )
        .await
        .with_context(|| format!("connecting to server-{}", i + 1))?;
        let sum = client.call(&ADD, &add_request(2, 3)).await?;
        let text = format!("hello server-{}", i + 1);
        let echo = client.call(&ECHO, text.as_str()).await?;
        let who = client.call(&WHOAMI, "").await?;
        let server_name = client
            .connection()
            .peer()
            .map_or("?", |p| p.name())
            .to_owned();
        println!(
            "  {server_name} at {}: add(2, 3) = {}, echo({text:?}) = {:?}, whoami = {:?}",
            server.local_addr(),
            sum.sum.get(),
            String::from_utf8_lossy(&echo),
            String::from_utf8_lossy(&who),
        );
        ensure!(sum.sum.get() == 5, "add(2, 3) answered {}", sum.sum.get());
        ensure!(&*echo == text.as_bytes(), "echo answered something else");
        ensure!(
            &*who == CLIENT.as_bytes(),
            "the server saw another client name"
        );
        clients.push(client);
    }

    println!("\nclients that must be refused:");
    let rogue = (
        read_certs(&file("rogue-client.crt"))?,
        read_key(&file("rogue-client.key"))?,
    );
    let rogue_ca = read_certs(&file("rogue-ca.crt"))?;
    for server in &servers {
        let attempts: [(&str, ClientTls); 3] = [
            ("no client certificate", ClientTls::new(cluster_ca.clone())),
            (
                "certificate from another CA",
                ClientTls::new(cluster_ca.clone())
                    .with_identity(rogue.0.clone(), rogue.1.clone_key()),
            ),
            ("does not trust the cluster CA", {
                let (chain, key) = (
                    read_certs(&file(&format!("{CLIENT}.crt")))?,
                    read_key(&file(&format!("{CLIENT}.key")))?,
                );
                ClientTls::new(rogue_ca.clone()).with_identity(chain, key)
            }),
        ];
        for (what, tls) in attempts {
            let outcome = async {
                let client = Client::connect(
                    server.local_addr(),
                    "localhost",
                    tls,
                    ClientOptions::default(),
                )
                .await?;
                client.call(&ADD, &add_request(2, 3)).await
            }
            .await;
            match outcome {
                Err(status) if status.code() == Code::Unauthenticated => {
                    println!(
                        "  {} / {what}: refused ({})",
                        server.local_addr(),
                        short(&status.to_string())
                    );
                }
                Err(status) => {
                    bail!("{what}: refused, but with {status} instead of UNAUTHENTICATED")
                }
                Ok(_) => bail!("{what}: the call was answered; it must be refused"),
            }
        }
    }

    println!(
        "\nload: {} calls (add and echo, alternating), {} concurrent callers, spread over the {SERVERS} servers",
        args.calls, args.concurrency
    );
    let (histogram, elapsed) = load(&clients, args.calls, args.concurrency.max(1)).await?;
    println!(
        "  count {}  p50 {}  p99 {}  max {}  ({:.0} calls/s)",
        histogram.len(),
        micros(histogram.value_at_quantile(0.50)),
        micros(histogram.value_at_quantile(0.99)),
        micros(histogram.max()),
        histogram.len() as f64 / elapsed.as_secs_f64(),
    );
    ensure!(
        histogram.len() == args.calls as u64,
        "some calls were not recorded"
    );

    for client in &clients {
        client.close();
    }
    for server in servers {
        server.shutdown(Duration::from_secs(5)).await;
    }
    println!("\ndemo finished: every answer right, every stranger refused");
    Ok(())
}

/// Makes the cluster CA with three servers and one client, and a rogue CA
/// with a client of its own, as PEM files in `dir`.
fn write_certificates(dir: &Path) -> anyhow::Result<()> {
    let validity = Duration::from_secs(86_400);
    let ca = CertificateAuthority::new("quicall demo CA", validity)?;
    ca.write_pem(dir, "ca")?;
    for i in 1..=SERVERS {
        let spec = NodeSpec::server(format!("server-{i}"))
            .san("localhost")
            .san("127.0.0.1")
            .validity(validity);
        ca.issue(&spec)?.write_pem(dir)?;
    }
    ca.issue(&NodeSpec::client(CLIENT).validity(validity))?
        .write_pem(dir)?;
    let rogue = CertificateAuthority::new("rogue CA", validity)?;
    rogue.write_pem(dir, "rogue-ca")?;
    rogue
        .issue(&NodeSpec::client("rogue-client").validity(validity))?
        .write_pem(dir)?;
    Ok(())
}

/// `calls` calls from `concurrency` callers, round-robin over the clients;
/// every latency in microseconds in one histogram.
async fn load(
    clients: &[Client],
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let clients = clients.to_vec();
        let next = next.clone();
        workers.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let payload = [0x5au8; 64];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return Ok::<_, anyhow::Error>(histogram);
                }
                let client = &clients[i % clients.len()];
                let began = Instant::now();
                if i.is_multiple_of(2) {
                    let n = i as i64;
                    let reply = client.call(&ADD, &add_request(n, n)).await?;
                    ensure!(reply.sum.get() == 2 * n, "wrong sum");
                } else {
                    let reply = client.call(&ECHO, &payload[..]).await?;
                    ensure!(reply.len() == payload.len(), "wrong echo");
                }
                histogram.record(began.elapsed().as_micros().max(1) as u64)?;
            }
        });
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(worker) = workers.join_next().await {
        total.add(worker??)?;
    }
    Ok((total, start.elapsed()))
}

fn add_request(a: i64, b: i64) -> AddRequest {
    AddRequest {
        a: I64::new(a),
        b: I64::new(b),
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// The first line of a message, cut to a readable length.
fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    if line.chars().count() > 110 {
        format!("{}…", line.chars().take(110).collect::<String>())
    } else {
        line.to_owned()
    }
}
