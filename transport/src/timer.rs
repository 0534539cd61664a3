//! Timers for quinn that fire on time.
//!
//! tokio's timers fire on its 1 ms tick, rounding every deadline up: a
//! timer is up to 1 ms late. On a 0.1 ms path that is ten round trips added
//! to every probe timeout (a lost request or response), every delayed
//! acknowledgement and every loss found by time. quicall's endpoints run
//! quinn with [`Runtime`]: tokio for everything, but a timer's last
//! millisecond is kept by one thread of the process that sleeps to the
//! microsecond (a heap of deadlines and a condition variable). A timer
//! further out than that uses tokio's own, so the thread sees only timers
//! about to fire (most of quinn's are moved out again first).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How close to its deadline a timer moves from tokio's tick to the
/// precise thread: tokio's tick.
const FINE: Duration = Duration::from_millis(1);

/// quinn on tokio, with timers that fire on time (see the module).
#[derive(Debug)]
pub(crate) struct Runtime;

impl quinn::Runtime for Runtime {
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        Box::pin(Timer::new(deadline))
    }

    fn spawn(&self, future: Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
        quinn::TokioRuntime.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }

    fn now(&self) -> Instant {
        quinn::TokioRuntime.now()
    }
}

/// The quinn runtime of an endpoint: precise timers, or tokio's own.
pub(crate) fn runtime(precise: bool) -> Arc<dyn quinn::Runtime> {
    if precise {
        Arc::new(Runtime)
    } else {
        Arc::new(quinn::TokioRuntime)
    }
}

/// A timer: tokio's until its last millisecond, then the precise thread's.
struct Timer {
    deadline: Instant,
    coarse: Pin<Box<tokio::time::Sleep>>,
    /// The deadline and waker the precise thread was last given.
    armed: Option<(Instant, Waker)>,
    /// The deadline the precise thread is to wake this timer at (see
    /// [`ticks`]; 0: none). An entry for any other is stale (the timer was
    /// reset or dropped since) and is dropped unwoken: a timer reset on
    /// every packet would otherwise be woken for nothing as often.
    wanted: Arc<AtomicU64>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.wanted.store(0, Ordering::Relaxed);
    }
}

/// An instant as a number for [`Timer::wanted`]: nanoseconds since the
/// first timer of the process, plus one (never 0).
fn ticks(at: Instant) -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Timer {
    fn new(deadline: Instant) -> Timer {
        Timer {
            deadline,
            coarse: Box::pin(tokio::time::sleep_until(coarse_deadline(deadline).into())),
            armed: None,
            wanted: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// When tokio's timer hands over: a tick before the deadline (tokio rounds
/// up, so it fires at most then).
fn coarse_deadline(deadline: Instant) -> Instant {
    deadline.checked_sub(FINE).unwrap_or(deadline)
}

impl quinn::AsyncTimer for Timer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.deadline = deadline;
        self.wanted.store(0, Ordering::Relaxed);
        self.armed = None;
        self.coarse.as_mut().reset(coarse_deadline(deadline).into());
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if now >= self.deadline {
            return Poll::Ready(());
        }
        if self.deadline - now > FINE
            && std::future::Future::poll(self.coarse.as_mut(), cx).is_pending()
        {
            return Poll::Pending;
        }
        let deadline = self.deadline;
        let armed = self
            .armed
            .as_ref()
            .is_some_and(|(at, waker)| *at == deadline && waker.will_wake(cx.waker()));
        if !armed {
            self.wanted.store(ticks(deadline), Ordering::Relaxed);
            PRECISE.wake_at(deadline, cx.waker().clone(), self.wanted.clone());
            self.armed = Some((deadline, cx.waker().clone()));
        }
        Poll::Pending
    }
}

/// The precise thread's deadlines: wakers to wake at a time. A timer reset
/// or dropped leaves its entry (woken for nothing, at most a millisecond
/// later).
struct Precise {
    due: Mutex<Due>,
    changed: Condvar,
}

#[derive(Default)]
struct Due {
    heap: BinaryHeap<Reverse<Entry>>,
    next: u64,
}

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
    /// Its timer's [`Timer::wanted`].
    wanted: Arc<AtomicU64>,
}

