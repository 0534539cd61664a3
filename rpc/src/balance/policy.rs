use std::fmt;
use std::str::FromStr;

/// What the selection knows of one server when a call is placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Calls sent to it and not answered yet.
    pub in_flight: u32,
    /// Its latency estimate in nanoseconds ([`PeakEwma`](super::PeakEwma)).
    pub latency_ns: f64,
}

impl Candidate {
    /// Predicted latency of one more call: the estimate times (calls in flight + 1).
    pub fn load(&self) -> f64 {
        self.latency_ns.max(1.0) * (f64::from(self.in_flight) + 1.0)
    }
}

/// How a client spreads calls over servers.
///
/// ```
/// use quicall_rpc::balance::{Candidate, Policy};
/// let servers = [
///     Candidate { in_flight: 0, latency_ns: 1e6 },
///     Candidate { in_flight: 0, latency_ns: 20e6 }, // 20x slower
/// ];
/// let mut rng = { let mut x = 1u64; move || { x = x.wrapping_mul(6364136223846793005).wrapping_add(1); x } };
/// // With two servers, power of two choices always compares both: the fast one wins.
/// for _ in 0..10 {
///     assert_eq!(Policy::PeakEwma.pick(2, |i| Some(servers[i]), 0, &mut rng), Some(0));
/// }
/// assert_eq!(Policy::RoundRobin.pick(2, |i| Some(servers[i]), 7, &mut rng), Some(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Power of two choices by predicted latency (peak EWMA × (in flight + 1)):
    /// two random available servers are compared and the lower wins. O(1).
    #[default]
    PeakEwma,
    /// Each call to the next available server in turn.
    RoundRobin,
    /// A uniformly random available server.
    Random,
    /// The available server with the fewest calls in flight (ties broken at
    /// random). O(n) in the number of servers.
    LeastOutstanding,
}

/// Random draws for power of two choices before falling back to a scan.
const DRAWS: usize = 8;

impl Policy {
    /// Picks a server among `n`. `candidate(i)` describes server `i`, or is
    /// `None` when it cannot take a call now (ejected, connecting after a
    /// failure, draining, or excluded for this attempt). `turn` is a counter
    /// that advances per call (round-robin), `rng` a source of random `u64`s.
    /// `None` when no server is available.
    pub fn pick(
        self,
        n: usize,
        candidate: impl Fn(usize) -> Option<Candidate>,
        turn: u64,
        rng: &mut impl FnMut() -> u64,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        match self {
            Policy::PeakEwma => p2c(n, &candidate, rng),
            Policy::RoundRobin => first_available(n, (turn % n as u64) as usize, &candidate),
            Policy::Random => first_available(n, below(rng, n), &candidate),
            Policy::LeastOutstanding => {
                let start = below(rng, n);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter_map(|i| candidate(i).map(|c| (i, c.in_flight)))
                    .min_by_key(|&(_, in_flight)| in_flight)
                    .map(|(i, _)| i)
            }
        }
    }

    /// The policy's name in configuration and output.
    pub fn name(self) -> &'static str {
        match self {
            Policy::PeakEwma => "p2c-peak-ewma",
            Policy::RoundRobin => "round-robin",
            Policy::Random => "random",
            Policy::LeastOutstanding => "least-outstanding",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            Policy::PeakEwma,
            Policy::RoundRobin,
            Policy::Random,
            Policy::LeastOutstanding,
        ]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| {
            format!("unknown policy {s:?}: p2c-peak-ewma, round-robin, random, least-outstanding")
        })
    }
}

fn below(rng: &mut impl FnMut() -> u64, n: usize) -> usize {
    // Lemire's multiply-shift: uniform enough for selection, no division.
    ((u128::from(rng()) * n as u128) >> 64) as usize
}

fn first_available(
    n: usize,
    start: usize,
    candidate: &impl Fn(usize) -> Option<Candidate>,
) -> Option<usize> {
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| candidate(i).is_some())
}

