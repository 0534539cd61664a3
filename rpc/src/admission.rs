//! Adaptive admission: how many calls a server takes at once, learned from
//! the calls it serves (Little's law, after brpc's auto concurrency
//! limiter).
//!
//! A server with `N` cores and calls that take `S` of CPU each finishes at
//! most `N / S` calls a second; admitting more than about `N` at once only
//! makes them wait (in the runtime's queue, or for a lock), so every caller's
//! latency grows until deadlines pass and the work is wasted. The limiter
//! estimates the **no-load latency** `L₀` (the average latency of a window
//! of calls in which no more ran than the server runs in parallel, or, when
//! the server is never that quiet, measured again every few seconds by
//! holding the limit down for a moment) and the **peak rate** `R` (the most
//! calls finished per second), and admits `L₀ · R · (1 + e)` calls at once:
//! what the server finishes without a queue, plus headroom `e` for bursts.
//! The headroom grows (to 100%) while admitted calls wait less than the
//! queueing bound (half the no-load latency, on average) and drops at once
//! (to 6%) when they wait more. What is over the limit is refused at once
//! (the server answers RESOURCE_EXHAUSTED, not processed), which costs a
//! fraction of a call.
//!
//! Nothing here does I/O or reads a clock: time comes in as a [`Duration`]
//! since an origin the caller chooses, so that every decision can be
//! replayed in a unit test.
//!
//! ```
//! use quicall_rpc::admission::{Adaptive, AdaptiveLimit};
//! use std::time::Duration;
//!
//! let options = Adaptive { min_limit: 1, ..Adaptive::default() };
//! let mut limit = AdaptiveLimit::new(options, 1024);
//! assert_eq!(limit.limit(), options.initial_limit);
//! // One worker: 1 ms per call, one call after another, for a second.
//! let ms = Duration::from_millis;
//! for i in 1..=1000 {
//!     limit.sample(ms(1), true, 1, ms(i));
//! }
//! // It admits what one worker finishes without a queue (and a little more).
//! assert_eq!(limit.no_load_latency(), Some(ms(1)));
//! assert!((1..=2).contains(&limit.limit()), "{}", limit.limit());
//! ```

use std::time::Duration;

/// How the adaptive limit learns (see the [module](self) documentation).
/// The defaults suit calls of microseconds to seconds.
///
/// ```
/// use quicall_rpc::admission::Adaptive;
/// let options = Adaptive::default();
/// assert!(options.min_limit >= 1);
/// assert_eq!(options.initial_limit, options.min_limit);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// Calls admitted at once before anything is learned. Default: as
    /// [`Adaptive::min_limit`] (a first window that queues would teach a
    /// wrong no-load latency).
    pub initial_limit: usize,
    /// The limit never goes below this: the calls the server can run in
    /// parallel (a CPU-bound server wastes cores below it). Default: the
    /// machine's available parallelism (tokio's worker count).
    pub min_limit: usize,
    /// Longest sampling window: a window ends after this long, or after
    /// [`Adaptive::window_calls`] calls, whichever comes first. Default 1 s.
    pub window: Duration,
    /// Calls that end a window. Default 200.
    pub window_calls: u32,
    /// Fewest calls a window must hold to teach anything (a quieter window
    /// is dropped). Default 20.
    pub min_window_calls: u32,
    /// How often the no-load latency is measured again, by holding the
    /// limit at 90% of the no-load concurrency for two latencies; this is
    /// how a handler that became slower (or faster) is learned. Default
    /// 30 s.
    pub remeasure_every: Duration,
    /// Share of extra calls admitted beyond the no-load concurrency while
    /// latency stays at its floor (room for bursts), grown by 0.05 a
    /// window. Default 1.0: twice the no-load concurrency, so that a call
    /// admitted in a burst waits at most about one no-load latency.
    pub max_explore: f64,
    /// Share kept, at once, when calls wait more than
    /// [`Adaptive::max_queueing`]. Default 0.06.
    pub min_explore: f64,
    /// The queueing bound: the longest admitted calls may wait on average,
    /// as a share of the no-load latency. Default 0.5.
    pub max_queueing: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            initial_limit: cores,
            min_limit: cores,
            window: Duration::from_secs(1),
            window_calls: 200,
            min_window_calls: 20,
            remeasure_every: Duration::from_secs(10),
            max_explore: 1.0,
            min_explore: 0.06,
            max_queueing: 0.5,
        }
    }
}

