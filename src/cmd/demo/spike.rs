//! Part three of the demo: a load spike. Three servers whose calls cost
//! CPU (each server on one core of its own) take an open-loop load of five
//! times what they can do, once with the fixed limits alone and once with
//! adaptive admission; the table shows goodput, the share shed and the p99
//! of the calls answered (latency counted from when each call was due, so
//! that a stalled sender does not hide a queue).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicall::certs::{read_certs, read_key};
use quicall::rpc::admission::Adaptive;
use quicall::{
    CallOptions, ClientAuth, ClientTls, Cluster, ClusterOptions, Code, Discovery, Method, Router,
    Server, ServerOptions, ServerTls, Status,
};
use tokio::time::Instant;

use super::{CLIENT, fmt_latency};

/// Burns [`COST`] of CPU, then answers.
const SPIN: Method<[u8], [u8]> = Method::new("demo.Load/Spin").idempotent();
/// CPU a call costs its server.
const COST: Duration = Duration::from_millis(1);
/// Offered load during the spike, in multiples of the measured capacity.
const SPIKE: f64 = 5.0;

/// One server on a thread of its own (a one-worker runtime: one core),
/// stopped when dropped.
struct CoreServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    gauges: Arc<Mutex<quicall::Gauges>>,
}

impl CoreServer {
    fn start(dir: &Path, name: &str, admission: Option<Adaptive>) -> anyhow::Result<Self> {
        let tls = ServerTls::new(
            read_certs(&dir.join(format!("{name}.crt")))?,
            read_key(&dir.join(format!("{name}.key")))?,
            ClientAuth::Required(read_certs(&dir.join("ca.crt"))?),
        );
        let router = Router::new().route(&SPIN, |_ctx, _req: quicall::Msg<[u8]>| async move {
            let start = std::time::Instant::now();
            while start.elapsed() < COST {
                std::hint::spin_loop();
            }
            Ok::<_, Status>(&b"ok"[..])
        })?;
        let options = ServerOptions {
            admission,
            ..ServerOptions::default()
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gauges = Arc::new(Mutex::new(quicall::Gauges::default()));
        let last = gauges.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let server =
                    match Server::bind("127.0.0.1:0".parse().unwrap(), tls, router, options) {
                        Ok(server) => server,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                            return;
                        }
                    };
                let _ = addr_tx.send(Ok(server.local_addr()));
                let _ = stopped.await;
                *last.lock().unwrap() = server.gauges();
            });
        });
        let addr = addr_rx.recv()??;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            gauges,
        })
    }

    /// Stops the server; its gauges at the end.
    fn stop(mut self) -> quicall::Gauges {
        self.halt();
        *self.gauges.lock().unwrap()
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CoreServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How the calls of one run ended.
#[derive(Default)]
struct Outcomes {
    /// Latencies of the calls answered, from when each was due.
    answered: Vec<Duration>,
    shed: u64,
    /// Calls that ran out of time, or failed otherwise.
    failed: u64,
}

impl Outcomes {
    fn p99(&mut self) -> Option<Duration> {
        self.answered.sort_unstable();
        let n = self.answered.len();
        (n > 0).then(|| self.answered[(n * 99 / 100).min(n - 1)])
    }
}

async fn cluster(dir: &Path, servers: &[CoreServer]) -> anyhow::Result<Cluster> {
    let tls = ClientTls::new(read_certs(&dir.join("ca.crt"))?).with_identity(
        read_certs(&dir.join(format!("{CLIENT}.crt")))?,
        read_key(&dir.join(format!("{CLIENT}.key")))?,
    );
    let list = servers
        .iter()
        .map(|s| (s.addr.to_string(), "localhost".to_string()));
    Ok(Cluster::new(Discovery::fixed(list), tls, ClusterOptions::default()).await?)
}

/// Calls at `rate` a second for `length`, each sent when due whatever the
/// others are doing (an open loop), with a 1 s deadline.
async fn open_loop(cluster: &Cluster, rate: f64, length: Duration) -> Outcomes {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let total = (length.as_secs_f64() * rate) as u64;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due).await;
        let (cluster, outcomes) = (cluster.clone(), outcomes.clone());
        calls.spawn(async move {
            let options = CallOptions::deadline(Duration::from_secs(1));
            let result = cluster.call_with(&SPIN, &b"x"[..], options).await;
            let mut outcomes = outcomes.lock().unwrap();
            match result {
                Ok(_) => outcomes.answered.push(due.elapsed()),
                Err(s) if s.code() == Code::ResourceExhausted && s.was_not_processed() => {
                    outcomes.shed += 1
                }
                Err(_) => outcomes.failed += 1,
            }
        });
    }
    while calls.join_next().await.is_some() {}
    Arc::try_unwrap(outcomes)
        .ok()
        .expect("every call has ended")
        .into_inner()
        .unwrap()
}

