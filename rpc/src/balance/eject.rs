use std::time::Duration;

/// When to eject a failing server, and for how long.
///
/// ```
/// use quicall_rpc::balance::EjectionConfig;
/// let config = EjectionConfig::default();
/// assert_eq!(config.consecutive_failures, 5);
/// assert_eq!(config.max_ejected_share, 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionConfig {
    /// Consecutive failures (connect errors, UNAVAILABLE, resets) that eject
    /// a server. Default 5.
    pub consecutive_failures: u32,
    /// Ejection time the first time; it doubles with each ejection that
    /// follows, with ±25% jitter. Default 5 s.
    pub base_ejection: Duration,
    /// Longest ejection. Default 300 s.
    pub max_ejection: Duration,
    /// Largest share of the servers ejected at once (0.0 to 1.0); a server
    /// that would go over it stays in. Default 0.5.
    pub max_ejected_share: f64,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(300),
            max_ejected_share: 0.5,
        }
    }
}

/// Whether one more of `total` servers may be ejected while `ejected` are.
///
/// ```
/// use quicall_rpc::balance::may_eject;
/// assert!(may_eject(0, 3, 0.5));   // 1 of 3 is under half
/// assert!(!may_eject(1, 3, 0.5));  // 2 of 3 is over
/// assert!(!may_eject(0, 1, 0.5));  // never the only server
/// ```
pub fn may_eject(ejected: usize, total: usize, max_share: f64) -> bool {
    total > 0 && ((ejected + 1) as f64) <= max_share * total as f64
}

/// The health of one server: healthy, ejected until some time, or on
/// probation after an ejection, when a single probe call is let through.
///
/// ```
/// use quicall_rpc::balance::{EjectionConfig, Health};
/// use std::time::Duration;
///
/// let config = EjectionConfig::default();
/// let mut health = Health::default();
/// let now = Duration::from_secs(100);
/// for _ in 0..5 {
///     health.on_failure(now, true, 0.5, &config);
/// }
/// assert!(health.is_ejected(now));
/// assert!(!health.try_admit(now + Duration::from_secs(1)));
/// // After the ejection, one probe goes through; a success brings it back.
/// let later = now + Duration::from_secs(10);
/// assert!(health.try_admit(later));
/// assert!(!health.try_admit(later));
/// health.on_success(later);
/// assert!(health.try_admit(later) && health.try_admit(later));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    consecutive_failures: u32,
    ejections: u32,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Healthy,
    Ejected {
        until: Duration,
    },
    /// Ejection over; `probing` while the single probe call is out.
    Probation {
        probing: bool,
    },
}

impl Health {
    /// Whether the server is ejected at `now` (its ejection not yet over).
    pub fn is_ejected(&self, now: Duration) -> bool {
        matches!(self.state, State::Ejected { until } if now < until)
    }

    /// Whether a call may go to this server at `now`, without admitting it.
    pub fn is_available(&self, now: Duration) -> bool {
        match self.state {
            State::Healthy => true,
            State::Ejected { until } => now >= until,
            State::Probation { probing } => !probing,
        }
    }

    /// Admits a call at `now` if the server takes calls: always when healthy;
    /// after an ejection, only one probe until it answers.
    pub fn try_admit(&mut self, now: Duration) -> bool {
        match self.state {
            State::Healthy => true,
            State::Ejected { until } if now < until => false,
            State::Ejected { .. } | State::Probation { probing: false } => {
                self.state = State::Probation { probing: true };
                true
            }
            State::Probation { probing: true } => false,
        }
    }

    /// Gives back the probe admission of an attempt that ended with no
    /// verdict (cancelled), so that another probe may go.
    pub fn release_probe(&mut self) {
        if self.state == (State::Probation { probing: true }) {
            self.state = State::Probation { probing: false };
        }
    }

    /// Times this server was ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Records an answer (any status that shows the server is up).
    pub fn on_success(&mut self, _now: Duration) {
        self.consecutive_failures = 0;
        if matches!(self.state, State::Probation { .. }) {
            self.state = State::Healthy;
        }
    }

