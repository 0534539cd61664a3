//! Noticing a server that went silent without closing its connection.
//!
//! A server killed with SIGKILL, a host that vanished, or a partition sends no
//! CONNECTION_CLOSE: QUIC alone notices only when its idle timeout (30 s)
//! runs out, and every call on the connection waits until then or until its
//! own deadline. A client connection therefore sends keep-alive PINGs after
//! [`Limits::keep_alive`](crate::Limits::keep_alive) without receiving
//! anything, which a live server acknowledges within a round trip and its
//! maximum ACK delay (25 ms) however busy or idle its handlers are; and a
//! watchdog gives the connection up when nothing at all has arrived for
//! [`silence_threshold`] (by default about a second). Then every call on it
//! fails at once with UNAVAILABLE, which a cluster client retries elsewhere
//! when the call is safe to repeat.
//!
//! Why this and not a per-call timeout from the server's latency estimate: a
//! timeout cannot tell a slow handler from a dead server, and a handler that
//! legitimately takes ten times its usual time would be cut off and retried.
//! Acknowledgements can: a live server acknowledges a PING whatever its
//! handlers do.
//!
//! The decision is pure ([`Liveness`], fed with times and datagram counts);
//! the task around it only reads quinn's statistics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The peer's largest ACK delay assumed (QUIC's default `max_ack_delay`).
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// How long a connection may go without receiving anything before it is
/// given up: the larger of `floor` and one keep-alive interval plus three
/// probe timeouts (each about 3 RTT plus the peer's ACK delay), so that a
/// path with a long round trip is not mistaken for a dead one.
///
/// ```
/// use quicall_transport::silence_threshold;
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// // Loopback: the floor decides.
/// assert_eq!(silence_threshold(ms(1000), ms(250), ms(0)), ms(1000));
/// // A 300 ms round trip: 250 + 3 x (900 + 25) ms.
/// assert_eq!(silence_threshold(ms(1000), ms(250), ms(300)), ms(3025));
/// ```
pub fn silence_threshold(floor: Duration, keep_alive: Duration, rtt: Duration) -> Duration {
    floor.max(keep_alive + 3 * (3 * rtt + MAX_ACK_DELAY))
}

/// What the watchdog concluded from one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Something arrived recently enough (or the watchdog cannot judge).
    Alive,
    /// Nothing arrived for this long.
    Silent(Duration),
}

/// The watchdog's memory: when a datagram last arrived.
#[derive(Debug)]
pub(crate) struct Liveness {
    received: u64,
    since: Duration,
    last_look: Duration,
}

impl Liveness {
    /// Starts watching at `now`, with `received` datagrams counted so far.
    pub(crate) fn new(now: Duration, received: u64) -> Self {
        Self {
            received,
            since: now,
            last_look: now,
        }
    }

    /// One look at `now`: `received` datagrams so far, `threshold` of
    /// silence allowed, `period` between looks. A look much later than its
    /// period means this process itself stalled (an overloaded runtime, a
    /// paused VM): the datagrams may be waiting unread in the socket, so the
    /// silence is measured again from now rather than blamed on the peer.
    pub(crate) fn look(
        &mut self,
        now: Duration,
        received: u64,
        threshold: Duration,
        period: Duration,
    ) -> Verdict {
        let stalled = now.saturating_sub(self.last_look) > period * 3;
        self.last_look = now;
        if received != self.received || stalled {
            self.received = received;
            self.since = now;
            return Verdict::Alive;
        }
        let silent = now.saturating_sub(self.since);
        if silent >= threshold {
            Verdict::Silent(silent)
        } else {
            Verdict::Alive
        }
    }
}

/// Shared between a connection's handles and its watchdog: how long the
/// peer had been silent when the watchdog gave the connection up (0 while
/// it has not).
#[derive(Debug, Default)]
pub(crate) struct Silence(AtomicU64);

