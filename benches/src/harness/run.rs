//! Closed-loop and open-loop load, with CPU accounting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::Echo;

/// Payload size and concurrency of a closed-loop cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub payload: usize,
    pub concurrency: usize,
}

/// Closed loop, or open loop at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` callers, each waiting for its answer before the next call.
    Closed,
    /// Calls started at `rate` per second whatever the answers; latency from
    /// each call's intended start (corrected for coordinated omission).
    Open { rate: f64 },
}

/// What a run measured.
pub struct Outcome {
    /// Latencies in microseconds.
    pub histogram: Histogram<u64>,
    pub calls: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Process CPU time (user + system) used during the run.
    pub cpu: Duration,
    /// Datagrams the kernel dropped for a full UDP receive buffer during the
    /// run (`RcvbufErrors`, machine-wide).
    pub udp_drops: u64,
    /// Packets the client's QUIC connection declared lost during the run
    /// (QUIC systems only).
    pub lost_packets: Option<u64>,
}

impl Outcome {
    pub fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q`, in microseconds.
    pub fn us(&self, q: f64) -> u64 {
        if self.histogram.is_empty() {
            0
        } else {
            self.histogram.value_at_quantile(q)
        }
    }
}

/// What the process and the connection had counted when a run began.
struct Counters {
    cpu: Duration,
    udp_drops: u64,
    lost_packets: Option<u64>,
}

impl Counters {
    fn now(echo: &Echo) -> Self {
        Self {
            cpu: process_cpu(),
            udp_drops: udp_rcvbuf_errors(),
            lost_packets: echo.lost_packets(),
        }
    }

    /// The outcome of a run that began with these counters.
    fn outcome(
        self,
        echo: &Echo,
        histogram: Histogram<u64>,
        errors: u64,
        elapsed: Duration,
    ) -> Outcome {
        Outcome {
            calls: histogram.len(),
            histogram,
            errors,
            elapsed,
            cpu: process_cpu().saturating_sub(self.cpu),
            udp_drops: udp_rcvbuf_errors().saturating_sub(self.udp_drops),
            lost_packets: echo
                .lost_packets()
                .zip(self.lost_packets)
                .map(|(after, before)| after.saturating_sub(before)),
        }
    }
}

/// Records `latency` in microseconds (the unit of every histogram here).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record(latency.as_micros().max(1) as u64);
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn payload(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// `workload.concurrency` callers calling for `duration`.
pub async fn closed_loop(echo: Arc<Echo>, workload: Workload, duration: Duration) -> Outcome {
    let data = payload(workload.payload);
    let errors = Arc::new(AtomicU64::new(0));
    let counters = Counters::now(&echo);
    let start = Instant::now();
    let end = start + duration;
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..workload.concurrency.max(1) {
        let (echo, data, errors) = (echo.clone(), data.clone(), errors.clone());
        callers.spawn(async move {
            let mut histogram = new_histogram();
            while Instant::now() < end {
                let began = Instant::now();
                match echo.call(&data).await {
                    Ok(n) if n == data.len() => record(&mut histogram, began.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            histogram
        });
    }
    let mut histogram = new_histogram();
    while let Some(h) = callers.join_next().await {
        if let Ok(h) = h {
            let _ = histogram.add(h);
        }
    }
    counters.outcome(
        &echo,
        histogram,
        errors.load(Ordering::Relaxed),
        start.elapsed(),
    )
}

/// Calls started at `rate` per second for `duration`, at most
/// `max_outstanding` at once: a call due while that many are out waits for
/// one to finish (the dispatcher never skips a call). Latency runs from each
/// call's intended start, not its actual one, so that a server that stalls is
/// charged for every call that queued behind it (no coordinated omission).
pub async fn open_loop(
    echo: Arc<Echo>,
    payload_size: usize,
    rate: f64,
    duration: Duration,
    max_outstanding: usize,
) -> Outcome {
    let data = payload(payload_size);
    let counters = Counters::now(&echo);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let total = (duration.as_secs_f64() * rate).round().max(1.0) as u64;
    let errors = Arc::new(AtomicU64::new(0));
    let outstanding = Arc::new(tokio::sync::Semaphore::new(max_outstanding.max(1)));
    let start = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut late = new_histogram();
    for i in 0..total {
        let intended = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(intended).await;
        let Ok(permit) = outstanding.clone().acquire_owned().await else {
            break;
        };
        let (echo, data, errors) = (echo.clone(), data.clone(), errors.clone());
        calls.spawn(async move {
            let _permit = permit;
            let ok = matches!(echo.call(&data).await, Ok(n) if n == data.len());
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            (ok, intended.elapsed())
        });
        // Reap finished calls as we go, so the set stays small.
        while let Some(done) = calls.try_join_next() {
            if let Ok((true, latency)) = done {
                record(&mut late, latency);
            }
        }
    }
    while let Some(done) = calls.join_next().await {
        if let Ok((true, latency)) = done {
            record(&mut late, latency);
        }
    }
    counters.outcome(&echo, late, errors.load(Ordering::Relaxed), start.elapsed())
}

/// `count` first calls of `echo`'s system, one after another, each on a
/// new connection (its handshake and one call of `payload`, bounded by
/// 30 s; see [`Echo::first_call`]): "p50 / p90 / p99 / max ms (answered,
/// failed)".
pub async fn first_calls(
    echo: &Echo,
    pki: &super::systems::Pki,
    limits: &quicall::Limits,
    payload: &Bytes,
    count: usize,
) -> String {
    let mut times = new_histogram();
    let mut failed = 0;
    let endpoint = match quicall::transport::ClientEndpoint::new(pki.client_tls(), limits.clone()) {
        Ok(endpoint) => endpoint,
        Err(error) => return format!("no client endpoint: {error}"),
    };
    for _ in 0..count {
        let call = echo.first_call(&endpoint, pki, limits, payload);
        match tokio::time::timeout(Duration::from_secs(30), call).await {
            Ok(Ok(took)) => record(&mut times, took),
            Ok(Err(_)) | Err(_) => failed += 1,
        }
    }
    let ms = |q: f64| times.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{:.2} / {:.2} / {:.1} / {:.1} ({}, {failed})",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        times.max() as f64 / 1000.0,
        times.len()
    )
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer
/// (`Udp: RcvbufErrors` in /proc/net/snmp); zero where unavailable.
pub fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of this process so far, from /proc/self/stat
/// (clock ticks of 10 ms, the Linux default); zero where unavailable.
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