/// Callers calling back to back for `length`: what the servers finish.
async fn capacity(cluster: &Cluster, length: Duration) -> f64 {
    let end = Instant::now() + length;
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let cluster = cluster.clone();
        callers.spawn(async move {
            let mut ok = 0u64;
            while Instant::now() < end {
                ok += u64::from(cluster.call(&SPIN, &b"x"[..]).await.is_ok());
            }
            ok
        });
    }
    let answered: u64 = callers.join_all().await.into_iter().sum();
    answered as f64 / length.as_secs_f64()
}

fn start_three(dir: &Path, admission: Option<Adaptive>) -> anyhow::Result<Vec<CoreServer>> {
    (1..=3)
        .map(|i| CoreServer::start(dir, &format!("server-{i}"), admission))
        .collect()
}

pub async fn run(dir: &Path, phase: Duration) -> anyhow::Result<()> {
    println!(
        "\n6. load spike: three servers, each on one core of its own, every call {} of CPU; \
         an open loop offers {SPIKE}x what they finish",
        fmt_latency(Some(COST))
    );
    // The cluster's capacity and its unloaded latency, fixed limits.
    let servers = start_three(dir, None)?;
    let client = cluster(dir, &servers).await?;
    let measured = capacity(&client, phase).await;
    let mut unloaded = open_loop(&client, measured * 0.3, phase).await;
    client.close();
    drop(servers);
    println!(
        "   capacity (24 callers back to back): {measured:.0} calls/s; \
         p99 unloaded (30% of it): {}",
        fmt_latency(unloaded.p99())
    );
    println!(
        "   {:<9} {:>10} {:>10} {:>9} {:>7} {:>10} {:>13} {:>13} {:>6}",
        "admission",
        "offered/s",
        "goodput/s",
        "capacity",
        "shed",
        "by client",
        "p99 answered",
        "timed out",
        "limit"
    );
    let offered = measured * SPIKE;
    for (name, admission) in [
        ("fixed", None),
        (
            "adaptive",
            Some(Adaptive {
                min_limit: 1,
                initial_limit: 1,
                ..Adaptive::default()
            }),
        ),
    ] {
        let servers = start_three(dir, admission)?;
        let client = cluster(dir, &servers).await?;
        let mut spike = open_loop(&client, offered, phase).await;
        let throttled = client.snapshot().total.throttled;
        client.close();
        let limits: Vec<String> = servers
            .into_iter()
            .map(|s| {
                s.stop()
                    .concurrency_limit
                    .map_or("-".into(), |l| l.to_string())
            })
            .collect();
        let calls = spike.answered.len() as u64 + spike.shed + spike.failed;
        let goodput = spike.answered.len() as f64 / phase.as_secs_f64();
        println!(
            "   {:<9} {:>10.0} {:>10.0} {:>8.0}% {:>6.1}% {:>9.1}% {:>13} {:>13} {:>6}",
            name,
            offered,
            goodput,
            100.0 * goodput / measured,
            100.0 * spike.shed as f64 / calls.max(1) as f64,
            100.0 * throttled as f64 / calls.max(1) as f64,
            fmt_latency(spike.p99()),
            spike.failed,
            limits.join("/"),
        );
    }
    println!(
        "   (fixed: every call admitted, queued behind the CPU until deadlines pass; adaptive: \
         each server learns how many calls it finishes without a queue and refuses the rest at \
         once, not processed; \"by client\": calls the client refused itself, unsent, while its \
         servers shed more than half of what it sent)"
    );
    Ok(())
}
