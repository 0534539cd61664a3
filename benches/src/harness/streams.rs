//! Streaming calls on loopback, quicall against tonic gRPC with mutual TLS
//! in the same run (`streambench`, and the end of `loadbench`). For a
//! server stream (one request, then N messages) and a bidirectional echo
//! (N messages each way, written by one task while another reads), at each
//! message size: messages per second and each message's latency (from when
//! it was made to when it was read: p50, p99, max). Also quicall's unary
//! calls per second with the smallest size, the figure a stream must beat
//! to amortize per-call cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use quicall::stream;
use quicall::{
    CallOptions, Client, ClientOptions, Limits, Method, Router, Server, ServerOptions, Status,
};

use super::grpc::{self, EchoMessage};
use super::grpc_stream::{self, Produced, parse_produce, produce_request};
use super::stamp;
use super::systems::Pki;

const PRODUCE: Method<[u8], [u8]> = Method::new("bench.Stream/Produce").server_streaming();
const ECHO: Method<[u8], [u8]> = Method::new("bench.Stream/Echo").bidi_streaming();
const UNARY: Method<[u8], [u8]> = Method::new("bench.Stream/Unary");

/// What the streams run measures.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// Stream message sizes in bytes.
    #[arg(
        id = "stream_sizes",
        long = "stream-sizes",
        value_delimiter = ',',
        default_value = "64,16384"
    )]
    pub sizes: Vec<usize>,
    /// Messages per stream for sizes up to 1 KiB.
    #[arg(long, default_value_t = 1_000_000)]
    pub small_messages: u64,
    /// Messages per stream for larger sizes.
    #[arg(long, default_value_t = 100_000)]
    pub large_messages: u64,
    /// Worker threads of the streams' server runtime and of their client's.
    #[arg(id = "stream_threads", long = "stream-threads", default_value_t = 1)]
    pub threads: usize,
    /// Seconds of unary calls (quicall, the smallest size).
    #[arg(long, default_value_t = 2.0)]
    pub unary_secs: f64,
    /// Concurrent callers of the unary run.
    #[arg(long, default_value_t = 32)]
    pub unary_callers: usize,
    /// Skip gRPC in the streams (to profile quicall alone).
    #[arg(long)]
    pub no_grpc: bool,
    /// Only the server streams (to profile one shape).
    #[arg(long)]
    pub server_streams_only: bool,
    /// quicall's echo writer sends its requests with `send_all` over an
    /// iterator (all ready at once, framed together) instead of one `send`
    /// each: more messages/s, and then a queue as long as the windows allow.
    #[arg(long)]
    pub batched_requests: bool,
    /// quicall's per-stream receive window on both sides, in KiB
    /// (`Limits::loopback_stream_receive_window`: default 512 KiB; tonic's
    /// client has 2 MiB, its server 1 MiB).
    #[arg(id = "streams_window_kib", long = "stream-window-kib")]
    pub stream_window_kib: Option<u32>,
    /// Also echo at a paced rate, the same for both systems: this fraction
    /// of the slower one's echo rate in the same run (0: no paced echo).
    /// At full speed a message's latency is the queue in front of the
    /// slowest stage, as long as the windows allow wherever the writer
    /// outruns the echo; paced below both systems' rates, it is what each
    /// system adds to a message.
    #[arg(long, default_value_t = 0.5)]
    pub paced_fraction: f64,
    /// Seconds of each paced echo (its messages: rate x seconds).
    #[arg(long, default_value_t = 2.0)]
    pub paced_secs: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    ServerStream,
    Bidi,
    PacedBidi,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::ServerStream => "server-stream",
            Shape::Bidi => "bidi-echo",
            Shape::PacedBidi => "paced-echo",
        }
    }
}

/// One measured stream.
struct Row {
    system: &'static str,
    shape: &'static str,
    size: usize,
    messages: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the streams, quicall against tonic, on runtimes of their own, and
/// prints a line per stream and the unary figure.
pub fn run(args: StreamArgs) -> anyhow::Result<()> {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .thread_name(name)
            .enable_all()
            .build()
    };
    let servers = runtime("stream-server")?;
    let clients = runtime("stream-client")?;
    clients.block_on(measure(args, servers.handle().clone()))
}

