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
    /// The sums of `counts`, kept as they change.
    sums: [u64; N],
    /// Index of the current slice since time zero.
    current: u64,
}

impl<const N: usize> Window<N> {
    /// An empty window `len` long (its slices no shorter than 1 ms).
    pub(super) fn new(len: Duration) -> Self {
        Self {
            slot_len: (len / SLOTS as u32).max(Duration::from_millis(1)),
            counts: [[0; N]; SLOTS],
            sums: [0; N],
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
            let slice = &mut self.counts[((self.current + k) % SLOTS as u64) as usize];
            for (sum, count) in self.sums.iter_mut().zip(slice.iter()) {
                *sum -= count;
            }
            *slice = [0; N];
        }
        self.current = slot;
    }

    /// Adds one to counter `counter` at `now`.
    pub(super) fn add(&mut self, now: Duration, counter: usize) {
        self.advance(now);
        self.counts[(self.current % SLOTS as u64) as usize][counter] += 1;
        self.sums[counter] += 1;
    }

    /// Each counter's sum over the window that ends at `now`.
    pub(super) fn sums(&mut self, now: Duration) -> [u64; N] {
        self.advance(now);
        self.sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums kept as counts come and go are the sums of what is in the
    /// window, whatever the order of adds and reads.
    #[test]
    fn the_kept_sums_match_the_window() {
        let mut window = Window::<2>::new(Duration::from_secs(1));
        let mut adds: Vec<(u64, usize)> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(3);
        let mut now = 0u64;
        for _ in 0..20_000 {
            now += rng.u64(0..3);
            if rng.u8(..10) == 0 {
                now += rng.u64(0..2_000);
            }
            let at = Duration::from_millis(now);
            let counter = rng.usize(0..2);
            window.add(at, counter);
            adds.push((now, counter));
            // In the window: the slices of the last second, to 100 ms.
            let first_slice = (now / 100).saturating_sub(9);
            let mut expected = [0u64; 2];
            for &(t, c) in &adds {
                if t / 100 >= first_slice {
                    expected[c] += 1;
                }
            }
            assert_eq!(window.sums(at), expected, "at {now} ms");
            adds.retain(|&(t, _)| t / 100 >= first_slice);
        }
    }
}
