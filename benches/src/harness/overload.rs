//! The overload benchmark's parts: servers whose calls cost CPU, each on a
//! thread and a one-worker runtime of its own (one core: its capacity is
//! one call at a time), clients over three of them, and an open loop that
//! counts how each call ended.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use quicall::rpc::admission::Adaptive;
use quicall::{CallOptions, Cluster, ClusterOptions, Code, Discovery, Method, Router, Status};
use tokio::time::Instant;

use super::grpc::{EchoService, GrpcClient, GrpcTls};
use super::run::{new_histogram, record};
use super::systems::Pki;

/// The method of the quicall servers: burns the server's cost, answers.
const SPIN: Method<[u8], [u8]> = Method::new("bench.Load/Spin").idempotent();

/// What serves the calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contender {
    /// quicall with its fixed limits only (1,024 calls in flight).
    QuicallFixed,
    /// quicall with adaptive admission (and the cluster client's throttle,
    /// on by default).
    QuicallAdaptive,
    /// quicall with adaptive admission, the client's throttle off.
    QuicallUnthrottled,
    /// tonic with `concurrency_limit_per_connection(n)` and `load_shed`.
    Tonic(usize),
}

impl Contender {
    pub fn name(self) -> String {
        match self {
            Contender::QuicallFixed => "quicall fixed".into(),
            Contender::QuicallAdaptive => "quicall adaptive".into(),
            Contender::QuicallUnthrottled => "quicall adaptive, no throttle".into(),
            Contender::Tonic(n) => format!("tonic limit {n} + load_shed"),
        }
    }
}

