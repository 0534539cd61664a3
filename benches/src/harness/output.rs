//! The outputs: a terminal table, JSON lines, `.hgrm` percentile files.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;

use super::Outcome;

/// One measured cell: a system, its settings, and what it measured.
pub struct Row<'a> {
    pub system: &'a str,
    pub mode: &'a str,
    pub payload: usize,
    pub concurrency: usize,
    /// Target rate, open loop only.
    pub rate: Option<f64>,
    pub outcome: &'a Outcome,
}

pub fn header() -> String {
    format!(
        "{:<10} {:<6} {:>8} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>16}",
        "system",
        "mode",
        "payload",
        "conc",
        "calls/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "cpu",
        "quicall vs this"
    )
}

/// A table line; `quicall` is quicall's outcome of the same cell, shown on
/// each other system's line as ratios: quicall's calls/s over this system's,
/// and quicall's p99 over this system's.
pub fn line(row: &Row, quicall: Option<&Outcome>) -> String {
    let o = row.outcome;
    let ratio = match quicall {
        Some(q) if row.system != "quicall" => format!(
            "{:.2}x, p99 {:.2}x",
            q.calls_per_sec() / o.calls_per_sec().max(1e-9),
            q.us(0.99) as f64 / o.us(0.99).max(1) as f64
        ),
        _ => String::new(),
    };
    let cpu = o.cpu.as_secs_f64() / o.elapsed.as_secs_f64().max(1e-9);
    format!(
        "{:<10} {:<6} {:>8} {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>5.0}% {:>16}{}",
        row.system,
        row.mode,
        size(row.payload),
        row.concurrency,
        o.calls_per_sec(),
        us(o.us(0.5)),
        us(o.us(0.9)),
        us(o.us(0.99)),
        us(o.us(0.999)),
        us(o.histogram.max()),
        cpu * 100.0,
        ratio,
        {
            let mut notes = Vec::new();
            if o.errors > 0 {
                notes.push(format!("{} errors", o.errors));
            }
            if o.udp_drops > 0 {
                notes.push(format!("{} kernel UDP drops", o.udp_drops));
            }
            if let Some(lost) = o.lost_packets.filter(|&l| l > 0) {
                notes.push(format!("{lost} QUIC packets lost"));
            }
            if notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", notes.join(", "))
            }
        }
    )
}

/// The JSON line of a row (settings and results; latencies in microseconds).
pub fn json(row: &Row) -> String {
    let o = row.outcome;
    let mut s = String::from("{");
    let _ = write!(
        s,
        "\"system\":\"{}\",\"mode\":\"{}\",\"payload\":{},\"concurrency\":{},",
        row.system, row.mode, row.payload, row.concurrency
    );
    if let Some(rate) = row.rate {
        let _ = write!(s, "\"rate\":{rate},");
    }
    let _ = write!(
        s,
        "\"calls\":{},\"errors\":{},\"udp_drops\":{},\"lost_packets\":{},\"seconds\":{:.3},\"calls_per_sec\":{:.1},\"cpu_seconds\":{:.3},",
        o.calls,
        o.errors,
        o.udp_drops,
        o.lost_packets.map_or("null".to_string(), |l| l.to_string()),
        o.elapsed.as_secs_f64(),
        o.calls_per_sec(),
        o.cpu.as_secs_f64()
    );
    let _ = write!(
        s,
        "\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        o.us(0.5),
        o.us(0.9),
        o.us(0.99),
        o.us(0.999),
        if o.histogram.is_empty() {
            0
        } else {
            o.histogram.max()
        }
    );
    s
}

/// Writes `histogram` (microseconds) as an HdrHistogram percentile
/// distribution, values in milliseconds, as HdrHistogram's own tools print
/// it and its plotters read it.
pub fn write_hgrm(path: &Path, histogram: &Histogram<u64>) -> std::io::Result<()> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in histogram.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:>12.3} {:>14.12} {:>10} {inverse}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total
        );
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / 1000.0,
        histogram.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / 1000.0,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values()
    );
    std::fs::File::create(path)?.write_all(out.as_bytes())
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}µs")
    }
}

/// A payload size as the tables write it: `64B`, `16KiB`, `1MiB`.
pub fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// Writes an SVG chart of latency by percentile (HdrHistogram style: the
/// x axis spreads the tail, 0%, 90%, 99%, 99.9% ... evenly) for the systems
/// of one cell.
pub fn write_svg(
    path: &Path,
    title: &str,
    series: &[(&str, &Histogram<u64>)],
) -> anyhow::Result<()> {
    use plotters::prelude::*;

    const TAIL: f64 = 5.0; // up to 99.999%
    let points = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        h.iter_quantiles(5)
            .map(|v| {
                let q = v.quantile_iterated_to().min(1.0 - 1e-5);
                (-(1.0 - q).log10(), v.value_iterated_to() as f64 / 1000.0)
            })
            .collect()
    };
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (*name, points(h)))
        .collect();
    let y_max = curves
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..TAIL, 0.0..y_max.max(0.01))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(6)
        .x_label_formatter(&|x| {
            let p = format!("{:.3}", 100.0 * (1.0 - 10f64.powf(-x)));
            format!("{}%", p.trim_end_matches('0').trim_end_matches('.'))
        })
        .draw()?;
    let palette = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (i, (name, pts)) in curves.into_iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