/// Weight of a lower window rate in the peak rate (a higher one replaces it).
const PEAK_WEIGHT: f64 = 0.01;
/// Exploration share added or taken per window.
const EXPLORE_STEP: f64 = 0.05;

/// The adaptive concurrency limit: fed every call's latency as it ends,
/// it says how many calls may run at once.
#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    options: Adaptive,
    max_limit: usize,
    limit: usize,
    window: Window,
    /// No-load latency, in seconds.
    no_load: Option<f64>,
    /// Peak rate, in calls per second.
    peak: f64,
    explore: f64,
    remeasure_at: Duration,
    /// While the no-load latency is measured again: the time the calls
    /// admitted under the old limit have had to end.
    draining_until: Option<Duration>,
    windows: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// When the window began: the end of the last one, or the admission of
    /// the first call ever sampled.
    start: Option<Duration>,
    ok: u32,
    failed: u32,
    /// Latency of the successful calls plus that of the failed ones (a
    /// failure's latency counts against the average, not as a call).
    latency: f64,
    /// Most calls in flight when one ended.
    busiest: usize,
}

impl AdaptiveLimit {
    /// A limit that starts at `options.initial_limit` and stays within
    /// `options.min_limit ..= max_limit` (the server's fixed limit, the outer
    /// bound).
    pub fn new(options: Adaptive, max_limit: usize) -> Self {
        let max_limit = max_limit.max(1);
        let options = Adaptive {
            min_limit: options.min_limit.clamp(1, max_limit),
            ..options
        };
        Self {
            limit: options.initial_limit.clamp(options.min_limit, max_limit),
            options,
            max_limit,
            window: Window::default(),
            no_load: None,
            peak: 0.0,
            explore: options.max_explore,
            remeasure_at: options.remeasure_every,
            draining_until: None,
            windows: 0,
        }
    }

    /// Calls that may run at once now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The no-load latency learned so far.
    pub fn no_load_latency(&self) -> Option<Duration> {
        self.no_load.map(Duration::from_secs_f64)
    }

    /// The peak rate learned so far, in calls per second.
    pub fn peak_rate(&self) -> f64 {
        self.peak
    }

    /// Windows that have taught the limit something.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Records a call that ended at `now` after `latency` (from its
    /// admission to its answer), with `in_flight` calls running (itself
    /// included); `ok` is false for a call that failed for want of time
    /// (its deadline passed, or its caller gave up). Returns whether the
    /// limit changed.
    pub fn sample(&mut self, latency: Duration, ok: bool, in_flight: usize, now: Duration) -> bool {
        let w = &mut self.window;
        let start = *w.start.get_or_insert(now.saturating_sub(latency));
        if ok {
            w.ok += 1;
        } else {
            w.failed += 1;
        }
        w.latency += latency.as_secs_f64();
        w.busiest = w.busiest.max(in_flight);
        let calls = w.ok + w.failed;
        let elapsed = now.saturating_sub(start);
        // A remeasuring window needs only enough calls to average.
        let enough = if self.draining_until.is_some() {
            self.options.min_window_calls
        } else {
            self.options.window_calls
        };
        if calls < enough && elapsed < self.options.window {
            return false;
        }
        let window = std::mem::replace(
            &mut self.window,
            Window {
                start: Some(now),
                ..Window::default()
            },
        );
        if calls < self.options.min_window_calls || elapsed.is_zero() {
            return false;
        }
        let before = self.limit;
        self.learn(window, start, elapsed, now);
        self.limit != before
    }

