//! The limiter in front of a simulated server: `workers` cores, calls that
//! take `service` of CPU each, served first come first served, fed by an
//! open loop of Poisson arrivals. Time is simulated; every run is the same.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What a phase of a simulation saw.
#[derive(Debug, Default)]
struct Phase {
    admitted: u64,
    shed: u64,
    /// Latencies of the admitted calls that ended in the phase, sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// Most calls admitted at once.
    peak_in_flight: usize,
}

impl Phase {
    fn goodput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn p99(&self) -> Duration {
        let i = (self.latencies.len() * 99 / 100).min(self.latencies.len() - 1);
        self.latencies[i]
    }
    fn shed_share(&self) -> f64 {
        self.shed as f64 / (self.admitted + self.shed).max(1) as f64
    }
}

struct Sim {
    limit: AdaptiveLimit,
    /// When each worker is next free.
    workers: Vec<Duration>,
    /// Admitted calls not yet ended: (end, admitted at).
    ends: BinaryHeap<Reverse<(Duration, Duration)>>,
    now: Duration,
    rng: fastrand::Rng,
}

impl Sim {
    fn new(options: Adaptive, workers: usize) -> Self {
        Self {
            limit: AdaptiveLimit::new(options, 1024),
            workers: vec![Duration::ZERO; workers],
            ends: BinaryHeap::new(),
            now: Duration::ZERO,
            rng: fastrand::Rng::with_seed(7),
        }
    }

    /// Calls that end by `t` end: the limiter learns from each.
    fn end_until(&mut self, t: Duration, phase: &mut Phase) {
        while let Some(&Reverse((end, admitted))) = self.ends.peek() {
            if end > t {
                break;
            }
            let in_flight = self.ends.len();
            self.ends.pop();
            self.limit.sample(end - admitted, true, in_flight, end);
            phase.latencies.push(end - admitted);
        }
    }

    /// One call arrives now: admitted (and queued for the first free
    /// worker) if fewer than the limit are in flight, else shed.
    fn arrive(&mut self, service: Duration, phase: &mut Phase) {
        let now = self.now;
        self.end_until(now, phase);
        if self.ends.len() >= self.limit.limit() {
            phase.shed += 1;
            return;
        }
        phase.admitted += 1;
        let worker = (0..self.workers.len())
            .min_by_key(|&i| self.workers[i])
            .unwrap();
        let end = self.workers[worker].max(now) + service;
        self.workers[worker] = end;
        self.ends.push(Reverse((end, now)));
        phase.peak_in_flight = phase.peak_in_flight.max(self.ends.len());
    }

    /// Poisson arrivals at `rate` calls/s for `length`, each taking
    /// `service`.
    fn offer(&mut self, rate: f64, service: Duration, length: Duration) -> Phase {
        let mut phase = Phase {
            elapsed: length,
            ..Phase::default()
        };
        let end = self.now + length;
        loop {
            let gap = -(1.0 - self.rng.f64()).ln() / rate;
            self.now += Duration::from_secs_f64(gap);
            if self.now >= end {
                break;
            }
            self.arrive(service, &mut phase);
        }
        self.now = end;
        self.end_until(end, &mut phase);
        phase.latencies.sort();
        phase
    }

    /// `n` calls arrive at once.
    fn burst(&mut self, n: usize, service: Duration) -> Phase {
        let mut phase = Phase::default();
        for _ in 0..n {
            self.arrive(service, &mut phase);
        }
        phase
    }
}

fn options(workers: usize) -> Adaptive {
    Adaptive {
        min_limit: workers,
        remeasure_every: secs(5),
        ..Adaptive::default()
    }
}

/// 4 workers, 1 ms a call: a capacity of 4,000 calls/s.
const WORKERS: usize = 4;

fn capacity(service: Duration) -> f64 {
    WORKERS as f64 / service.as_secs_f64()
}

/// The targets of overload: goodput at least 90% of capacity, and the
/// admitted calls' p99 at most twice the no-load latency.
fn assert_holds(phase: &Phase, service: Duration, what: &str) {
    let goodput = phase.goodput();
    assert!(
        goodput >= 0.9 * capacity(service),
        "{what}: goodput {goodput:.0}/s of a capacity of {:.0}/s",
        capacity(service)
    );
    assert!(
        phase.p99() <= 2 * service,
        "{what}: p99 of admitted calls {:?} for calls of {service:?}",
        phase.p99()
    );
}

#[test]
fn five_times_capacity_is_shed_and_what_is_admitted_does_not_queue() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let s = ms(1);
    // Warm at half the capacity, then five times it.
    sim.offer(0.5 * capacity(s), s, secs(5));
    let settle = sim.offer(5.0 * capacity(s), s, secs(3));
    let overload = sim.offer(5.0 * capacity(s), s, secs(10));
    assert!(settle.shed > 0);
    assert_holds(&overload, s, "5x");
    assert!(overload.shed_share() > 0.75, "{}", overload.shed_share());
    let limit = sim.limit.limit();
    assert!((WORKERS..=2 * WORKERS).contains(&limit), "limit {limit}");
    let no_load = sim.limit.no_load_latency().unwrap();
    assert!(no_load >= s && no_load < s * 3 / 2, "{no_load:?}");
}

#[test]
fn without_a_limit_the_same_load_queues_without_bound() {
    // The same server behind the fixed outer bound alone: the queue grows
    // until the bound, and every admitted call waits for it.
    let fixed = Adaptive {
        initial_limit: 1024,
        min_limit: 1024,
        ..options(WORKERS)
    };
    let mut sim = Sim::new(fixed, WORKERS);
    let s = ms(1);
    let overload = sim.offer(5.0 * capacity(s), s, secs(3));
    assert!(overload.p99() > 100 * s, "{:?}", overload.p99());
}

