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
    /// The last [`Stats::recent_quantile`]: the quantile's bits, the calls
    /// it was read at, and its value in µs.
    cached_quantile: [AtomicU64; 3],
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
            cached_quantile: std::array::from_fn(|_| AtomicU64::new(u64::MAX)),
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

    /// [`Stats::quantile`], read again only when enough calls were
    /// recorded since it was last read to move it: after each call up to
    /// 8, then after an eighth more calls, and at least every 64 calls. A
    /// quantile walks the histogram's buckets (thousands of instructions),
    /// which a hedged method's every call would otherwise pay.
    ///
    /// ```
    /// use quicall_rpc::Code;
    /// use quicall_rpc::metrics::Stats;
    /// use std::time::Duration;
    ///
    /// let stats = Stats::default();
    /// for _ in 0..100 {
    ///     stats.record(Duration::from_millis(1), Code::Ok);
    /// }
    /// assert_eq!(stats.recent_quantile(0.95), stats.quantile(0.95));
    /// ```
    pub fn recent_quantile(&self, q: f64) -> Option<Duration> {
        let [bits, at, value] = &self.cached_quantile;
        let calls = self.calls();
        let cached_at = at.load(Ordering::Relaxed);
        let stale = cached_at == u64::MAX
            || bits.load(Ordering::Relaxed) != q.to_bits()
            || calls.saturating_sub(cached_at) >= (cached_at / 8).clamp(1, 64);
        if !stale {
            let us = value.load(Ordering::Relaxed);
            return (us != u64::MAX).then(|| Duration::from_micros(us));
        }
        let quantile = self.quantile(q);
        // Racing readers may each store theirs: any of them is recent.
        value.store(
            quantile.map_or(u64::MAX, |d| d.as_micros() as u64),
            Ordering::Relaxed,
        );
        bits.store(q.to_bits(), Ordering::Relaxed);
        at.store(calls, Ordering::Relaxed);
        quantile
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A recent quantile follows the latencies within 64 calls, and is
    /// exact whenever it is read again.
    #[test]
    fn a_recent_quantile_follows_the_latencies() {
        let stats = Stats::default();
        assert_eq!(stats.recent_quantile(0.5), None);
        for _ in 0..1000 {
            stats.record(ms(1), Code::Ok);
        }
        assert_eq!(stats.recent_quantile(0.5), stats.quantile(0.5));
        // Slower calls: the value read stays until it is read again ...
        for _ in 0..63 {
            stats.record(ms(50), Code::Ok);
        }
        let before = stats.recent_quantile(0.5).unwrap();
        assert!(before < ms(2), "{before:?}");
        // ... which is at 64 calls at the latest: once the exact median has
        // stayed put for 64 calls, the recent one is it.
        let (mut exact_since, mut last_exact) = (0, None);
        for i in 0..2000 {
            stats.record(ms(50), Code::Ok);
            let recent = stats.recent_quantile(0.5);
            let exact = stats.quantile(0.5);
            if exact != last_exact {
                (exact_since, last_exact) = (i, exact);
            }
            assert!(
                i - exact_since < 64 || recent == exact,
                "call {i}: {recent:?} vs {exact:?}"
            );
        }
        assert!(stats.recent_quantile(0.5).unwrap() >= ms(49));
        // Another quantile is read at once.
        assert_eq!(stats.recent_quantile(0.99), stats.quantile(0.99));
    }

    /// Early on it is read after every call.
    #[test]
    fn a_recent_quantile_of_few_calls_is_exact() {
        let stats = Stats::default();
        for i in 1..=8u64 {
            stats.record(ms(i), Code::Ok);
            assert_eq!(stats.recent_quantile(1.0), stats.quantile(1.0));
        }
    }
}
