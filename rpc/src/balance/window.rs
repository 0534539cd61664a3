//! Counts over a sliding window of time, kept in slices: what the retry
//! budget and the client-side throttle both remember.

use std::time::Duration;

/// Slices a window is kept in; a count expires with its slice.
const SLOTS: usize = 10;

/// `N` counters, each summed over the last `len` of time (to a slice of
/// `len / 10`).
#[derive(Debug, Clone)]
pub(super) struct Window<const N: usize> {
    slot_len: Duration,
    /// Counts per slice, as a ring.
    counts: [[u64; N]; SLOTS],
    /// Index of the current slice since time zero.
    current: u64,
}

impl<const N: usize> Window<N> {
    /// An empty window `len` long (its slices no shorter than 1 ms).
    pub(super) fn new(len: Duration) -> Self {
        Self {
            slot_len: (len / SLOTS as u32).max(Duration::from_millis(1)),
            counts: [[0; N]; SLOTS],
            current: 0,
        }
    }

    fn advance(&mut self, now: Duration) {
        let slot = (now.as_nanos() / self.slot_len.as_nanos()) as u64;
        if slot <= self.current {
            return;
        }
        let expired = (slot - self.current).min(SLOTS as u64);
        for k in 1..=expired {
            self.counts[((self.current + k) % SLOTS as u64) as usize] = [0; N];
        }
        self.current = slot;
    }

    /// Adds one to counter `counter` at `now`.
    pub(super) fn add(&mut self, now: Duration, counter: usize) {
        self.advance(now);
        self.counts[(self.current % SLOTS as u64) as usize][counter] += 1;
    }

    /// Each counter's sum over the window that ends at `now`.
    pub(super) fn sums(&mut self, now: Duration) -> [u64; N] {
        self.advance(now);
        let mut sums = [0; N];
        for slice in &self.counts {
            for (sum, count) in sums.iter_mut().zip(slice) {
                *sum += count;
            }
        }
        sums
    }
}