async fn measure(args: StreamArgs, servers: tokio::runtime::Handle) -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let mut limits = Limits::default();
    if let Some(kib) = args.stream_window_kib {
        limits.loopback_stream_receive_window = kib << 10;
    }
    let quicall_server = servers
        .spawn({
            let (tls, limits) = (pki.server_tls(), limits.clone());
            async move { quicall_server(tls, limits) }
        })
        .await??;
    let client = Client::connect(
        quicall_server.local_addr(),
        "localhost",
        pki.client_tls(),
        ClientOptions {
            transport: limits.clone(),
            max_response_size: 64 << 20,
            default_deadline: Some(Duration::from_secs(300)),
            ..ClientOptions::default()
        },
    )
    .await?;
    let grpc_tls = pki.grpc_tls();
    let (grpc_addr, _grpc_task) = servers
        .spawn({
            let tls = pki.grpc_tls();
            async move { grpc_stream::serve(&tls).await.map_err(|e| e.to_string()) }
        })
        .await?
        .map_err(anyhow::Error::msg)?;
    let grpc = grpc::connect(grpc_addr, Some(&grpc_tls)).await?;

    println!(
        "streams on loopback, servers and clients on runtimes of {} worker thread(s) each; \
         latency from a message's making to its reading",
        args.threads
    );
    let mut rows = Vec::new();
    let mut echo_rates = Vec::new();
    for &size in &args.sizes {
        let n = if size <= 1024 {
            args.small_messages
        } else {
            args.large_messages
        };
        for shape in [Shape::ServerStream, Shape::Bidi] {
            if args.server_streams_only && shape != Shape::ServerStream {
                continue;
            }
            let row = match shape {
                Shape::ServerStream => quicall_produce(&client, n, size).await?,
                _ => quicall_echo(&client, n, size, args.batched_requests, None).await?,
            };
            print_row(&row, None);
            if !args.no_grpc {
                let theirs = match shape {
                    Shape::ServerStream => grpc_produce(&grpc, n, size).await?,
                    _ => grpc_echo(&grpc, n, size, None).await?,
                };
                if shape == Shape::Bidi {
                    echo_rates.push(theirs.rate());
                }
                print_row(&theirs, Some(&row));
            }
            if shape == Shape::Bidi {
                echo_rates.push(row.rate());
            }
            rows.push(row);
        }
        let slowest = echo_rates.drain(..).reduce(f64::min);
        if let Some(rate) = slowest
            .map(|r| r * args.paced_fraction)
            .filter(|r| *r >= 1.0)
        {
            let n = (rate * args.paced_secs).max(1.0) as u64;
            println!(
                "paced echo of {size} B: {rate:.0} msgs/s offered to each system ({} x the slower one's), \
                 latency from when a message was due",
                args.paced_fraction
            );
            let row = quicall_echo(&client, n, size, false, Some(rate)).await?;
            print_row(&row, None);
            if !args.no_grpc {
                print_row(&grpc_echo(&grpc, n, size, Some(rate)).await?, Some(&row));
            }
        }
    }
    let size = args.sizes.iter().copied().min().unwrap_or(64);
    let (calls, p99) = unary(&client, size, args.unary_callers, args.unary_secs).await?;
    println!(
        "quicall unary calls of {size} B, {} callers: {calls:.0} calls/s, p99 {:.1} us",
        args.unary_callers,
        p99 as f64 / 1e3
    );
    if let Some(stream) = rows
        .iter()
        .find(|r| r.size == size && r.shape == Shape::ServerStream.name())
    {
        println!(
            "server stream of {size} B messages: {:.1}x quicall's unary calls/s",
            stream.rate() / calls
        );
    }
    drop(client);
    quicall_server.abort();
    Ok(())
}

fn print_row(row: &Row, quicall: Option<&Row>) {
    let q = |q: f64| row.latency.value_at_quantile(q) as f64 / 1e3;
    let ratio = quicall.map_or(String::new(), |quicall| {
        format!("  quicall is {:.2}x its rate", quicall.rate() / row.rate())
    });
    println!(
        "{:<9} {:<13} {:>6} B {:>9} msgs {:>7.2} s {:>11.0} msgs/s {:>8.1} MiB/s  \
         p50 {:>9.1} us  p99 {:>9.1} us  max {:>10.1} us{ratio}",
        row.system,
        row.shape,
        row.size,
        row.messages,
        row.elapsed.as_secs_f64(),
        row.rate(),
        row.rate() * row.size as f64 / (1 << 20) as f64,
        q(0.5),
        q(0.99),
        row.latency.max() as f64 / 1e3,
    );
}

