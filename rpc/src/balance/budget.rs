//! The retry budget.
//!
//! Why a budget and not a maximum number of retries per call: when a whole
//! cluster fails, "3 retries per call" multiplies the load on it by four just
//! when it can least take it — a retry storm. A budget instead lets retries
//! be at most a fixed share of the calls made recently (plus a small floor so
//! that a client making few calls can still retry), whatever the number of
//! failures. When servers fail now and then, every retry fits in the budget;
//! when they all fail, the extra load is bounded by the ratio. Finagle and
//! tower use the same scheme.

use std::time::Duration;

use super::window::Window;

/// Retry budget settings.
///
/// ```
/// use quicall_rpc::balance::RetryBudgetConfig;
/// let config = RetryBudgetConfig::default();
/// assert_eq!((config.ratio, config.min_per_second), (0.2, 10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per call made, over the window. Default 0.2 (20%).
    pub ratio: f64,
    /// Retries allowed per second whatever the calls. Default 10.
    pub min_per_second: u32,
    /// How long a call's deposit counts. Default 10 s.
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

const CALLS: usize = 0;
const RETRIES: usize = 1;

/// A token bucket of retries: each call deposits `ratio` of a token, each
/// retry or hedge withdraws one, deposits expire after `ttl`, and a reserve
/// of `min_per_second × ttl` tokens is always there.
///
/// Time is kept in ten slices of `ttl / 10`; a deposit or withdrawal
/// expires with its slice.
///
/// ```
/// use quicall_rpc::balance::{RetryBudget, RetryBudgetConfig};
/// use std::time::Duration;
///
/// let config = RetryBudgetConfig { ratio: 0.1, min_per_second: 0, ttl: Duration::from_secs(10) };
/// let mut budget = RetryBudget::new(config);
/// let now = Duration::ZERO;
/// for _ in 0..100 {
///     budget.deposit(now);
/// }
/// let retries = (0..100).filter(|_| budget.try_withdraw(now)).count();
/// assert_eq!(retries, 10);
/// ```
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// Calls and retries.
    window: Window<2>,
}

impl RetryBudget {
    /// An empty budget (only the reserve is available).
    pub fn new(config: RetryBudgetConfig) -> Self {
        Self {
            config,
            window: Window::new(config.ttl),
        }
    }

    /// Records a call (a first attempt) at `now`.
    pub fn deposit(&mut self, now: Duration) {
        self.window.add(now, CALLS);
    }

    /// Tokens available at `now`.
    pub fn balance(&mut self, now: Duration) -> f64 {
        let [calls, retries] = self.window.sums(now);
        let reserve = f64::from(self.config.min_per_second) * self.config.ttl.as_secs_f64();
        calls as f64 * self.config.ratio + reserve - retries as f64
    }

    /// Takes one token for a retry or a hedge at `now`, if there is one.
    pub fn try_withdraw(&mut self, now: Duration) -> bool {
        if self.balance(now) < 1.0 {
            return false;
        }
        self.window.add(now, RETRIES);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(ratio: f64, min_per_second: u32) -> RetryBudgetConfig {
        RetryBudgetConfig {
            ratio,
            min_per_second,
            ttl: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_reserve_alone() {
        let mut b = RetryBudget::new(config(0.2, 10));
        let n = (0..1000).filter(|_| b.try_withdraw(ms(0))).count();
        assert_eq!(n, 100, "10 per second over a 10 s window");
    }

    #[test]
    fn retries_bounded_by_the_ratio_when_everything_fails() {
        let mut b = RetryBudget::new(config(0.2, 0));
        let mut retries = 0;
        // 1000 calls over 5 s, each wanting 3 retries.
        for k in 0..1000u64 {
            let now = ms(k * 5);
            b.deposit(now);
            for _ in 0..3 {
                if b.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        assert!((195..=200).contains(&retries), "{retries}");
    }

    #[test]
    fn deposits_expire_after_the_ttl() {
        let mut b = RetryBudget::new(config(1.0, 0));
        for _ in 0..10 {
            b.deposit(ms(0));
        }
        assert_eq!(b.balance(ms(9_000)), 10.0);
        assert_eq!(b.balance(ms(10_000)), 0.0);
        assert!(!b.try_withdraw(ms(10_000)));
    }

    #[test]
    fn withdrawals_expire_too() {
        let mut b = RetryBudget::new(config(0.0, 1));
        assert_eq!((0..20).filter(|_| b.try_withdraw(ms(0))).count(), 10);
        assert!(!b.try_withdraw(ms(5_000)));
        assert!(
            b.try_withdraw(ms(10_000)),
            "the early withdrawals have expired"
        );
    }

    #[test]
    fn long_gaps_clear_everything() {
        let mut b = RetryBudget::new(config(0.5, 0));
        for _ in 0..4 {
            b.deposit(ms(0));
        }
        assert_eq!(b.balance(Duration::from_secs(3600)), 0.0);
        b.deposit(Duration::from_secs(3600));
        assert_eq!(b.balance(Duration::from_secs(3600)), 0.5);
    }
}
