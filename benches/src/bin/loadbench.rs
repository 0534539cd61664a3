//! The echo load benchmark: quicall, raw quinn and tonic gRPC side by side over
//! loopback, closed loop over a matrix of payloads and concurrencies, then an
//! open-loop rate sweep; a table, JSON lines and `.hgrm` files; then the
//! streams, quicall against tonic (server stream and bidirectional echo,
//! see `quicall_benches::harness::streams`).
//!
//! ```text
//! cargo run --release -p quicall-benches --bin loadbench            # the default matrix
//! cargo run --release -p quicall-benches --bin loadbench -- --secs 1 --payloads 64 --concurrency 1,16 --no-streams
//! ```

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use quicall::Limits;
use quicall_benches::harness::output::{self, Row};
use quicall_benches::harness::streams::StreamArgs;
use quicall_benches::harness::systems::Pki;
use quicall_benches::harness::tuning::QuicTuning;
use quicall_benches::harness::{
    Echo, Outcome, System, Workload, closed_loop, first_calls, open_loop,
};

#[derive(Parser)]
#[command(about = "quicall against raw quinn and gRPC: an echo benchmark over loopback")]
struct Args {
    /// Systems to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "quicall,raw-quinn,grpc-tls,grpc-plain,tarpc"
    )]
    systems: Vec<System>,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,16384,1048576")]
    payloads: Vec<usize>,
    /// Concurrent callers (closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    concurrency: Vec<usize>,
    /// Concurrency for payloads of 1 MiB and more, instead of --concurrency.
    #[arg(long, default_value_t = 4)]
    big_concurrency: usize,
    /// Seconds per cell and round.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Rounds per cell: the systems take turns, and each system's median
    /// round (by calls/s) is reported, so that a noisy moment on a shared
    /// machine does not decide a ratio.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Skip the open-loop sweep.
    #[arg(long)]
    closed_only: bool,
    /// Open loop: payload of the sweep.
    #[arg(long, default_value_t = 64)]
    open_payload: usize,
    /// Open loop: rates to try (calls/s), in increasing order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,5000,10000,20000,40000"
    )]
    rates: Vec<f64>,
    /// Open loop: the p99 bound (ms) a rate must meet.
    #[arg(long, default_value_t = 10.0)]
    p99_bound_ms: f64,
    /// Worker threads of each runtime (see --layout).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Thread layout: `split` runs the servers on a runtime of their own and
    /// the clients on another, each with --threads workers, as two processes
    /// on one machine would; `shared` runs both on one runtime.
    #[arg(long, default_value = "split")]
    layout: Layout,
    /// Largest UDP payload for the QUIC systems' path MTU discovery towards
    /// a peer on a network (`Limits::max_mtu`; with --connect to another
    /// host).
    #[arg(long, default_value_t = Limits::default().max_mtu)]
    max_mtu: u16,
    /// The same towards a loopback peer (`Limits::loopback_mtu`): the
    /// in-process servers, or --connect to a loopback address. Loopback
    /// carries up to 65,507; above 6,500 segmentation offload is turned off.
    #[arg(long, default_value_t = Limits::default().loopback_mtu)]
    loopback_mtu: u16,
    /// Bytes a peer on the network may send on one stream before it is
    /// read (`Limits::stream_receive_window`): --connect to a non-loopback
    /// address.
    #[arg(long, default_value_t = Limits::default().stream_receive_window)]
    stream_window: u32,
    /// The same towards a loopback peer, as in-process servers are
    /// (`Limits::loopback_stream_receive_window`).
    #[arg(long, default_value_t = Limits::default().loopback_stream_receive_window)]
    loopback_stream_window: u32,
    /// Bytes a peer may send on a connection before they are read
    /// (`Limits::receive_window`).
    #[arg(long, default_value_t = Limits::default().receive_window)]
    receive_window: u32,
    /// Unacknowledged bytes in flight per connection (`Limits::send_window`).
    #[arg(long, default_value_t = Limits::default().send_window)]
    send_window: u64,
    /// Ask the peer to acknowledge every N packets (QUIC ACK frequency).
    #[arg(long)]
    ack_every: Option<u32>,
    #[command(flatten)]
    tuning: QuicTuning,
    /// Measure a quicall server in another process or on another host
    /// (`quicall serve`) instead of in-process servers: its address
    /// (host:port). Only the quicall system runs then; needs --ca, --cert
    /// and --key (the files `quicall certs` wrote).
    #[arg(long, requires_all = ["ca", "cert", "key"])]
    connect: Option<String>,
    /// With --connect: the name the server's certificate carries.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// With --connect: the CA certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// With --connect: this client's certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// With --connect: this client's key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Where to write results.jsonl and the .hgrm files.
    #[arg(long, default_value = "target/loadbench")]
    out: PathBuf,
    /// Skip the streams at the end.
    #[arg(long)]
    no_streams: bool,
    /// Instead of the closed loop: this many first calls per system and
    /// payload, one after another, each on a new connection (its handshake
    /// and one call; the QUIC systems' from one client endpoint), as a
    /// caller meets a new or restarted server. Prints p50 / p90 / p99 / max.
    #[arg(long, conflicts_with = "connect")]
    first_calls: Option<usize>,
    /// Run the servers and the clients on two hosts of a network lab
    /// (network namespaces joined by a router, each with its own address;
    /// needs root and nftables), the router dropping this percentage of
    /// every packet, both ways. Split layout only; the streams are skipped.
    #[arg(long, conflicts_with = "connect")]
    loss_pct: Option<f64>,
    /// In the network lab (as --loss-pct), a rate limit on what each host
    /// receives, in Mbit/s.
    #[arg(long, conflicts_with = "connect")]
    rate_mbit: Option<u64>,
    /// In the network lab (as --loss-pct), a round trip added between the
    /// hosts, in ms (half on each host's packets; see `netbench` for the
    /// whole matrix of loss and delay).
    #[arg(long, conflicts_with = "connect")]
    rtt_ms: Option<f64>,
    /// In the network lab, jitter on each host's packets, in ms.
    #[arg(long, conflicts_with = "connect")]
    jitter_ms: Option<f64>,
    #[command(flatten)]
    streams: StreamArgs,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.connect.is_some() {
        args.systems = vec![System::Quicall];
    }
    let lab = lab(&args)?;
    let host = |name: &str| lab.as_ref().map(|lab| lab.host(name).clone());
    if let Some(client) = host("client") {
        // This thread runs the clients' future (`block_on`): it calls from
        // the client's host too.
        client.enter()?;
    }
    let runtime = |name: &str| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(args.threads.max(1))
            .thread_name(name)
            .enable_all();
        if let Some(host) = host(name) {
            builder.on_thread_start(move || {
                if let Err(e) = host.enter() {
                    panic!("{e}");
                }
            });
        }
        builder.build()
    };
    let clients = runtime("client")?;
    let servers = match args.layout {
        Layout::Split => Some(runtime("server")?),
        Layout::Shared => None,
    };
    let server_handle = servers.as_ref().map(|rt| rt.handle().clone());
    let server_ip = host("server").map_or(IpAddr::from([127, 0, 0, 1]), |h| h.addr().into());
    let streams =
        (!args.no_streams && args.connect.is_none() && args.first_calls.is_none() && lab.is_none())
            .then(|| args.streams.clone());
    clients.block_on(run(args, (server_handle, server_ip)))?;
    drop((clients, servers));
    if let Some(lab) = &lab {
        for host in lab.hosts() {
            let (received, dropped) = host.received_and_dropped()?;
            println!(
                "lab: {} was sent {received} packets through the hub, {dropped} of them lost ({:.2}%)",
                host.name(),
                100.0 * dropped as f64 / received.max(1) as f64
            );
        }
    }
    match streams {
        Some(streams) => {
            println!();
            quicall_benches::harness::streams::run(streams)
        }
        None => Ok(()),
    }
}