impl Entry {
    /// Whether its timer still wants this wake-up.
    fn current(&self) -> bool {
        self.wanted.load(Ordering::Relaxed) == ticks(self.at)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Due {
    /// Adds a deadline; whether it is now the earliest.
    fn push(&mut self, at: Instant, waker: Waker, wanted: Arc<AtomicU64>) -> bool {
        let earliest = self.heap.peek().is_none_or(|Reverse(first)| at < first.at);
        self.next += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.next,
            waker,
            wanted,
        }));
        earliest
    }

    /// The wakers due by `now` whose timers still want them, into `out`;
    /// else how long until the next wanted one (`None`: none is held).
    /// Stale entries at the front go whether due or not, so that the
    /// thread sleeps until a wake-up that is still wanted: a timer reset
    /// on every packet leaves one stale entry per packet, and would
    /// otherwise wake the thread as often.
    fn take_due(&mut self, now: Instant, out: &mut Vec<Waker>) -> Option<Duration> {
        while let Some(Reverse(first)) = self.heap.peek() {
            let stale = !first.current();
            if !stale && first.at > now {
                return out.is_empty().then(|| first.at - now);
            }
            let Reverse(entry) = self.heap.pop().expect("peeked");
            if !stale {
                out.push(entry.waker);
            }
        }
        None
    }
}

static PRECISE: LazyLock<Arc<Precise>> = LazyLock::new(|| {
    let precise = Arc::new(Precise {
        due: Mutex::new(Due::default()),
        changed: Condvar::new(),
    });
    let thread = precise.clone();
    std::thread::Builder::new()
        .name("quicall-timers".into())
        .spawn(move || thread.run())
        .expect("spawning quicall's timer thread");
    precise
});

impl Precise {
    fn lock(&self) -> std::sync::MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_at(&self, at: Instant, waker: Waker, wanted: Arc<AtomicU64>) {
        if self.lock().push(at, waker, wanted) {
            self.changed.notify_one();
        }
    }

    /// Wakes each waker at its time, for the life of the process.
    fn run(&self) {
        let mut wake = Vec::new();
        let mut due = self.lock();
        loop {
            let next = due.take_due(Instant::now(), &mut wake);
            match next {
                _ if !wake.is_empty() => {
                    drop(due);
                    wake.drain(..).for_each(Waker::wake);
                    due = self.lock();
                }
                Some(wait) => {
                    due = self
                        .changed
                        .wait_timeout(due, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    due = self
                        .changed
                        .wait(due)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::AsyncTimer as _;

    #[test]
    fn deadlines_come_out_in_order_and_only_when_due() {
        let start = Instant::now();
        let us = Duration::from_micros;
        let mut due = Due::default();
        let wanted = |at: Instant| Arc::new(AtomicU64::new(ticks(at)));
        let (a, b, c) = (start + us(300), start + us(100), start + us(200));
        assert!(due.push(a, Waker::noop().clone(), wanted(a)));
        assert!(due.push(b, Waker::noop().clone(), wanted(b)));
        assert!(!due.push(c, Waker::noop().clone(), wanted(c)));
        // Timers reset since: their entries are dropped unwoken, the first
        // before it is due (the thread then sleeps until 100 us, not 50).
        let stale = wanted(start + us(150));
        assert!(!due.push(start + us(150), Waker::noop().clone(), stale.clone()));
        stale.store(ticks(start + us(900)), Ordering::Relaxed);
        let early = wanted(start + us(50));
        assert!(due.push(start + us(50), Waker::noop().clone(), early.clone()));
        early.store(0, Ordering::Relaxed);
        let mut out = Vec::new();
        assert_eq!(due.take_due(start, &mut out), Some(us(100)));
        assert!(out.is_empty());
        assert_eq!(due.take_due(start + us(250), &mut out), None);
        assert_eq!(out.len(), 2);
        out.clear();
        assert_eq!(due.take_due(start + us(250), &mut out), Some(us(50)));
        assert_eq!(due.take_due(start + us(300), &mut out), None);
        assert_eq!(out.len(), 1);
        assert!(due.heap.is_empty());
    }

    /// A timer fires, never before its deadline, near (the precise
    /// thread) and far (tokio's tick first), and after resets.
    #[tokio::test]
    async fn a_timer_fires_when_due_not_before() {
        for after in [Duration::from_micros(300), Duration::from_millis(3)] {
            let start = Instant::now();
            let mut timer = Box::pin(Timer::new(start + after));
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            assert!(
                start.elapsed() >= after,
                "fired early: {:?}",
                start.elapsed()
            );
            // Reset, earlier and later: the new deadline holds.
            let start = Instant::now();
            timer.as_mut().reset(start + after * 2);
            timer.as_mut().reset(start + after);
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            assert!(start.elapsed() >= after);
        }
    }
}