fn quicall_server(tls: quicall::ServerTls, limits: Limits) -> anyhow::Result<Server> {
    let router = Router::new()
        .route_server_stream(&PRODUCE, |_ctx, request| async move {
            let (count, size) = parse_produce(&request);
            let mut produced = Produced::new(count, size);
            Ok::<_, Status>(stream::iter(std::iter::from_fn(move || {
                produced.next_bytes().map(Ok::<_, Status>)
            })))
        })?
        .route_bidi_stream(
            &ECHO,
            |_ctx, requests| async move { Ok::<_, Status>(requests) },
        )?
        .route(
            &UNARY,
            |_ctx, request| async move { Ok::<_, Status>(request) },
        )?;
    let options = ServerOptions {
        transport: limits,
        max_deadline: Duration::from_secs(300),
        ..ServerOptions::default()
    };
    Ok(Server::bind("127.0.0.1:0".parse()?, tls, router, options)?)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// The latency of a message stamped by [`stamp`] when it was made.
fn record(latency: &mut Histogram<u64>, message: &[u8]) {
    if message.len() >= 8 {
        let sent = u64::from_le_bytes(message[..8].try_into().unwrap_or_default());
        let _ = latency.record(stamp().saturating_sub(sent).max(1));
    }
}

async fn quicall_produce(client: &Client, n: u64, size: usize) -> anyhow::Result<Row> {
    let mut latency = histogram();
    let start = Instant::now();
    let mut messages = client
        .server_stream(&PRODUCE, produce_request(n, size), CallOptions::default())
        .await?;
    let mut got = 0u64;
    while let Some(message) = messages.message().await? {
        record(&mut latency, &message);
        got += 1;
    }
    anyhow::ensure!(got == n, "quicall streamed {got} of {n}");
    Ok(Row {
        system: "quicall",
        shape: Shape::ServerStream.name(),
        size,
        messages: n,
        elapsed: start.elapsed(),
        latency,
    })
}

async fn quicall_echo(
    client: &Client,
    n: u64,
    size: usize,
    batched: bool,
    paced: Option<f64>,
) -> anyhow::Result<Row> {
    let mut latency = histogram();
    let start = Instant::now();
    let (mut sink, mut echoes) = client.bidi_stream(&ECHO, CallOptions::default()).await?;
    let writer = tokio::spawn(async move {
        if let Some(rate) = paced {
            let mut pacer = Pacer::new(n, rate);
            while let Some(due) = pacer.next().await {
                sink.send(grpc_stream::stamped_with(size, due)).await?;
            }
        } else if batched {
            // Every request ready at once: framed together, as many as a
            // batch holds, written at once.
            let requests = (0..n).map(|_| grpc_stream::stamped(size));
            sink.send_all(stream::iter(requests)).await?;
        } else {
            for _ in 0..n {
                sink.send(grpc_stream::stamped(size)).await?;
            }
        }
        sink.finish();
        Ok::<_, Status>(())
    });
    let mut got = 0u64;
    while let Some(message) = echoes.message().await? {
        record(&mut latency, &message);
        got += 1;
    }
    writer.await??;
    anyhow::ensure!(got == n, "quicall echoed {got} of {n}");
    Ok(Row {
        system: "quicall",
        shape: shape_of(paced),
        size,
        messages: n,
        elapsed: start.elapsed(),
        latency,
    })
}

async fn grpc_produce(
    grpc: &tonic::client::Grpc<tonic::transport::Channel>,
    n: u64,
    size: usize,
) -> anyhow::Result<Row> {
    let mut grpc = grpc.clone();
    let mut latency = histogram();
    let start = Instant::now();
    grpc.ready().await?;
    let response = grpc
        .server_streaming(
            tonic::Request::new(EchoMessage {
                data: produce_request(n, size),
            }),
            http::uri::PathAndQuery::from_static(grpc_stream::PRODUCE),
            tonic_prost::ProstCodec::<EchoMessage, EchoMessage>::default(),
        )
        .await?;
    let mut messages = response.into_inner();
    let mut got = 0u64;
    while let Some(message) = messages.message().await? {
        record(&mut latency, &message.data);
        got += 1;
    }
    anyhow::ensure!(got == n, "gRPC streamed {got} of {n}");
    Ok(Row {
        system: "grpc-tls",
        shape: Shape::ServerStream.name(),
        size,
        messages: n,
        elapsed: start.elapsed(),
        latency,
    })
}

async fn grpc_echo(
    grpc: &tonic::client::Grpc<tonic::transport::Channel>,
    n: u64,
    size: usize,
    paced: Option<f64>,
) -> anyhow::Result<Row> {
    let mut grpc = grpc.clone();
    let mut latency = histogram();
    let start = Instant::now();
    // Requests through a small channel: the writer waits, as quicall's
    // does, when the transport does not take them.
    let (requests, outgoing) = stream::channel::<EchoMessage>(16);
    let writer = tokio::spawn(async move {
        let mut pacer = paced.map(|rate| Pacer::new(n, rate));
        for _ in 0..n {
            let data = match &mut pacer {
                Some(pacer) => match pacer.next().await {
                    Some(due) => grpc_stream::stamped_with(size, due),
                    None => break,
                },
                None => grpc_stream::stamped(size),
            };
            if requests.send(EchoMessage { data }).await.is_err() {
                break;
            }
        }
    });
    grpc.ready().await?;
    let response = grpc
        .streaming(
            tonic::Request::new(outgoing),
            http::uri::PathAndQuery::from_static(grpc_stream::ECHO),
            tonic_prost::ProstCodec::<EchoMessage, EchoMessage>::default(),
        )
        .await?;
    let mut echoes = response.into_inner();
    let mut got = 0u64;
    while let Some(message) = echoes.message().await? {
        record(&mut latency, &message.data);
        got += 1;
    }
    writer.await?;
    anyhow::ensure!(got == n, "gRPC echoed {got} of {n}");
    Ok(Row {
        system: "grpc-tls",
        shape: shape_of(paced),
        size,
        messages: n,
        elapsed: start.elapsed(),
        latency,
    })
}

fn shape_of(paced: Option<f64>) -> &'static str {
    match paced {
        Some(_) => Shape::PacedBidi.name(),
        None => Shape::Bidi.name(),
    }
}