#[test]
fn light_load_is_not_shed() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let s = ms(1);
    let quiet = sim.offer(0.1 * capacity(s), s, secs(20));
    assert_eq!(quiet.shed, 0);
    // At half the capacity, Poisson arrivals now and then bring more than
    // twice the no-load concurrency at once; the excess (about one call in
    // a thousand with 4 workers, fewer with more) is refused.
    let half = sim.offer(0.5 * capacity(s), s, secs(20));
    assert!(half.shed_share() < 0.005, "{}", half.shed_share());
    assert_eq!(sim.limit.limit(), 2 * WORKERS);
}

#[test]
fn the_limit_follows_capacity_up() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let slow = ms(2);
    let fast = ms(1);
    sim.offer(5.0 * capacity(slow), slow, secs(10));
    let limit_before = sim.limit.limit();
    // The handler becomes twice as fast, under the same overload.
    sim.offer(5.0 * capacity(fast), fast, secs(10));
    let after = sim.offer(5.0 * capacity(fast), fast, secs(10));
    assert_holds(&after, fast, "after the step up");
    assert!(sim.limit.peak_rate() >= 0.9 * capacity(fast));
    assert!(sim.limit.limit() >= limit_before.min(WORKERS));
}

#[test]
fn a_handler_that_gets_slower_is_learned_by_remeasuring() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let fast = ms(1);
    let slow = ms(3);
    sim.offer(5.0 * capacity(fast), fast, secs(10));
    assert!(sim.limit.no_load_latency().unwrap() < ms(2));
    // Three times slower: the old no-load latency is wrong until it is
    // measured again (every 5 s here).
    sim.offer(5.0 * capacity(slow), slow, secs(12));
    let after = sim.offer(5.0 * capacity(slow), slow, secs(10));
    let no_load = sim.limit.no_load_latency().unwrap();
    assert!(no_load >= slow && no_load < slow * 3 / 2, "{no_load:?}");
    assert_holds(&after, slow, "after the handler slowed");
}

#[test]
fn the_limit_comes_back_up_when_calls_get_cheap_again() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let (fast, slow) = (ms(1), ms(4));
    sim.offer(5.0 * capacity(fast), fast, secs(5));
    sim.offer(5.0 * capacity(slow), slow, secs(12));
    sim.offer(5.0 * capacity(fast), fast, secs(12));
    let after = sim.offer(5.0 * capacity(fast), fast, secs(10));
    assert_holds(&after, fast, "back to fast calls");
}

#[test]
fn a_burst_is_cut_at_the_limit_and_teaches_nothing_wrong() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let s = ms(1);
    sim.offer(5.0 * capacity(s), s, secs(5));
    sim.offer(0.5 * capacity(s), s, secs(5));
    let limit = sim.limit.limit();
    // 10,000 calls at one instant: only the limit's worth gets in.
    let burst = sim.burst(10_000, s);
    assert!(burst.admitted as usize <= limit);
    assert_eq!(burst.admitted + burst.shed, 10_000);
    // Load back at half capacity: next to nothing shed, latency at its
    // floor.
    let after = sim.offer(0.5 * capacity(s), s, secs(10));
    assert!(after.shed_share() < 0.005, "{}", after.shed_share());
    assert!(after.p99() <= 2 * s, "{:?}", after.p99());
    assert!(sim.limit.limit() >= WORKERS);
}

#[test]
fn the_limit_recovers_from_overload_when_load_drops() {
    let mut sim = Sim::new(options(WORKERS), WORKERS);
    let s = ms(1);
    sim.offer(5.0 * capacity(s), s, secs(10));
    // Headroom comes back within seconds.
    sim.offer(0.5 * capacity(s), s, secs(3));
    let calm = sim.offer(0.5 * capacity(s), s, secs(10));
    assert!(calm.shed_share() < 0.005, "{}", calm.shed_share());
    assert_eq!(sim.limit.limit(), 2 * WORKERS);
}

#[test]
fn the_limit_stays_within_its_bounds() {
    let options = Adaptive {
        initial_limit: 10_000,
        min_limit: 3,
        ..Adaptive::default()
    };
    let mut limit = AdaptiveLimit::new(options, 100);
    assert_eq!(limit.limit(), 100);
    // Calls that take 1 µs, one at a time: the learned concurrency is tiny;
    // the limit is the floor and its headroom.
    for i in 1..=1000u64 {
        limit.sample(
            Duration::from_micros(1),
            true,
            1,
            Duration::from_micros(2 * i),
        );
    }
    assert!((3..=6).contains(&limit.limit()), "{}", limit.limit());
    // Calls that take 10 s and finish 1,000 a second: held at the bound.
    let mut limit = AdaptiveLimit::new(options, 100);
    for i in 1..=1000u64 {
        limit.sample(secs(5), true, 5000, secs(5) + ms(i));
    }
    assert_eq!(limit.limit(), 100);
}

#[test]
fn windows_of_failures_halve_the_limit_and_quiet_windows_teach_nothing() {
    let options = Adaptive {
        initial_limit: 64,
        min_limit: 2,
        ..Adaptive::default()
    };
    let mut limit = AdaptiveLimit::new(options, 1024);
    // Every call of a window failed for want of time.
    for i in 1..=200u64 {
        limit.sample(ms(100), false, 64, secs(1) + ms(i));
    }
    assert_eq!(limit.limit(), 32);
    assert_eq!(limit.windows(), 0);
    // Ten calls in 10 s: too few to learn from.
    for i in 1..=10u64 {
        limit.sample(ms(1), true, 1, secs(10 + i));
    }
    assert_eq!(limit.limit(), 32);
    assert_eq!(limit.no_load_latency(), None);
}