    /// Records a failure that suggests the server is down (connect error,
    /// UNAVAILABLE, reset). Ejects it when the failures reach the threshold
    /// and `may_eject` (the share of ejected servers allows it); a failed
    /// probe ejects it again at once, for longer. `jitter` is uniform in
    /// [0, 1). Returns whether this failure ejected the server.
    pub fn on_failure(
        &mut self,
        now: Duration,
        may_eject: bool,
        jitter: f64,
        config: &EjectionConfig,
    ) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let failed_probe = matches!(self.state, State::Probation { .. });
        let over = self.consecutive_failures >= config.consecutive_failures.max(1);
        if !(failed_probe || (over && may_eject && self.state == State::Healthy)) {
            return false;
        }
        let ejection = ejection_time(self.ejections, jitter, config);
        self.ejections = self.ejections.saturating_add(1);
        self.state = State::Ejected {
            until: now + ejection,
        };
        true
    }
}

/// `base × 2^n`, capped at the maximum, times a jitter factor in [0.75, 1.25).
fn ejection_time(previous: u32, jitter: f64, config: &EjectionConfig) -> Duration {
    let factor = 2f64.powi(previous.min(30) as i32);
    let raw = config.base_ejection.as_secs_f64() * factor;
    let capped = raw.min(config.max_ejection.as_secs_f64());
    Duration::from_secs_f64(capped * (0.75 + 0.5 * jitter.clamp(0.0, 1.0))).min(config.max_ejection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn fail(h: &mut Health, now: Duration, times: u32) -> bool {
        let config = EjectionConfig::default();
        (0..times).fold(false, |ejected, _| {
            h.on_failure(now, true, 0.5, &config) || ejected
        })
    }

    #[test]
    fn ejected_after_the_threshold_only() {
        let mut h = Health::default();
        assert!(!fail(&mut h, s(0), 4));
        assert!(h.try_admit(s(0)));
        assert!(fail(&mut h, s(0), 1));
        assert!(h.is_ejected(s(0)) && !h.is_available(s(4)));
        assert_eq!(h.ejections(), 1);
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut h = Health::default();
        fail(&mut h, s(0), 4);
        h.on_success(s(0));
        assert!(!fail(&mut h, s(0), 4));
        assert!(!h.is_ejected(s(0)));
    }

    #[test]
    fn ejection_grows_with_repeats_and_is_capped() {
        let config = EjectionConfig::default();
        let times: Vec<_> = (0..10).map(|n| ejection_time(n, 0.5, &config)).collect();
        assert_eq!(times[0], s(5));
        assert_eq!(times[1], s(10));
        assert_eq!(times[2], s(20));
        assert_eq!(times[9], s(300));
        // Jitter spreads it by ±25%.
        assert_eq!(ejection_time(0, 0.0, &config), Duration::from_millis(3750));
        assert!(ejection_time(0, 0.999, &config) < Duration::from_millis(6250));
    }

    #[test]
    fn one_probe_after_ejection_and_a_failed_probe_ejects_longer() {
        let config = EjectionConfig::default();
        let mut h = Health::default();
        fail(&mut h, s(0), 5);
        assert!(h.try_admit(s(5)), "the ejection (5 s) is over: a probe");
        assert!(!h.try_admit(s(5)), "only one probe at a time");
        assert!(
            h.on_failure(s(6), true, 0.5, &config),
            "a failed probe ejects at once"
        );
        assert!(h.is_ejected(s(6 + 9)));
        assert!(!h.is_ejected(s(6 + 10)), "second ejection: 10 s");
        assert!(h.try_admit(s(16)));
        h.on_success(s(16));
        assert!(h.try_admit(s(16)) && h.try_admit(s(16)));
    }

    #[test]
    fn no_ejection_when_the_share_is_used_up() {
        let config = EjectionConfig::default();
        let mut h = Health::default();
        for _ in 0..20 {
            assert!(!h.on_failure(s(0), false, 0.5, &config));
        }
        assert!(h.try_admit(s(0)));
        // Once allowed, the next failure ejects.
        assert!(h.on_failure(s(1), true, 0.5, &config));
    }

    #[test]
    fn share_rule() {
        assert!(may_eject(0, 2, 0.5));
        assert!(!may_eject(1, 2, 0.5));
        assert!(may_eject(4, 10, 0.5));
        assert!(!may_eject(5, 10, 0.5));
        assert!(!may_eject(0, 0, 1.0));
        assert!(may_eject(2, 3, 1.0));
    }
}
