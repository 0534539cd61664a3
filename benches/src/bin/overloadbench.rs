//! The overload benchmark: three servers whose calls cost CPU (each on one
//! core of its own), an open loop at 1x, 2x and 5x the cluster's measured
//! capacity, for quicall with its fixed limits, quicall with adaptive
//! admission (with and without the cluster client's throttle) and tonic with `concurrency_limit_per_connection` and
//! `load_shed`: goodput, the share shed, the share that failed (out of
//! time), and the latency of the calls answered from when each was due;
//! the systems take turns for `--rounds` rounds, and each one's median
//! round is reported.
//!
//! ```text
//! cargo run --release -p quicall-benches --bin overloadbench
//! cargo run --release -p quicall-benches --bin overloadbench -- --secs 1 --loads 5 --tonic-limits 2
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use quicall::ClusterOptions;
use quicall::rpc::balance::ThrottleConfig;
use quicall_benches::harness::output::write_svg;
use quicall_benches::harness::overload::{
    Caller, Contender, CoreServer, Tally, capacity, open_loop,
};
use quicall_benches::harness::systems::Pki;

#[derive(Parser)]
#[command(about = "Overload: fixed limits, adaptive admission and tonic's load shedding")]
struct Args {
    /// CPU each call costs its server, in microseconds.
    #[arg(long, default_value_t = 1000)]
    cost_us: u64,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Offered loads, in multiples of the measured capacity.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5")]
    loads: Vec<f64>,
    /// tonic's per-connection concurrency limits to run (one connection per
    /// server, so each is a server's limit).
    #[arg(long, value_delimiter = ',', default_value = "2,32")]
    tonic_limits: Vec<usize>,
    /// Attempts of a quicall call at most (a shed call is retried on
    /// another server within the retry budget); the cluster's default is 3.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// The cluster client's throttle: attempts sent per attempt accepted
    /// before it refuses calls itself (`ThrottleConfig::k`; default 2).
    #[arg(long, default_value_t = 2.0)]
    throttle_k: f64,
    /// Systems to run, of quicall-fixed, quicall-adaptive,
    /// quicall-unthrottled (adaptive admission, the client's throttle off),
    /// tonic (all by default).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "quicall-fixed,quicall-adaptive,quicall-unthrottled,tonic"
    )]
    systems: Vec<String>,
    /// Rounds: the systems take turns, and each one's median round is
    /// reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the table, JSON lines and charts go.
    #[arg(long, default_value = "target/overloadbench")]
    out: PathBuf,
}

struct Cell {
    contender: Contender,
    load: f64,
    offered: f64,
    tally: Tally,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let pki = Pki::new()?;
    let cost = Duration::from_micros(args.cost_us);
    let length = Duration::from_secs_f64(args.secs);
    let payload = Bytes::from(vec![0x5au8; 64]);
    let wants = |name: &str| args.systems.iter().any(|s| s == name);
    let mut contenders = Vec::new();
    if wants("quicall-fixed") {
        contenders.push(Contender::QuicallFixed);
    }
    if wants("quicall-adaptive") {
        contenders.push(Contender::QuicallAdaptive);
    }
    if wants("quicall-unthrottled") {
        contenders.push(Contender::QuicallUnthrottled);
    }
    if wants("tonic") {
        contenders.extend(args.tonic_limits.iter().map(|&n| Contender::Tonic(n)));
    }

    // The cluster's capacity: quicall with fixed limits, 24 callers back to
    // back (the servers never idle, nothing is shed).
    let measured = {
        let servers = three(Contender::QuicallFixed, &pki, cost)?;
        let caller = Caller::connect(
            Contender::QuicallFixed,
            &pki,
            &servers,
            cluster_options(&args),
        )
        .await?;
        capacity(&caller, 4, length / 3, &payload).await; // warm-up
        capacity(&caller, 24, length, &payload).await
    };
    println!(
        "three servers, one core each, {} µs of CPU a call; capacity (24 callers back to back): {measured:.0} calls/s",
        args.cost_us
    );

    // Each contender unloaded (30% of capacity), then at each load; the
    // systems take turns round after round, and each one's median round
    // (by goodput; by p99 unloaded) is reported, so that a noisy moment
    // of a shared machine does not decide a ratio.
    let rounds = args.rounds.max(1);
    let mut quiet: Vec<(Contender, Vec<u64>)> =
        contenders.iter().map(|&c| (c, Vec::new())).collect();
    let mut runs: Vec<(Contender, f64, Vec<Tally>)> = Vec::new();
    for round in 0..rounds {
        for (contender, p99s) in &mut quiet {
            let tally = one_run(
                *contender,
                &pki,
                cost,
                &args,
                (0.3 * measured, 0.3 * measured),
                &payload,
            )
            .await?;
            p99s.push(tally.p_us(0.99));
        }
        for &load in &args.loads {
            for &contender in &contenders {
                let tally = one_run(
                    contender,
                    &pki,
                    cost,
                    &args,
                    (0.3 * measured, load * measured),
                    &payload,
                )
                .await?;
                eprintln!(
                    "round {} {:<28} {load}x: goodput {:.0}/s, shed {}, failed {}",
                    round + 1,
                    contender.name(),
                    tally.goodput(),
                    tally.shed,
                    tally.failed
                );
                match runs
                    .iter_mut()
                    .find(|(c, l, _)| *c == contender && *l == load)
                {
                    Some((_, _, tallies)) => tallies.push(tally),
                    None => runs.push((contender, load, vec![tally])),
                }
            }
        }
    }
    let unloaded: Vec<(Contender, u64)> = quiet
        .into_iter()
        .map(|(c, mut p99s)| {
            p99s.sort_unstable();
            (c, p99s[p99s.len() / 2])
        })
        .collect();
    let mut cells = Vec::new();
    for &contender in &contenders {
        for &load in &args.loads {
            let Some(i) = runs
                .iter()
                .position(|(c, l, _)| *c == contender && *l == load)
            else {
                continue;
            };
            let (_, _, mut tallies) = runs.swap_remove(i);
            tallies.sort_by(|a, b| a.goodput().total_cmp(&b.goodput()));
            let tally = tallies.swap_remove(tallies.len() / 2);
            cells.push(Cell {
                contender,
                load,
                offered: load * measured,
                tally,
            });
        }
    }

