//! Latency histograms and counters, per method and per server.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Code;

const CODES: usize = 17;

/// Counters and a latency histogram (microseconds, 3 significant digits, up
/// to one hour) for one method or one server. Recording is a few atomic
/// additions and a short lock of the histogram, never held across an await.
pub struct Stats {
    latency: Mutex<Histogram<u64>>,
    calls: AtomicU64,
    by_code: [AtomicU64; CODES],
    retries: AtomicU64,
    hedges: AtomicU64,
    ejections: AtomicU64,
    budget_exhausted: AtomicU64,
    throttled: AtomicU64,
    in_flight: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: Mutex::new(new_histogram()),
            calls: AtomicU64::new(0),
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    /// Records one finished call: its latency and its outcome.
    pub fn record(&self, latency: Duration, code: Code) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.by_code[usize::from(code.as_u16()).min(CODES - 1)].fetch_add(1, Ordering::Relaxed);
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(us);
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_hedge(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_ejection(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_budget_exhausted(&self) {
        self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// The latency at quantile `q` (0.0 to 1.0) of what was recorded, if anything was.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        (!h.is_empty()).then(|| Duration::from_micros(h.value_at_quantile(q)))
    }

    /// Calls recorded so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            latency: self
                .latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            calls: self.calls.load(Ordering::Relaxed),
            by_code: std::array::from_fn(|i| self.by_code[i].load(Ordering::Relaxed)),
            retries: self.retries.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// What a [`Stats`] had recorded when the snapshot was taken.
///
/// ```
/// use quicall_rpc::Code;
/// use quicall_rpc::metrics::Stats;
/// use std::time::Duration;
///
/// let stats = Stats::default();
/// stats.record(Duration::from_micros(100), Code::Ok);
/// let before = stats.snapshot();
/// stats.record(Duration::from_micros(900), Code::Unavailable);
/// let phase = stats.snapshot().since(&before);
/// assert_eq!(phase.calls, 1);
/// assert_eq!(phase.errors(), 1);
/// assert_eq!(phase.p50(), Some(Duration::from_micros(900)));
/// ```
#[derive(Clone)]
pub struct StatsSnapshot {
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// Calls finished.
    pub calls: u64,
    /// Calls finished, by status code number.
    pub by_code: [u64; CODES],
    /// Retries sent.
    pub retries: u64,
    /// Hedged calls sent.
    pub hedges: u64,
    /// Times ejected (servers only).
    pub ejections: u64,
    /// Retries or hedges not sent because the retry budget was empty.
    pub budget_exhausted: u64,
    /// Calls refused by the cluster client's throttle, never sent (also
    /// counted as RESOURCE_EXHAUSTED calls).
    pub throttled: u64,
    /// Calls running when the snapshot was taken.
    pub in_flight: u64,
}

impl StatsSnapshot {
    /// What was recorded between `earlier` and this snapshot.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let mut latency = self.latency.clone();
        let _ = latency.subtract(&earlier.latency);
        StatsSnapshot {
            latency,
            calls: self.calls - earlier.calls,
            by_code: std::array::from_fn(|i| self.by_code[i] - earlier.by_code[i]),
            retries: self.retries - earlier.retries,
            hedges: self.hedges - earlier.hedges,
            ejections: self.ejections - earlier.ejections,
            budget_exhausted: self.budget_exhausted - earlier.budget_exhausted,
            throttled: self.throttled - earlier.throttled,
            in_flight: self.in_flight,
        }
    }

    /// Calls that did not end OK.
    pub fn errors(&self) -> u64 {
        self.calls - self.by_code[0]
    }

    /// Calls that ended with `code`.
    pub fn count(&self, code: Code) -> u64 {
        self.by_code[usize::from(code.as_u16()).min(CODES - 1)]
    }

    /// Errors by code, the most frequent first, for display.
    pub fn errors_by_code(&self) -> Vec<(Code, u64)> {
        let mut out: Vec<_> = (1..CODES)
            .filter(|&i| self.by_code[i] > 0)
            .map(|i| (Code::from_u16(i as u16), self.by_code[i]))
            .collect();
        out.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        out
    }

    /// Latency at quantile `q`.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.latency.is_empty()).then(|| Duration::from_micros(self.latency.value_at_quantile(q)))
    }

    /// Median latency.
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// 99th percentile latency.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// Largest latency.
    pub fn max(&self) -> Option<Duration> {
        (!self.latency.is_empty()).then(|| Duration::from_micros(self.latency.max()))
    }
}

impl fmt::Debug for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsSnapshot")
            .field("calls", &self.calls)
            .field("errors", &self.errors_by_code())
            .field("retries", &self.retries)
            .field("hedges", &self.hedges)
            .field("ejections", &self.ejections)
            .field("p50", &self.p50())
            .field("p99", &self.p99())
            .finish()
    }
}