impl Silence {
    pub(crate) fn set(&self, silent: Duration) {
        let ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX).max(1);
        self.0.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Application close code a client sends (into the void) when it gives up
/// a silent server's connection: the protocol's TIMEOUT (docs/wire.md,
/// section 8).
pub(crate) const SILENT_CLOSE: u32 = 0x5;

/// Watches `conn` until it closes: gives it up once nothing has arrived for
/// the silence threshold.
pub(crate) async fn watch(
    conn: quinn::Connection,
    silence: Arc<Silence>,
    floor: Duration,
    keep_alive: Duration,
) {
    let period = (floor / 4).max(Duration::from_millis(20));
    let origin = Instant::now();
    let mut liveness = Liveness::new(Duration::ZERO, conn.stats().udp_rx.datagrams);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let closed = conn.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => return,
            _ = ticks.tick() => {}
        }
        let threshold = silence_threshold(floor, keep_alive, conn.rtt());
        let received = conn.stats().udp_rx.datagrams;
        if let Verdict::Silent(silent) =
            liveness.look(origin.elapsed(), received, threshold, period)
        {
            tracing::warn!(
                peer = %conn.remote_address(),
                ?silent,
                "nothing received from the server (keep-alives unanswered); connection given up"
            );
            silence.set(silent);
            conn.close(quinn::VarInt::from_u32(SILENT_CLOSE), b"peer silent");
            return;
        }
    }
}

/// Stops the watchdog when the last handle of its connection is dropped (the
/// watchdog holds a quinn handle of its own, which would keep the
/// connection open).
#[derive(Debug)]
pub(crate) struct WatchGuard(pub(crate) tokio::task::AbortHandle);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn arrivals_keep_a_connection_alive() {
        let mut l = Liveness::new(Duration::ZERO, 10);
        for i in 1..100u64 {
            let now = MS * 250 * i as u32;
            assert_eq!(l.look(now, 10 + i, MS * 1000, MS * 250), Verdict::Alive);
        }
    }

    #[test]
    fn silence_past_the_threshold_is_noticed_once_it_is_reached() {
        let mut l = Liveness::new(Duration::ZERO, 3);
        assert_eq!(l.look(MS * 250, 4, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(l.look(MS * 500, 4, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(l.look(MS * 750, 4, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(l.look(MS * 1000, 4, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(
            l.look(MS * 1250, 4, MS * 1000, MS * 250),
            Verdict::Silent(MS * 1000)
        );
    }

    #[test]
    fn one_datagram_restarts_the_count() {
        let mut l = Liveness::new(Duration::ZERO, 0);
        for t in 1..4u32 {
            assert_eq!(l.look(MS * 250 * t, 0, MS * 1000, MS * 250), Verdict::Alive);
        }
        assert_eq!(l.look(MS * 1000, 1, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(l.look(MS * 1750, 1, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(
            l.look(MS * 2000, 1, MS * 1000, MS * 250),
            Verdict::Silent(MS * 1000)
        );
    }

    #[test]
    fn a_stalled_watchdog_does_not_blame_the_peer() {
        let mut l = Liveness::new(Duration::ZERO, 0);
        assert_eq!(l.look(MS * 250, 0, MS * 1000, MS * 250), Verdict::Alive);
        // The process slept 5 s: the silence counts again from here.
        assert_eq!(l.look(MS * 5250, 0, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(l.look(MS * 5500, 0, MS * 1000, MS * 250), Verdict::Alive);
        assert_eq!(
            l.look(MS * 6250, 0, MS * 1000, MS * 250),
            Verdict::Silent(MS * 1000)
        );
    }

    #[test]
    fn silence_records_at_least_a_millisecond() {
        let s = Silence::default();
        assert_eq!(s.get(), None);
        s.set(Duration::ZERO);
        assert_eq!(s.get(), Some(MS));
        s.set(MS * 1200);
        assert_eq!(s.get(), Some(MS * 1200));
    }
}