    fn learn(&mut self, window: Window, start: Duration, elapsed: Duration, now: Duration) {
        if window.ok == 0 {
            // Every call failed for want of time: far past capacity.
            self.set((self.limit / 2) as f64);
            return;
        }
        let average = window.latency / f64::from(window.ok);
        let rate = f64::from(window.ok) / elapsed.as_secs_f64();
        if let Some(until) = self.draining_until {
            if start < until {
                // Calls admitted under the old limit may still be in this
                // window: it shows nothing about the server unloaded.
                return;
            }
            // The first window wholly under the floor limit: its latency is
            // the no-load latency now, whatever it was before.
            // The peak rate is measured again from here too: a handler that
            // got slower finishes fewer calls, and the old peak would admit
            // too many.
            self.draining_until = None;
            self.no_load = Some(average);
            self.peak = rate;
            self.remeasure_at = now + self.options.remeasure_every;
        }
        self.windows += 1;
        let floor = if window.busiest <= self.options.min_limit {
            // Never more calls than the server runs in parallel: nothing
            // queued, and this latency is the no-load latency as it is now
            // (higher or lower than before); no need to measure it again.
            self.remeasure_at = now + self.options.remeasure_every;
            average
        } else {
            self.no_load.map_or(average, |floor| floor.min(average))
        };
        self.no_load = Some(floor);
        self.peak = if rate >= self.peak {
            rate
        } else {
            rate * PEAK_WEIGHT + self.peak * (1.0 - PEAK_WEIGHT)
        };
        if now >= self.remeasure_at {
            // Hold the load at what the server surely runs in parallel for
            // two latencies, then measure again.
            self.draining_until = Some(now + Duration::from_secs_f64(2.0 * average));
            self.limit = self.options.min_limit;
            return;
        }
        // Slow to open, quick to close: headroom for bursts grows while
        // calls wait less than the bound, and goes at once when they wait
        // more.
        self.explore = if average <= floor * (1.0 + self.options.max_queueing) {
            (self.explore + EXPLORE_STEP).min(self.options.max_explore)
        } else {
            self.options.min_explore
        };
        let no_load_concurrency = (floor * self.peak).max(self.options.min_limit as f64);
        self.set(no_load_concurrency * (1.0 + self.explore));
    }

    fn set(&mut self, limit: f64) {
        let limit = if limit.is_finite() {
            // Rounded up, but 2.0000001 (a float product) is 2.
            (limit - 1e-6).ceil() as usize
        } else {
            self.max_limit
        };
        self.limit = limit.clamp(self.options.min_limit, self.max_limit);
    }
}

/// Key of the metadata entry that carries a call's [`Priority`]
/// (`low`, `normal` or `high`; absent or anything else: normal).
pub const PRIORITY: &str = "quicall-priority";

/// How readily a call is shed: under the adaptive limit, low-priority
/// calls go first and high-priority ones last. Sent in the call's metadata
/// under [`PRIORITY`].
///
/// ```
/// use quicall_rpc::CallOptions;
/// use quicall_rpc::admission::Priority;
/// let options = CallOptions::default().with_metadata(Priority::Low.metadata());
/// assert_eq!(Priority::of(&options.metadata), Priority::Low);
/// // With a limit of 8: a low-priority call is admitted with fewer than
/// // 4 calls in flight, a normal one with fewer than 8, a high one with
/// // fewer than 12.
/// assert!(!Priority::Low.admits(4, 8));
/// assert!(Priority::Normal.admits(7, 8));
/// assert!(Priority::High.admits(11, 8) && !Priority::High.admits(12, 8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub enum Priority {
    /// Shed first: admitted while fewer than half the limit are in flight
    /// (batch work, prefetches, retries of background jobs).
    Low,
    /// Admitted up to the limit.
    #[default]
    Normal,
    /// Shed last: admitted up to half again the limit (calls a user waits
    /// on, health checks of the control plane).
    High,
}

impl Priority {
    /// The priority a call's metadata carries.
    pub fn of(metadata: &crate::Metadata) -> Self {
        match metadata.get(PRIORITY) {
            Some(b"low") => Priority::Low,
            Some(b"high") => Priority::High,
            _ => Priority::Normal,
        }
    }

    /// Metadata that carries this priority.
    pub fn metadata(self) -> crate::Metadata {
        let value = match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        };
        crate::Metadata::new()
            .with(PRIORITY, value)
            .expect("a valid key and value")
    }

    /// Whether a call of this priority is admitted with `in_flight` calls
    /// ahead of it under a limit of `limit`.
    pub fn admits(self, in_flight: usize, limit: usize) -> bool {
        in_flight < self.bound(limit)
    }

    /// The most calls in flight a call of this priority may join.
    pub fn bound(self, limit: usize) -> usize {
        match self {
            Priority::Low => limit.div_ceil(2),
            Priority::Normal => limit,
            Priority::High => limit + limit.div_ceil(2),
        }
    }
}

#[cfg(test)]
mod tests;
