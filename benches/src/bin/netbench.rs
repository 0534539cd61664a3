//! The comparison on imperfect networks, one run: quicall, raw quinn,
//! gRPC with TLS and tarpc, servers and clients on two hosts of a network
//! lab (network namespaces; needs root), across every path of the matrix
//! (loss × added round trip), at every payload and number of callers;
//! calls/s, p50, p99, p99.9 and max, the loss the lab actually applied,
//! and the issue's targets checked, as a table (`matrix.md`), JSON lines
//! and an SVG chart of p99.9 per round trip and payload.
//!
//! ```text
//! cargo run --release -p quicall-benches --bin netbench                  # the whole matrix (about 15 min)
//! cargo run --release -p quicall-benches --bin netbench -- --loss-pct 1 --rtt-ms 0 --payloads 64 --secs 1
//! ```

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use quicall::Limits;
use quicall_benches::harness::netmatrix::{self, Cell, Measured, PathSpec};
use quicall_benches::harness::output::{self, Row};
use quicall_benches::harness::systems::Pki;
use quicall_benches::harness::tuning::QuicTuning;
use quicall_benches::harness::{Echo, System, Workload, closed_loop, first_calls};
use quicall_netlab::{Lab, LabError, Path};

#[derive(Parser)]
#[command(about = "quicall against raw quinn, gRPC+TLS and tarpc on lossy, delayed paths")]
struct Args {
    /// Systems to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "quicall,raw-quinn,grpc-tls,tarpc"
    )]
    systems: Vec<System>,
    /// Loss rates, percent of every packet each way.
    #[arg(long, value_delimiter = ',', default_value = "0.1,1,5")]
    loss_pct: Vec<f64>,
    /// Round trips the lab adds, in ms (half on each host's packets).
    #[arg(long, value_delimiter = ',', default_value = "0,1,20")]
    rtt_ms: Vec<f64>,
    /// Jitter on each host's packets, in ms (packets overtake each other).
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,16384")]
    payloads: Vec<usize>,
    /// Concurrent callers (closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,16,128")]
    concurrency: Vec<usize>,
    /// Seconds per system and cell.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Worker threads of the servers' runtime and of the clients'.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(flatten)]
    tuning: QuicTuning,
    /// TCP's congestion controller on both hosts (gRPC's and tarpc's), by
    /// its kernel name (`cubic`, `bbr`, `reno`); by default the machine's
    /// (`net.ipv4.tcp_congestion_control`), which the run prints. A lab
    /// host may choose only among `net.ipv4.tcp_allowed_congestion_control`.
    #[arg(long)]
    tcp_congestion: Option<String>,
    /// Instead of the closed loop: on each path, this many first calls per
    /// system, one after another, each on a new connection (its handshake
    /// and one call of the first payload; the QUIC systems' from one client
    /// endpoint), as a caller meets a new or restarted server; written to
    /// first-calls.md.
    #[arg(long)]
    first_calls: Option<usize>,
    /// Where to write matrix.md, results.jsonl and the charts.
    #[arg(long, default_value = "target/netbench")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lab = match Lab::new(&["server", "client"], Path::default()) {
        Ok(lab) => lab,
        Err(e @ LabError::Unavailable(_)) => {
            eprintln!("netbench needs a network lab: {e}");
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    let (server, client) = (lab.host("server").clone(), lab.host("client").clone());
    if let Some(tcp) = &args.tcp_congestion {
        for host in [&server, &client] {
            let set = host.sysctl(&[&format!("net.ipv4.tcp_congestion_control={tcp}")]);
            // Outside the first namespace the kernel takes only what
            // net.ipv4.tcp_allowed_congestion_control lists (a machine-wide
            // setting, which netbench does not change).
            set.with_context(|| {
                format!(
                    "setting TCP's congestion control to {tcp} on a lab host: a network namespace may choose only among net.ipv4.tcp_allowed_congestion_control (`sysctl net.ipv4.tcp_allowed_congestion_control`); add {tcp} there, machine-wide, to compare against it"
                )
            })?;
        }
    }
    let tcp_congestion = client.sysctl_value("net.ipv4.tcp_congestion_control")?;
    // This thread runs the clients' future: it calls from the client host.
    client.enter()?;
    let runtime = |host: &quicall_netlab::Host| {
        let host = host.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .on_thread_start(move || host.enter().expect("entering a lab host"))
            .enable_all()
            .build()
    };
    let (servers, clients) = (runtime(&server)?, runtime(&client)?);
    std::fs::create_dir_all(&args.out)?;
    let mut jsonl = std::fs::File::create(args.out.join("results.jsonl"))?;
    let pki = Pki::new()?;
    let limits = args.tuning.apply(Limits::default());
    let secs = Duration::from_secs_f64(args.secs.clamp(0.1, 60.0));
    let paths: Vec<PathSpec> = args
        .rtt_ms
        .iter()
        .flat_map(|&rtt_ms| {
            args.loss_pct
                .iter()
                .map(move |&loss_pct| PathSpec { loss_pct, rtt_ms })
        })
        .collect();
    let workloads: Vec<Workload> = args
        .payloads
        .iter()
        .flat_map(|&payload| {
            args.concurrency.iter().map(move |&concurrency| Workload {
                payload,
                concurrency,
            })
        })
        .collect();
    let runs = paths.len() * workloads.len() * args.systems.len();
    println!(
        "closed loop, {:.1} s per system and cell, mutual TLS where the system has it; servers on {} ({}), clients on {} ({}), runtimes of {} worker threads each; QUIC congestion control {:?} (network peers), TCP's {tcp_congestion}; {} runs",
        secs.as_secs_f64(),
        server.name(),
        server.addr(),
        client.name(),
        client.addr(),
        args.threads,
        limits.congestion,
        runs
    );
    let started = Instant::now();
    let mut cells = Vec::new();
    let mut first_rows = Vec::new();
    for spec in &paths {
        let path = Path {
            loss: spec.loss_pct / 100.0,
            delay: Duration::from_secs_f64(spec.rtt_ms / 2000.0),
            jitter: Duration::from_secs_f64(args.jitter_ms / 1000.0),
            rate_bps: None,
        };
        server.set_path(path)?;
        client.set_path(path)?;
        // An echo server of `system` on the server host, and its client.
        let start_echo = |system| {
            clients.block_on(Echo::start_at(
                system,
                &pki,
                &limits,
                Arc::new(quicall::demo::Knobs::default()),
                (Some(servers.handle()), server.addr().into()),
            ))
        };
        if let Some(count) = args.first_calls {
            let payload = bytes::Bytes::from(vec![7u8; args.payloads[0]]);
            for &system in &args.systems {
                let echo = start_echo(system)?;
                let firsts = clients.block_on(first_calls(&echo, &pki, &limits, &payload, count));
                let line = format!(
                    "| {}% | {} ms | {system} | {} |",
                    spec.loss_pct, spec.rtt_ms, firsts
                );
                println!("{line}");
                first_rows.push(line);
            }
            continue;
        }
        println!(
            "\npath: {}% loss each way, {} ms round trip added, {} ms jitter\n{}",
            spec.loss_pct,
            spec.rtt_ms,
            args.jitter_ms,
            output::header()
        );
        for workload in &workloads {
            let before = counters(&lab)?;
            let mut measured = Vec::new();
            let mut quicall = None;
            for &system in &args.systems {
                if std::io::stderr().is_terminal() {
                    eprint!(
                        "\r{:>5.0}s  {system} {} B x {} ...{:20}\r",
                        started.elapsed().as_secs_f64(),
                        workload.payload,
                        workload.concurrency,
                        ""
                    );
                }
                let echo = start_echo(system)?;
                let outcome = clients.block_on(closed_loop(Arc::new(echo), *workload, secs));
                let row = Row {
                    system: system.name(),
                    mode: "closed",
                    payload: workload.payload,
                    concurrency: workload.concurrency,
                    rate: None,
                    outcome: &outcome,
                };
                println!("{}", output::line(&row, quicall.as_ref()));
                let json = output::json(&row);
                writeln!(
                    jsonl,
                    "{},\"loss_pct\":{},\"rtt_ms\":{},\"jitter_ms\":{},\"quic_congestion\":\"{:?}\",\"tcp_congestion\":\"{tcp_congestion}\"}}",
                    &json[..json.len() - 1],
                    spec.loss_pct,
                    spec.rtt_ms,
                    args.jitter_ms,
                    limits.congestion
                )?;
                measured.push(Measured {
                    system: system.name().to_owned(),
                    calls: outcome.calls,
                    errors: outcome.errors,
                    calls_per_sec: outcome.calls_per_sec(),
                    p50_us: outcome.us(0.5),
                    p99_us: outcome.us(0.99),
                    p999_us: outcome.us(0.999),
                    max_us: outcome.histogram.max(),
                });
                if system == System::Quicall {
                    quicall = Some(outcome);
                }
            }
            let after = counters(&lab)?;
            let (sent, dropped) = (after.0 - before.0, after.1 - before.1);
            cells.push(Cell {
                path: *spec,
                payload: workload.payload,
                callers: workload.concurrency,
                measured_loss_pct: 100.0 * dropped as f64 / sent.max(1) as f64,
                systems: measured,
            });
        }
    }
    drop((clients, servers));
    if args.first_calls.is_some() {
        let table = format!(
            "| loss | round trip added | system | first call: p50 / p90 / p99 / max ms (calls, failed) |\n|---|---|---|---|\n{}\n",
            first_rows.join("\n")
        );
        std::fs::write(args.out.join("first-calls.md"), &table)?;
        println!("{table}");
        return Ok(());
    }
    let names: Vec<&str> = args.systems.iter().map(|s| s.name()).collect();
    let table = format!(
        "QUIC congestion control {:?} (network peers), TCP's {tcp_congestion}; {:.1} s per system and cell.\n{}",
        limits.congestion,
        secs.as_secs_f64(),
        netmatrix::markdown(&cells, &names)
    );
    std::fs::write(args.out.join("matrix.md"), &table)?;
    for &rtt in &args.rtt_ms {
        for &payload in &args.payloads {
            let chosen: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.path.rtt_ms == rtt && c.payload == payload)
                .collect();
            netmatrix::write_chart(
                &args.out.join(format!("p999-rtt{rtt}ms-{payload}B.svg")),
                &format!(
                    "p99.9 by loss and callers: {payload} B, {}",
                    if rtt == 0.0 {
                        "no added delay".to_string()
                    } else {
                        format!("{rtt} ms round trip added")
                    }
                ),
                &chosen,
                &names,
            )?;
        }
    }
    println!("{table}");
    println!(
        "delay queue overflows: {}; wrote {}, results.jsonl and the charts in {} ({:.0} s)",
        lab.delay_overflows(),
        args.out.join("matrix.md").display(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Packets both hosts were sent, and those lost, since their paths were
/// set.
fn counters(lab: &Lab) -> anyhow::Result<(u64, u64)> {
    let mut total = (0, 0);
    for host in lab.hosts() {
        let (received, dropped) = host.received_and_dropped()?;
        total = (total.0 + received, total.1 + dropped);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        super::Args::command().debug_assert();
    }
}