fn p2c(
    n: usize,
    candidate: &impl Fn(usize) -> Option<Candidate>,
    rng: &mut impl FnMut() -> u64,
) -> Option<usize> {
    if n == 1 {
        return candidate(0).map(|_| 0);
    }
    let mut first: Option<(usize, Candidate)> = None;
    for _ in 0..DRAWS {
        let i = match first {
            // The second draw is among the other n - 1 servers.
            Some((a, _)) => (a + 1 + below(rng, n - 1)) % n,
            None => below(rng, n),
        };
        let Some(c) = candidate(i) else { continue };
        match first {
            None => first = Some((i, c)),
            Some((a, ca)) => return Some(if c.load() < ca.load() { i } else { a }),
        }
    }
    // Most servers are unavailable: scan for the least loaded one left.
    (0..n)
        .filter_map(|i| candidate(i).map(|c| (i, c.load())))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic source (splitmix64).
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn c(in_flight: u32, latency_ms: f64) -> Candidate {
        Candidate {
            in_flight,
            latency_ns: latency_ms * 1e6,
        }
    }

    fn shares(policy: Policy, servers: &[Option<Candidate>], calls: usize) -> Vec<usize> {
        let mut counts = vec![0; servers.len()];
        let mut r = rng(42);
        for turn in 0..calls as u64 {
            let i = policy
                .pick(servers.len(), |i| servers[i], turn, &mut r)
                .unwrap();
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn p2c_avoids_a_slow_server() {
        let servers = [Some(c(0, 1.0)), Some(c(0, 20.0)), Some(c(0, 1.0))];
        let counts = shares(Policy::PeakEwma, &servers, 3000);
        // The slow one wins only when drawn twice, which p2c never does: never.
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(counts[0] > 1200 && counts[2] > 1200, "{counts:?}");
    }

    #[test]
    fn p2c_weighs_calls_in_flight() {
        // Equal latency: the one with 5 calls in flight loses every comparison.
        let servers = [Some(c(5, 1.0)), Some(c(0, 1.0)), Some(c(1, 1.0))];
        let counts = shares(Policy::PeakEwma, &servers, 3000);
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > counts[2], "{counts:?}");
        // A fast server with many calls in flight can lose to a slower idle one.
        let servers = [Some(c(9, 1.0)), Some(c(0, 5.0))];
        assert_eq!(shares(Policy::PeakEwma, &servers, 100), vec![0, 100]);
    }

    #[test]
    fn p2c_is_spread_over_equal_servers() {
        let servers = vec![Some(c(0, 1.0)); 4];
        let counts = shares(Policy::PeakEwma, &servers, 4000);
        for n in counts {
            assert!((800..1200).contains(&n), "{n}");
        }
    }

    #[test]
    fn unavailable_servers_are_never_picked() {
        for policy in [
            Policy::PeakEwma,
            Policy::RoundRobin,
            Policy::Random,
            Policy::LeastOutstanding,
        ] {
            let servers = [
                None,
                Some(c(3, 9.0)),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            ];
            let counts = shares(policy, &servers, 200);
            assert_eq!(counts[1], 200, "{policy}: {counts:?}");
            let none: [Option<Candidate>; 3] = [None, None, None];
            assert_eq!(
                policy.pick(3, |i| none[i], 0, &mut rng(1)),
                None,
                "{policy}"
            );
            assert_eq!(policy.pick(0, |_| None, 0, &mut rng(1)), None, "{policy}");
        }
    }

    #[test]
    fn round_robin_takes_turns_and_skips_the_unavailable() {
        let servers = [Some(c(0, 1.0)), None, Some(c(0, 1.0))];
        let mut r = rng(3);
        let picks: Vec<_> = (0..6)
            .map(|t| {
                Policy::RoundRobin
                    .pick(3, |i| servers[i], t, &mut r)
                    .unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 2, 2, 0, 2, 2]);
        let all = [Some(c(0, 20.0)), Some(c(0, 1.0)), Some(c(0, 1.0))];
        assert_eq!(shares(Policy::RoundRobin, &all, 300), vec![100, 100, 100]);
    }

    #[test]
    fn least_outstanding_picks_the_fewest_in_flight() {
        let servers = [Some(c(4, 1.0)), Some(c(2, 50.0)), Some(c(3, 1.0))];
        assert_eq!(
            shares(Policy::LeastOutstanding, &servers, 50),
            vec![0, 50, 0]
        );
    }

    #[test]
    fn random_is_uniform_enough() {
        let servers = vec![Some(c(0, 1.0)); 3];
        for n in shares(Policy::Random, &servers, 3000) {
            assert!((850..1150).contains(&n), "{n}");
        }
    }

    #[test]
    fn names_round_trip() {
        for p in [
            Policy::PeakEwma,
            Policy::RoundRobin,
            Policy::Random,
            Policy::LeastOutstanding,
        ] {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert!("fastest".parse::<Policy>().is_err());
    }
}