/// When each of `n` messages offered at `rate` a second is due, as a
/// [`stamp`]. Message `i` is due at `i / rate` after the first; the writer
/// sleeps until then when it is early, and tokio's timer wakes it up to a
/// millisecond late, so a message that fell due while the writer slept is
/// stamped with the waking (the benchmark's timer is not the system's
/// latency), and one that fell due while the writer was sending (a send
/// held back by flow control, or the messages before it) with its due time,
/// so that wait counts (no coordinated omission).
struct Pacer {
    start: Instant,
    n: u64,
    rate: f64,
    given: u64,
    woke: Instant,
}

impl Pacer {
    fn new(n: u64, rate: f64) -> Self {
        let start = Instant::now();
        Pacer {
            start,
            n,
            rate,
            given: 0,
            woke: start,
        }
    }

    async fn next(&mut self) -> Option<u64> {
        if self.given == self.n {
            return None;
        }
        let due = self.start + Duration::from_secs_f64(self.given as f64 / self.rate);
        self.given += 1;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            self.woke = Instant::now();
        }
        Some(super::stamp_at(due.max(self.woke)))
    }
}

/// Unary calls of `size` bytes by `callers` concurrent callers for
/// `secs`: calls per second and p99 in nanoseconds.
async fn unary(
    client: &Client,
    size: usize,
    callers: usize,
    secs: f64,
) -> anyhow::Result<(f64, u64)> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let payload = Bytes::from(vec![7u8; size]);
    let total = Arc::new(std::sync::Mutex::new(histogram()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, payload, total) = (client.clone(), payload.clone(), total.clone());
        tasks.spawn(async move {
            let mut latency = histogram();
            while Instant::now() < end {
                let began = Instant::now();
                client.call(&UNARY, payload.clone()).await?;
                let _ = latency.record(began.elapsed().as_nanos() as u64);
            }
            total
                .lock()
                .map_err(|_| Status::internal("poisoned"))?
                .add(&latency)
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok::<_, Status>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a caller panicked")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = total.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok((total.len() as f64 / elapsed, total.value_at_quantile(0.99)))
}