/// The network lab of --loss-pct and --rate-mbit: a server host and a
/// client host.
fn lab(args: &Args) -> anyhow::Result<Option<quicall_netlab::Lab>> {
    if args.loss_pct.is_none()
        && args.rate_mbit.is_none()
        && args.rtt_ms.is_none()
        && args.jitter_ms.is_none()
    {
        return Ok(None);
    }
    anyhow::ensure!(
        args.layout == Layout::Split,
        "the network lab needs --layout split (a runtime per host)"
    );
    let path = quicall_netlab::Path {
        loss: args.loss_pct.unwrap_or(0.0) / 100.0,
        rate_bps: args.rate_mbit.map(|m| m * 1_000_000),
        delay: Duration::from_secs_f64(args.rtt_ms.unwrap_or(0.0).max(0.0) / 2000.0),
        jitter: Duration::from_secs_f64(args.jitter_ms.unwrap_or(0.0).max(0.0) / 1000.0),
    };
    Ok(Some(quicall_netlab::Lab::new(&["server", "client"], path)?))
}

/// Where the servers' tasks run relative to the clients'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Layout {
    /// A runtime for the servers and another for the clients.
    Split,
    /// One runtime for both.
    Shared,
}

async fn run(
    args: Args,
    (servers, server_ip): (Option<tokio::runtime::Handle>, IpAddr),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut jsonl = std::fs::File::create(args.out.join("results.jsonl"))?;
    let pki = Pki::new()?;
    let limits = args.tuning.apply(Limits {
        max_mtu: args.max_mtu,
        loopback_mtu: args.loopback_mtu,
        stream_receive_window: args.stream_window,
        loopback_stream_receive_window: args.loopback_stream_window,
        receive_window: args.receive_window,
        send_window: args.send_window,
        ack_every: args.ack_every,
        ..Limits::default()
    });
    let secs = Duration::from_secs_f64(args.secs.clamp(0.05, 60.0));
    // The run's settings, repeated on every JSON line.
    let settings = format!(
        "\"settings\":{{\"layout\":\"{}\",\"threads\":{},\"secs\":{},\"rounds\":{},\"max_mtu\":{},\"loopback_mtu\":{},\"stream_window\":{},\"receive_window\":{},\"send_window\":{},\"congestion\":\"{}\",\"ack_every\":{}}}",
        format!("{:?}", args.layout).to_lowercase(),
        args.threads,
        secs.as_secs_f64(),
        args.rounds.max(1),
        limits.max_mtu,
        limits.loopback_mtu,
        limits.stream_window_towards(server_ip),
        limits.receive_window,
        limits.send_window,
        format!("{:?}", limits.congestion_towards(server_ip)).to_lowercase(),
        limits
            .ack_every
            .map_or("null".to_string(), |n| n.to_string()),
    );
    let cells: Vec<Workload> = args
        .payloads
        .iter()
        .flat_map(|&payload| {
            let conc = if payload >= 1 << 20 {
                vec![args.big_concurrency]
            } else {
                args.concurrency.clone()
            };
            conc.into_iter().map(move |concurrency| Workload {
                payload,
                concurrency,
            })
        })
        .collect();
    let total = cells.len() * args.systems.len()
        + if args.closed_only {
            0
        } else {
            args.systems.len()
        };
    if let Some(count) = args.first_calls {
        println!(
            "first calls, {count} per cell, each on a new connection: p50 / p90 / p99 / max ms (answered, failed)"
        );
        for &payload in &args.payloads {
            let data = bytes::Bytes::from(vec![7u8; payload]);
            for &system in &args.systems {
                let echo =
                    start(&args, system, &pki, &limits, (servers.as_ref(), server_ip)).await?;
                let firsts = first_calls(&echo, &pki, &limits, &data, count).await;
                println!("| {} | {system} | {firsts} |", output::size(payload));
            }
        }
        return Ok(());
    }
    let started = Instant::now();
    let mut done = 0;
    let lab = if server_ip.is_loopback() {
        String::new()
    } else {
        format!(
            "in a network lab (server {server_ip}, a host of its own; loss {}%, round trip added {} ms, jitter {} ms, rate {}), ",
            args.loss_pct.unwrap_or(0.0),
            args.rtt_ms.unwrap_or(0.0),
            args.jitter_ms.unwrap_or(0.0),
            args.rate_mbit
                .map_or("unlimited".to_string(), |m| format!("{m} Mbit/s"))
        )
    };
    let place = match &args.connect {
        Some(target) => format!("against {target} (client CPU only)"),
        None if !lab.is_empty() => format!(
            "{lab}servers and clients on runtimes of {} worker threads each",
            args.threads
        ),
        None => match args.layout {
            Layout::Split => format!(
                "on loopback, servers and clients on runtimes of {} worker threads each",
                args.threads
            ),
            Layout::Shared => format!(
                "on loopback, servers and clients on one runtime of {} worker threads",
                args.threads
            ),
        },
    };
    println!(
        "closed loop, {} rounds of {:.1} s per cell (each system's median round), mutual TLS {place}",
        rounds_shown(&args),
        secs.as_secs_f64(),
    );
    println!("{}", output::header());
    let rounds = args.rounds.max(1);
    // Target 3 counts every round, not only the medians shown.
    let drops_before = quicall_benches::harness::run::udp_rcvbuf_errors();
    let mut lost: Vec<(System, u64)> = args.systems.iter().map(|&s| (s, 0)).collect();
    let mut count_lost = |system: System, outcome: &Outcome| {
        if let Some(entry) = lost.iter_mut().find(|(s, _)| *s == system) {
            entry.1 += outcome.lost_packets.unwrap_or(0);
        }
    };
    for cell in &cells {
        // Every system's outcomes over the rounds; the systems take turns.
        let mut results: Vec<(System, Vec<Outcome>)> =
            args.systems.iter().map(|&s| (s, Vec::new())).collect();
        for round in 0..rounds {
            for k in 0..results.len() {
                let k = (k + round) % results.len();
                let system = results[k].0;
                progress(
                    done,
                    total,
                    started,
                    &format!(
                        "{system} {}B x {} round {}",
                        cell.payload,
                        cell.concurrency,
                        round + 1
                    ),
                );
                let echo = Arc::new(
                    start(&args, system, &pki, &limits, (servers.as_ref(), server_ip)).await?,
                );
                let outcome = closed_loop(echo, *cell, secs).await;
                count_lost(system, &outcome);
                results[k].1.push(outcome);
            }
        }
        done += args.systems.len();
        clear_progress();
        let medians: Vec<(System, Outcome, Vec<f64>)> = results
            .into_iter()
            .map(|(system, mut outcomes)| {
                let all: Vec<f64> = outcomes.iter().map(Outcome::calls_per_sec).collect();
                outcomes.sort_by(|a, b| a.calls_per_sec().total_cmp(&b.calls_per_sec()));
                let median = outcomes.swap_remove(outcomes.len() / 2);
                (system, median, all)
            })
            .collect();
        let quicall_outcome = medians
            .iter()
            .find(|(s, _, _)| *s == System::Quicall)
            .map(|(_, o, _)| o);
        let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = medians
            .iter()
            .map(|(system, outcome, _)| (system.name(), &outcome.histogram))
            .collect();
        output::write_svg(
            &args.out.join(format!(
                "closed-{}B-c{}.svg",
                cell.payload, cell.concurrency
            )),
            &format!(
                "echo {} B, {} callers, closed loop",
                cell.payload, cell.concurrency
            ),
            &series,
        )?;
        for (system, outcome, all) in &medians {
            let row = Row {
                system: system.name(),
                mode: "closed",
                payload: cell.payload,
                concurrency: cell.concurrency,
                rate: None,
                outcome,
            };
            println!("{}", output::line(&row, quicall_outcome));
            let json = output::json(&row);
            let rounds_json: Vec<String> = all.iter().map(|r| format!("{r:.1}")).collect();
            writeln!(
                jsonl,
                "{},{settings},\"rounds_calls_per_sec\":[{}]}}",
                &json[..json.len() - 1],
                rounds_json.join(",")
            )?;
            output::write_hgrm(
                &args.out.join(format!(
                    "{system}-closed-{}B-c{}.hgrm",
                    cell.payload, cell.concurrency
                )),
                &outcome.histogram,
            )?;
        }
    }
    if !args.closed_only {
        println!(
            "\nopen loop, {} B, rates {:?} calls/s, {:.1} s each: the highest rate whose p99 stays under {} ms",
            args.open_payload,
            args.rates,
            secs.as_secs_f64(),
            args.p99_bound_ms
        );
        println!("{}", output::header());
        for &system in &args.systems {
            progress(done, total, started, &format!("{system} open-loop sweep"));
            let echo =
                Arc::new(start(&args, system, &pki, &limits, (servers.as_ref(), server_ip)).await?);
            let mut best: Option<f64> = None;
            for &rate in &args.rates {
                let outcome = open_loop(echo.clone(), args.open_payload, rate, secs, 10_000).await;
                count_lost(system, &outcome);
                let row = Row {
                    system: system.name(),
                    mode: "open",
                    payload: args.open_payload,
                    concurrency: 0,
                    rate: Some(rate),
                    outcome: &outcome,
                };
                clear_progress();
                println!("{}  (target {rate:.0}/s)", output::line(&row, None));
                let json = output::json(&row);
                writeln!(jsonl, "{},{settings}}}", &json[..json.len() - 1])?;
                output::write_hgrm(
                    &args.out.join(format!(
                        "{system}-open-{}B-r{rate:.0}.hgrm",
                        args.open_payload
                    )),
                    &outcome.histogram,
                )?;
                let within =
                    outcome.errors == 0 && (outcome.us(0.99) as f64) < args.p99_bound_ms * 1000.0;
                if !within {
                    break;
                }
                best = Some(rate);
            }
            done += 1;
            match best {
                Some(rate) => {
                    println!("{system}: highest rate within the bound: {rate:.0} calls/s")
                }
                None => println!("{system}: no rate met the bound"),
            }
        }
    }
    clear_progress();
    let quic_lost: Vec<String> = lost
        .iter()
        .filter(|(s, _)| matches!(s, System::Quicall | System::Quinn))
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    println!(
        "\nduring the whole run (every round): kernel UDP receive-buffer drops {} (machine-wide RcvbufErrors); QUIC packets the clients declared lost: {}",
        quicall_benches::harness::run::udp_rcvbuf_errors().saturating_sub(drops_before),
        quic_lost.join(", ")
    );
    println!(
        "\nwrote {}, the .hgrm files and an .svg chart per cell in {} ({:.0} s)",
        args.out.join("results.jsonl").display(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The system's echo: in-process, or the external server of --connect.
async fn start(
    args: &Args,
    system: System,
    pki: &Pki,
    limits: &Limits,
    servers: (Option<&tokio::runtime::Handle>, IpAddr),
) -> anyhow::Result<Echo> {
    match (&args.connect, &args.ca, &args.cert, &args.key) {
        (Some(target), Some(ca), Some(cert), Some(key)) => {
            let addr = tokio::net::lookup_host(target)
                .await?
                .next()
                .with_context(|| format!("{target} resolves to no address"))?;
            let tls = quicall::ClientTls::new(quicall::certs::read_certs(ca)?).with_identity(
                quicall::certs::read_certs(cert)?,
                quicall::certs::read_key(key)?,
            );
            Echo::connect_quicall(addr, &args.server_name, tls, limits).await
        }
        _ => {
            let knobs = Arc::new(quicall::demo::Knobs::default());
            Echo::start_at(system, pki, limits, knobs, servers).await
        }
    }
}

fn rounds_shown(args: &Args) -> usize {
    args.rounds.max(1)
}

/// A one-line progress bar on stderr.
fn progress(done: usize, total: usize, started: Instant, what: &str) {
    let width = 24;
    let filled = width * done / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} {:>4.0}s  {what:<40}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().flush();
}

fn clear_progress() {
    eprint!("\r{:<90}\r", "");
    let _ = std::io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        super::Args::command().debug_assert();
    }
}
