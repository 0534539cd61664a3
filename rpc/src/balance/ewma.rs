use std::time::Duration;

/// A peak-sensitive, exponentially weighted moving average of latency: the
/// load estimate behind the default balancer (Finagle's "peak EWMA").
///
/// - A sample above the estimate replaces it at once (a server that slows
///   down is avoided at once).
/// - A sample below it is averaged in with weight `1 - e^(-Δt/τ)`, where `Δt`
///   is the time since the last update and `τ` the decay time constant (the
///   old estimate keeps `e^(-Δt/τ)`).
/// - Without samples the estimate decays towards zero with the same time
///   constant, so that a server once slow is tried again later.
///
/// ```
/// use quicall_rpc::balance::PeakEwma;
/// use std::time::Duration;
///
/// let ms = Duration::from_millis;
/// let mut ewma = PeakEwma::new(ms(1), Duration::from_secs(5));
/// ewma.observe(ms(20), ms(0));               // a slow answer: the peak is taken at once
/// assert_eq!(ewma.estimate(ms(0)), ms(20));
/// ewma.observe(ms(1), ms(5_000));            // one τ later, a fast one
/// assert!(ewma.estimate(ms(5_000)) < ms(10));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp: Duration,
    tau_ns: f64,
}

impl PeakEwma {
    /// An estimate that starts at `initial` (so that a server with no
    /// observation yet is neither shunned nor flooded) and decays with time
    /// constant `tau`.
    pub fn new(initial: Duration, tau: Duration) -> Self {
        Self {
            estimate_ns: initial.as_nanos() as f64,
            stamp: Duration::ZERO,
            tau_ns: (tau.as_nanos() as f64).max(1.0),
        }
    }

    fn decay(&self, now: Duration) -> f64 {
        let elapsed = now.saturating_sub(self.stamp).as_nanos() as f64;
        (-elapsed / self.tau_ns).exp()
    }

    /// Records a latency observed at `now`.
    pub fn observe(&mut self, latency: Duration, now: Duration) {
        let sample = latency.as_nanos() as f64;
        let w = self.decay(now);
        let current = self.estimate_ns * w;
        self.estimate_ns = if sample > current {
            sample
        } else {
            current + sample * (1.0 - w)
        };
        self.stamp = self.stamp.max(now);
    }

    /// A server refused a call for overload (it shed it): the estimate at
    /// least doubles at once, from no less than `floor`, up to `cap`, so
    /// that calls go elsewhere before the server's latency says so; it
    /// decays back as any peak does.
    ///
    /// ```
    /// use quicall_rpc::balance::PeakEwma;
    /// use std::time::Duration;
    ///
    /// let ms = Duration::from_millis;
    /// let mut ewma = PeakEwma::new(ms(1), Duration::from_secs(5));
    /// ewma.observe(ms(2), ms(0));
    /// ewma.overloaded(ms(1), Duration::from_secs(1), ms(0));
    /// assert_eq!(ewma.estimate(ms(0)), ms(4));
    /// for _ in 0..20 {
    ///     ewma.overloaded(ms(1), Duration::from_secs(1), ms(0));
    /// }
    /// assert_eq!(ewma.estimate(ms(0)), Duration::from_secs(1));
    /// ```
    pub fn overloaded(&mut self, floor: Duration, cap: Duration, now: Duration) {
        let current = self.estimate_ns(now).max(floor.as_nanos() as f64);
        self.estimate_ns = (2.0 * current).min(cap.as_nanos() as f64);
        self.stamp = self.stamp.max(now);
    }

    /// The estimate at `now`, decayed since the last observation.
    pub fn estimate(&self, now: Duration) -> Duration {
        Duration::from_nanos((self.estimate_ns * self.decay(now)) as u64)
    }

    /// The estimate in nanoseconds, as a float, for load comparisons.
    pub fn estimate_ns(&self, now: Duration) -> f64 {
        self.estimate_ns * self.decay(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_from_the_default() {
        let e = PeakEwma::new(ms(3), Duration::from_secs(10));
        assert_eq!(e.estimate(Duration::ZERO), ms(3));
    }

    #[test]
    fn a_peak_is_taken_at_once() {
        let mut e = PeakEwma::new(ms(1), Duration::from_secs(10));
        for t in 0..100 {
            e.observe(ms(1), ms(t));
        }
        e.observe(ms(50), ms(100));
        assert_eq!(e.estimate(ms(100)), ms(50));
    }

    #[test]
    fn lower_samples_pull_it_down_with_the_time_constant() {
        let tau = Duration::from_secs(1);
        let mut e = PeakEwma::new(ms(100), tau);
        // Samples at the same instant have weight 1 - e^0 = 0: no change.
        e.observe(ms(10), Duration::ZERO);
        assert_eq!(e.estimate(Duration::ZERO), ms(100));
        // After one τ the old value keeps e^-1 of its weight.
        e.observe(ms(10), tau);
        let expected = 100.0 * (-1.0f64).exp() + 10.0 * (1.0 - (-1.0f64).exp());
        let got = e.estimate(tau).as_secs_f64() * 1000.0;
        assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
    }

    #[test]
    fn without_samples_it_decays_towards_zero() {
        let mut e = PeakEwma::new(ms(1), Duration::from_secs(2));
        e.observe(ms(40), Duration::ZERO);
        let later = e.estimate(Duration::from_secs(10));
        assert!(later < ms(1), "{later:?}");
        assert!(e.estimate(Duration::from_secs(1)) < ms(40));
    }

    #[test]
    fn time_going_backwards_does_not_explode() {
        let mut e = PeakEwma::new(ms(1), Duration::from_secs(1));
        e.observe(ms(5), Duration::from_secs(5));
        e.observe(ms(5), Duration::from_secs(4));
        assert!(e.estimate(Duration::from_secs(5)) <= ms(5));
    }
}
