//! Log lines an attacker can cause, at most one a period.

use std::sync::Mutex;
use std::time::Duration;

/// Lets one event through per period and counts the ones it holds back, so
/// that a flood of refusals writes a line a second (with the count), not a
/// line each.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    /// When the last line was let through, and events held back since.
    state: Mutex<(Option<Duration>, u64)>,
}

impl Throttle {
    pub(crate) const fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// An event at `now` (time since any fixed origin): `Some(held back
    /// before it)` if its line may be written, `None` if it is held back.
    pub(crate) fn event(&self, now: Duration) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held) = &mut *state;
        match *last {
            Some(at) if now.saturating_sub(at) < self.period => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_period_with_the_count_of_the_rest() {
        let t = Throttle::new(Duration::from_secs(1));
        let ms = Duration::from_millis;
        assert_eq!(t.event(ms(0)), Some(0));
        for i in 1..1000 {
            assert_eq!(t.event(ms(i)), None);
        }
        assert_eq!(t.event(ms(1000)), Some(999));
        assert_eq!(t.event(ms(1500)), None);
        assert_eq!(t.event(ms(5000)), Some(1));
    }
}