    let table = markdown(&cells, &unloaded, measured);
    println!("\n{table}");
    std::fs::write(args.out.join("overload.md"), &table)?;
    let mut jsonl = std::fs::File::create(args.out.join("results.jsonl"))?;
    for c in &cells {
        let t = &c.tally;
        writeln!(
            jsonl,
            "{{\"system\":\"{}\",\"load\":{},\"offered\":{:.0},\"capacity\":{measured:.0},\"goodput\":{:.0},\"shed\":{},\"failed\":{},\"calls\":{},\"p50_us\":{},\"p99_us\":{},\"cost_us\":{}}}",
            c.contender.name(),
            c.load,
            c.offered,
            t.goodput(),
            t.shed,
            t.failed,
            t.calls(),
            t.p_us(0.5),
            t.p_us(0.99),
            args.cost_us
        )?;
    }
    for &load in &args.loads {
        let series: Vec<(String, &hdrhistogram::Histogram<u64>)> = cells
            .iter()
            .filter(|c| c.load == load)
            .map(|c| (c.contender.name(), &c.tally.answered))
            .collect();
        let named: Vec<(&str, &hdrhistogram::Histogram<u64>)> =
            series.iter().map(|(n, h)| (n.as_str(), *h)).collect();
        write_svg(
            &args.out.join(format!("overload-{load}x.svg")),
            &format!(
                "answered calls at {load}x capacity (3 servers, {} µs a call)",
                args.cost_us
            ),
            &named,
        )?;
    }
    goodput_chart(&args.out.join("overload-goodput.svg"), &cells, measured)?;
    println!("written to {}", args.out.display());
    Ok(())
}

/// One run at `rate` on fresh servers (what one run learned does not carry
/// over), after a third of a run's warm-up at `warm`.
async fn one_run(
    contender: Contender,
    pki: &Pki,
    cost: Duration,
    args: &Args,
    (warm, rate): (f64, f64),
    payload: &Bytes,
) -> anyhow::Result<Tally> {
    let length = Duration::from_secs_f64(args.secs);
    let servers = three(contender, pki, cost)?;
    let caller = Caller::connect(contender, pki, &servers, cluster_options(args)).await?;
    open_loop(&caller, warm, length / 3, payload).await;
    Ok(open_loop(&caller, rate, length, payload).await)
}

fn three(contender: Contender, pki: &Pki, cost: Duration) -> anyhow::Result<Vec<CoreServer>> {
    (0..3)
        .map(|_| CoreServer::start(contender, pki, cost))
        .collect()
}

fn markdown(cells: &[Cell], unloaded: &[(Contender, u64)], capacity: f64) -> String {
    let mut out = String::from(
        "| load | system | offered/s | goodput/s | of capacity | shed | failed | p50 answered | p99 answered | p99 / unloaded p99 |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in cells {
        let t = &c.tally;
        let calls = t.calls().max(1) as f64;
        let quiet = unloaded
            .iter()
            .find(|(k, _)| *k == c.contender)
            .map_or(0, |(_, p)| *p)
            .max(1);
        out.push_str(&format!(
            "| {}x | {} | {:.0} | {:.0} | {:.0}% | {:.1}% | {:.1}% | {} µs | {} µs | {:.1}x |\n",
            c.load,
            c.contender.name(),
            c.offered,
            t.goodput(),
            100.0 * t.goodput() / capacity,
            100.0 * t.shed as f64 / calls,
            100.0 * t.failed as f64 / calls,
            t.p_us(0.5),
            t.p_us(0.99),
            t.p_us(0.99) as f64 / quiet as f64,
        ));
    }
    out.push_str("\nunloaded p99 (30% of capacity): ");
    let quiet: Vec<String> = unloaded
        .iter()
        .map(|(k, p)| format!("{} {p} µs", k.name()))
        .collect();
    out.push_str(&quiet.join(", "));
    out.push('\n');
    out
}

/// Goodput (answered calls/s, as a share of capacity) by offered load, one
/// line per system.
fn goodput_chart(path: &std::path::Path, cells: &[Cell], capacity: f64) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let max_load = cells.iter().map(|c| c.load).fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "goodput under overload (3 servers, CPU-bound calls)",
            ("sans-serif", 22),
        )
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_load * 1.05, 0.0..110.0)?;
    chart
        .configure_mesh()
        .x_desc("offered load (x capacity)")
        .y_desc("answered calls/s (% of capacity)")
        .draw()?;
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    let mut names: Vec<String> = cells.iter().map(|c| c.contender.name()).collect();
    names.dedup();
    for (i, name) in names.iter().enumerate() {
        let color = palette[i % palette.len()];
        let points: Vec<(f64, f64)> = cells
            .iter()
            .filter(|c| &c.contender.name() == name)
            .map(|c| (c.load, 100.0 * c.tally.goodput() / capacity))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The quicall cluster client's settings the flags give.
fn cluster_options(args: &Args) -> ClusterOptions {
    let defaults = ClusterOptions::default();
    ClusterOptions {
        max_attempts: args.max_attempts,
        throttle: defaults.throttle.map(|t| ThrottleConfig {
            k: args.throttle_k,
            ..t
        }),
        ..defaults
    }
}
