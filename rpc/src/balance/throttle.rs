//! Client-side throttling of a cluster that sheds most of what it is sent.
//!
//! A shed call is cheap for a server but not free: its stream is accepted,
//! its header read and a refusal written, and the client spent as much on
//! sending it. At five times a cluster's capacity four calls in five are
//! shed, and their refusals take CPU from the calls being served. The
//! client therefore refuses part of its calls itself, before they are
//! sent, with the probability of Google's adaptive throttling ("Handling
//! Overload", *Site Reliability Engineering*, chapter 21):
//!
//! ```text
//! p = max(0, (requests - k × accepts) / (requests + 1))
//! ```
//!
//! over a sliding window, where `requests` are the attempts the servers
//! answered or shed plus the calls refused here, and `accepts` the attempts
//! they answered (with any status but a shed). While the servers accept at
//! least one attempt in `k`, nothing is refused here; past that, the client
//! sends about `k` times what is accepted, so that the servers stay busy
//! (the excess over `1×` keeps finding room as it appears) without taking
//! the whole overload in refusals. A failure to reach a server (connection
//! lost, ejected) is neither: a cluster that is down is not throttled, its
//! calls fail with why.

use std::time::Duration;

use super::window::Window;

const REQUESTS: usize = 0;
const ACCEPTS: usize = 1;

/// Client-side throttling settings.
///
/// ```
/// use quicall_rpc::balance::ThrottleConfig;
/// use std::time::Duration;
/// let config = ThrottleConfig::default();
/// assert_eq!((config.k, config.window), (2.0, Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// Attempts sent per attempt accepted before the client starts refusing
    /// calls itself. Default 2: nothing is refused while at least half the
    /// attempts are accepted. Lower is stricter (1.1 refuses as soon as a
    /// tenth is shed); higher wastes more of the servers on refusals.
    pub k: f64,
    /// How long an attempt's outcome counts. Default 2 s: the throttle
    /// lets go within that once the servers accept again (at the latest
    /// when the sheds have expired; sooner, as accepts outweigh them).
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            k: 2.0,
            window: Duration::from_secs(2),
        }
    }
}

/// What the window held when a call was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttled {
    /// Attempts answered or shed, and calls refused, in the window.
    pub requests: u64,
    /// Attempts answered (not shed) in the window.
    pub accepts: u64,
    /// The probability a call was refused with.
    pub probability: f64,
}

/// The throttle's state: outcomes over a sliding window.
///
/// ```
/// use quicall_rpc::balance::{Throttle, ThrottleConfig};
/// use std::time::Duration;
///
/// let mut throttle = Throttle::new(ThrottleConfig::default());
/// let now = Duration::ZERO;
/// // 100 attempts, 10 accepted: the client refuses (100 - 2 × 10) / 101.
/// for i in 0..100 {
///     if i < 10 { throttle.accepted(now) } else { throttle.shed(now) }
/// }
/// assert!((throttle.probability(now) - 80.0 / 101.0).abs() < 1e-9);
/// // A call drawn above the probability is sent, one below it refused.
/// assert!(throttle.admit(now, 0.9).is_ok());
/// assert!(throttle.admit(now, 0.1).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Throttle {
    k: f64,
    /// Requests and accepts.
    window: Window<2>,
}

impl Throttle {
    /// A throttle with nothing observed (it refuses nothing).
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            k: config.k,
            window: Window::new(config.window),
        }
    }

    /// The probability that a call is refused at `now`.
    pub fn probability(&mut self, now: Duration) -> f64 {
        let [requests, accepts] = self.window.sums(now);
        refusal(requests, accepts, self.k)
    }

    /// Decides whether a new call is sent at `now`, with `draw` uniform in
    /// `[0, 1)`; a call refused counts as a request.
    pub fn admit(&mut self, now: Duration, draw: f64) -> Result<(), Throttled> {
        let [requests, accepts] = self.window.sums(now);
        let probability = refusal(requests, accepts, self.k);
        if draw >= probability {
            return Ok(());
        }
        self.window.add(now, REQUESTS);
        Err(Throttled {
            requests: requests + 1,
            accepts,
            probability,
        })
    }

    /// An attempt was answered (any status but a shed).
    pub fn accepted(&mut self, now: Duration) {
        self.window.add(now, REQUESTS);
        self.window.add(now, ACCEPTS);
    }

    /// An attempt was shed by its server.
    pub fn shed(&mut self, now: Duration) {
        self.window.add(now, REQUESTS);
    }
}