/// One server on a thread of its own, stopped when dropped.
pub struct CoreServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CoreServer {
    /// Runs `start` on a new thread's one-worker runtime; what it returns
    /// (the server) lives until the server is stopped.
    fn on_core<F, Fut, G>(start: F) -> anyhow::Result<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<(SocketAddr, G)>>,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                match start().await {
                    Ok((addr, server)) => {
                        let _ = addr_tx.send(Ok(addr));
                        let _ = stopped.await;
                        drop(server);
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(e));
                    }
                }
            });
        });
        let addr = addr_rx.recv()??;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A server of `contender` whose calls cost `cost` of CPU.
    pub fn start(contender: Contender, pki: &Pki, cost: Duration) -> anyhow::Result<Self> {
        match contender {
            Contender::Tonic(limit) => {
                let tls = pki.grpc_tls();
                Self::on_core(move || async move {
                    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
                    let service = EchoService { cost };
                    let (addr, task) =
                        super::grpc::serve_with(Some(&tls), ip, service, Some(limit)).await?;
                    Ok((addr, AbortOnDrop(task)))
                })
            }
            quicall => {
                let tls = pki.server_tls();
                let admission = (quicall != Contender::QuicallFixed).then(|| Adaptive {
                    // One worker: one call at a time.
                    min_limit: 1,
                    initial_limit: 1,
                    ..Adaptive::default()
                });
                Self::on_core(move || async move {
                    let router =
                        Router::new().route(&SPIN, move |_ctx, req: quicall::Msg<[u8]>| {
                            super::spin(cost);
                            let len = req.len();
                            async move { Ok::<_, Status>(vec![0u8; len]) }
                        })?;
                    let options = quicall::ServerOptions {
                        admission,
                        ..quicall::ServerOptions::default()
                    };
                    let server =
                        quicall::Server::bind("127.0.0.1:0".parse()?, tls, router, options)?;
                    Ok((server.local_addr(), server))
                })
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for CoreServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ended {
    Answered,
    /// Refused for overload (RESOURCE_EXHAUSTED).
    Shed,
    /// Ran out of time, or failed otherwise.
    Failed,
}

/// A client of the three servers: quicall's cluster client (its defaults:
/// power of two choices by peak EWMA, shed calls retried elsewhere within
/// the retry budget), or tonic connections chosen by power of two choices
/// on calls in flight (tower's p2c load; tonic retries nothing).
#[derive(Clone)]
pub enum Caller {
    Quicall(Cluster),
    Tonic(Arc<Vec<(GrpcClient, AtomicUsize)>>),
}

/// Every call's deadline.
pub const DEADLINE: Duration = Duration::from_secs(1);

impl Caller {
    /// A client of `servers`; quicall's is a cluster client with
    /// `options` (its throttle off for [`Contender::QuicallUnthrottled`]).
    pub async fn connect(
        contender: Contender,
        pki: &Pki,
        servers: &[CoreServer],
        options: ClusterOptions,
    ) -> anyhow::Result<Self> {
        Ok(match contender {
            Contender::Tonic(_) => {
                let tls: GrpcTls = pki.grpc_tls();
                let mut clients = Vec::new();
                for s in servers {
                    clients.push((
                        GrpcClient::connect(s.addr, Some(&tls)).await?,
                        AtomicUsize::new(0),
                    ));
                }
                Caller::Tonic(Arc::new(clients))
            }
            _ => {
                let list = servers
                    .iter()
                    .map(|s| (s.addr.to_string(), "localhost".to_string()));
                let options = ClusterOptions {
                    throttle: options
                        .throttle
                        .filter(|_| contender != Contender::QuicallUnthrottled),
                    ..options
                };
                let cluster =
                    Cluster::new(Discovery::fixed(list), pki.client_tls(), options).await?;
                Caller::Quicall(cluster)
            }
        })
    }

    pub async fn call(&self, payload: &Bytes) -> Ended {
        match self {
            Caller::Quicall(cluster) => {
                let options = CallOptions::deadline(DEADLINE);
                match cluster.call_with(&SPIN, &payload[..], options).await {
                    Ok(_) => Ended::Answered,
                    Err(s) if s.code() == Code::ResourceExhausted => Ended::Shed,
                    Err(_) => Ended::Failed,
                }
            }
            Caller::Tonic(clients) => {
                let (a, b) = (
                    fastrand::usize(..clients.len()),
                    fastrand::usize(..clients.len()),
                );
                let load = |i: usize| clients[i].1.load(Ordering::Relaxed);
                let (client, in_flight) = &clients[if load(a) <= load(b) { a } else { b }];
                in_flight.fetch_add(1, Ordering::Relaxed);
                let result = tokio::time::timeout(DEADLINE, client.echo(payload.clone())).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                match result {
                    Ok(Ok(_)) => Ended::Answered,
                    Ok(Err(e))
                        if e.downcast_ref::<tonic::Status>()
                            .is_some_and(|s| s.code() == tonic::Code::ResourceExhausted) =>
                    {
                        Ended::Shed
                    }
                    _ => Ended::Failed,
                }
            }
        }
    }
}

/// What an open-loop run saw.
pub struct Tally {
    /// Latency of the answered calls, from when each was due, in µs.
    pub answered: Histogram<u64>,
    pub shed: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

impl Tally {
    pub fn calls(&self) -> u64 {
        self.answered.len() + self.shed + self.failed
    }
    pub fn goodput(&self) -> f64 {
        self.answered.len() as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p_us(&self, q: f64) -> u64 {
        self.answered.value_at_quantile(q)
    }
}

/// Calls due at `rate` a second for `length`, each sent when due whatever
/// the others are doing (an open loop: latency counts from when a call was
/// due, so a client that falls behind is charged for it).
pub async fn open_loop(caller: &Caller, rate: f64, length: Duration, payload: &Bytes) -> Tally {
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let total = (length.as_secs_f64() * rate) as u64;
    let mut calls = tokio::task::JoinSet::new();
    let mut tally = Tally {
        answered: new_histogram(),
        shed: 0,
        failed: 0,
        elapsed: length,
    };
    let count = |tally: &mut Tally, (ended, latency): (Ended, Duration)| match ended {
        Ended::Answered => record(&mut tally.answered, latency),
        Ended::Shed => tally.shed += 1,
        Ended::Failed => tally.failed += 1,
    };
    for i in 0..total {
        let due = start + gap.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let (caller, payload) = (caller.clone(), payload.clone());
        calls.spawn(async move { (caller.call(&payload).await, due.elapsed()) });
        while let Some(done) = calls.try_join_next() {
            count(&mut tally, done.expect("a call task"));
        }
    }
    while let Some(done) = calls.join_next().await {
        count(&mut tally, done.expect("a call task"));
    }
    tally
}

/// `callers` calling back to back for `length`: the calls answered a second.
pub async fn capacity(caller: &Caller, callers: usize, length: Duration, payload: &Bytes) -> f64 {
    let end = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (caller, payload) = (caller.clone(), payload.clone());
        tasks.spawn(async move {
            let mut answered = 0u64;
            while Instant::now() < end {
                answered += u64::from(caller.call(&payload).await == Ended::Answered);
            }
            answered
        });
    }
    let answered: u64 = tasks.join_all().await.into_iter().sum();
    answered as f64 / length.as_secs_f64()
}