fn refusal(requests: u64, accepts: u64, k: f64) -> f64 {
    ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(k: f64) -> ThrottleConfig {
        ThrottleConfig {
            k,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn nothing_refused_while_half_or_more_is_accepted() {
        let mut t = Throttle::new(config(2.0));
        for i in 0..1000 {
            if i % 2 == 0 {
                t.accepted(ms(i));
            } else {
                t.shed(ms(i));
            }
        }
        assert_eq!(t.probability(ms(1000)), 0.0);
        assert!(t.admit(ms(1000), 0.0).is_ok());
    }

    #[test]
    fn nothing_refused_before_anything_is_seen() {
        let mut t = Throttle::new(config(2.0));
        assert!((0..1000).all(|_| t.admit(ms(0), 0.0).is_ok()));
    }

    /// A server that finishes a call a ms and sheds a call that finds 3
    /// waiting, offered five times that: the client ends up sending about
    /// k times what is accepted and refusing the rest itself, and the
    /// server stays busy.
    #[test]
    fn sends_about_k_times_what_is_accepted() {
        for k in [1.5, 2.0, 3.0] {
            let mut t = Throttle::new(config(k));
            let mut rng = fastrand::Rng::with_seed(7);
            let (mut sent, mut accepted, mut refused, mut queue) = (0u64, 0u64, 0u64, 0u64);
            // 20 s of 5 calls a ms.
            for step in 0..20_000u64 {
                let now = ms(step);
                for _ in 0..5 {
                    match t.admit(now, rng.f64()) {
                        Err(_) => refused += 1,
                        Ok(()) if queue < 3 => {
                            queue += 1;
                            sent += 1;
                            accepted += 1;
                            t.accepted(now);
                        }
                        Ok(()) => {
                            sent += 1;
                            t.shed(now);
                        }
                    }
                }
                queue = queue.saturating_sub(1);
                // The last 10 s: the window's steady state.
                if step == 9_999 {
                    (sent, accepted, refused) = (0, 0, 0);
                }
            }
            let ratio = sent as f64 / accepted as f64;
            assert!(
                (ratio - k).abs() < 0.1 * k,
                "k {k}: sent {sent} ({ratio:.2}x the {accepted} accepted), refused {refused}"
            );
            assert!(
                accepted >= 9_500,
                "k {k}: the server idled ({accepted} of 10,000 accepted)"
            );
            assert_eq!(sent + refused, 50_000);
        }
    }

    #[test]
    fn recovers_when_the_cluster_accepts_again() {
        let mut t = Throttle::new(config(2.0));
        for _ in 0..1000 {
            t.shed(ms(0));
        }
        assert!(t.probability(ms(0)) > 0.99);
        // The sheds expire with the window.
        assert!(t.probability(ms(9_999)) > 0.99);
        assert_eq!(t.probability(ms(10_000)), 0.0);
        // Accepts outweigh the sheds before the window ends: with k = 2,
        // 1,000 accepted attempts cancel 1,000 shed ones.
        let mut t = Throttle::new(config(2.0));
        for _ in 0..1000 {
            t.shed(ms(0));
        }
        for i in 0..999 {
            t.accepted(ms(1 + i));
        }
        assert!(t.probability(ms(1000)) > 0.0);
        t.accepted(ms(1000));
        assert_eq!(t.probability(ms(1000)), 0.0);
    }

    #[test]
    fn a_refusal_reports_the_window_and_counts_as_a_request() {
        let mut t = Throttle::new(config(2.0));
        for _ in 0..9 {
            t.shed(ms(0));
        }
        let refused = t.admit(ms(0), 0.0).expect_err("p = 0.9");
        assert_eq!(refused.requests, 10);
        assert_eq!(refused.accepts, 0);
        assert!((refused.probability - 0.9).abs() < 1e-9);
        assert!((t.probability(ms(0)) - 10.0 / 11.0).abs() < 1e-9);
    }
}
