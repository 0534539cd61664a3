//! A pool of connections to many servers, keyed by address and TLS name.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::{ClientEndpoint, Connection, Failure, TransportError};

/// Pool settings.
///
/// ```
/// use quicall_transport::PoolOptions;
/// let options = PoolOptions::default();
/// assert_eq!(options.max_connections, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections open (or opening) at once; a connection beyond it fails
    /// with [`TransportError::PoolFull`]. Default 1024.
    pub max_connections: usize,
    /// A connection with no call for this long is closed (and reopened on the
    /// next call). Default 60 s.
    pub idle_timeout: Duration,
    /// Wait before reconnecting after the first failure; it doubles with each
    /// failure that follows, with jitter. Default 100 ms.
    pub backoff_base: Duration,
    /// Longest wait between reconnection attempts. Default 10 s.
    pub backoff_max: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Connections to many servers, opened on first use, reused by every call,
/// reopened with capped exponential backoff and jitter after a failure, and
/// closed when idle.
///
/// Each server has a [`Slot`]; looking up a slot allocates only the first
/// time, and taking a slot's open connection is a short lock and a clone of
/// reference-counted handles: no heap allocation and no lock held across an
/// await. Concurrent calls that find no connection share one connection
/// attempt, which runs in its own task so that a cancelled call does not
/// abandon it.
///
/// ```no_run
/// # async fn run(endpoint: quicall_transport::ClientEndpoint) -> Result<(), quicall_transport::TransportError> {
/// use quicall_transport::{Pool, PoolOptions};
/// let pool = Pool::new(endpoint, PoolOptions::default());
/// let slot = pool.slot("127.0.0.1:4433".parse().unwrap(), "localhost");
/// let conn = match slot.ready() {
///     Some(conn) => conn,
///     None => slot.connect().await?,
/// };
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

/// A server's address and TLS name.
type SlotKey = (SocketAddr, Arc<str>);

struct PoolInner {
    endpoint: ClientEndpoint,
    options: PoolOptions,
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
    /// Connections open or opening.
    open: AtomicU32,
    origin: Instant,
}

impl Pool {
    /// A pool whose connections are made by `endpoint`. Starts a background
    /// task (within the current tokio runtime) that closes idle connections;
    /// it ends when the pool is dropped.
    pub fn new(endpoint: ClientEndpoint, options: PoolOptions) -> Pool {
        let inner = Arc::new(PoolInner {
            endpoint,
            options,
            slots: Mutex::new(HashMap::new()),
            open: AtomicU32::new(0),
            origin: Instant::now(),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&inner)));
        Pool { inner }
    }

    /// The slot of the server at `addr` whose certificate names `server_name`.
    pub fn slot(&self, addr: SocketAddr, server_name: &str) -> Arc<Slot> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots
            .iter()
            .find(|((a, n), _)| *a == addr && &**n == server_name)
            .map(|(_, s)| s.clone())
        {
            return slot;
        }
        let name: Arc<str> = Arc::from(server_name);
        let slot = Arc::new(Slot {
            addr,
            name: name.clone(),
            pool: Arc::downgrade(&self.inner),
            state: Mutex::new(State::Idle { failures: 0 }),
            in_flight: AtomicU32::new(0),
            last_used_ms: AtomicU64::new(0),
        });
        slots.insert((addr, name), slot.clone());
        slot
    }

    /// Forgets the slot of a server that left (its connection is closed once
    /// its calls are done, when the last handle is dropped).
    pub fn remove(&self, addr: SocketAddr, server_name: &str) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|(a, n), _| !(*a == addr && &**n == server_name));
    }

    /// Connections open or opening now.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed) as usize
    }

    /// Closes every connection.
    pub fn close(&self) {
        let slots: Vec<_> = {
            let slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.values().cloned().collect()
        };
        for slot in slots {
            slot.close_connection(0, b"pool closed");
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("open", &self.open_connections())
            .finish_non_exhaustive()
    }
}

/// One server's place in the pool: its connection and its state.
pub struct Slot {
    addr: SocketAddr,
    name: Arc<str>,
    pool: Weak<PoolInner>,
    state: Mutex<State>,
    in_flight: AtomicU32,
    last_used_ms: AtomicU64,
}

enum State {
    /// No connection; `failures` in a row so far.
    Idle {
        failures: u32,
    },
    /// A connection attempt is running; it signals the watch when done.
    Connecting(watch::Receiver<bool>),
    Ready(Connection),
    /// The server is shutting down: calls in flight finish, new ones go elsewhere.
    Draining(Connection),
    /// The last attempt failed; no new attempt before `until`.
    BackingOff {
        until: Instant,
        failures: u32,
        failure: Failure,
        reason: Arc<str>,
    },
}

/// What a slot can do for a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotStatus {
    /// A connection is open: calls go through at once.
    Ready,
    /// No connection yet (or it closed): a call opens one.
    Idle,
    /// A connection attempt is running.
    Connecting,
    /// The server is draining: no new calls.
    Draining,
    /// Waiting before the next connection attempt.
    BackingOff,
}

impl Slot {
    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The TLS name the server's certificate must carry.
    pub fn server_name(&self) -> &str {
        &self.name
    }

    /// Calls on this slot now (as counted by [`Slot::begin_call`]).
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a call until the returned guard is dropped, and marks the slot used.
    pub fn begin_call(self: &Arc<Self>) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(pool) = self.pool.upgrade() {
            let ms = pool.origin.elapsed().as_millis() as u64;
            self.last_used_ms.store(ms, Ordering::Relaxed);
        }
        CallGuard { slot: self.clone() }
    }

    /// What the slot can do for a call now. A connection found closed is
    /// noted here, so that the next call reconnects.
    pub fn status(&self) -> SlotStatus {
        let mut state = self.lock();
        self.refresh(&mut state);
        match &*state {
            State::Ready(_) => SlotStatus::Ready,
            State::Idle { .. } => SlotStatus::Idle,
            State::Connecting(_) => SlotStatus::Connecting,
            State::Draining(_) => SlotStatus::Draining,
            State::BackingOff { until, .. } if Instant::now() >= *until => SlotStatus::Idle,
            State::BackingOff { .. } => SlotStatus::BackingOff,
        }
    }

    /// Why the last connection attempt failed, while the slot waits before
    /// the next one.
    pub fn last_failure(&self) -> Option<(Failure, Arc<str>)> {
        match &*self.lock() {
            State::BackingOff {
                failure, reason, ..
            } => Some((*failure, reason.clone())),
            _ => None,
        }
    }

    /// The open connection, if there is one: the hot path of a call (a short
    /// lock, no allocation).
    pub fn ready(&self) -> Option<Connection> {
        let mut state = self.lock();
        self.refresh(&mut state);
        match &*state {
            State::Ready(conn) => Some(conn.clone()),
            _ => None,
        }
    }

    /// Starts a connection attempt in the background if the slot has no
    /// connection and is not waiting out a backoff; does not wait for it.
    /// A balancer calls this for servers it skips while they reconnect.
    pub fn start_connect(&self) {
        let mut state = self.lock();
        self.refresh(&mut state);
        let _ = self.begin_attempt(&mut state);
    }

    /// Starts an attempt if none runs and none is due later; the receiver
    /// of the running attempt, if one runs now.
    fn begin_attempt(
        &self,
        state: &mut State,
    ) -> Result<Option<watch::Receiver<bool>>, TransportError> {
        let failures = match &*state {
            State::Connecting(rx) => return Ok(Some(rx.clone())),
            State::Ready(_) => return Ok(None),
            State::Draining(_) => return Err(TransportError::Draining),
            State::BackingOff {
                until,
                failure,
                reason,
                ..
            } if Instant::now() < *until => {
                return Err(TransportError::BackingOff {
                    failure: *failure,
                    reason: reason.clone(),
                    retry_in: until.saturating_duration_since(Instant::now()),
                });
            }
            State::Idle { failures } | State::BackingOff { failures, .. } => *failures,
        };
        let pool = self.pool.upgrade().ok_or(TransportError::Closed)?;
        let open = pool.open.fetch_add(1, Ordering::Relaxed);
        if open as usize >= pool.options.max_connections {
            pool.open.fetch_sub(1, Ordering::Relaxed);
            return Err(TransportError::PoolFull(pool.options.max_connections));
        }
        let (tx, rx) = watch::channel(false);
        *state = State::Connecting(rx.clone());
        tokio::spawn(attempt(pool, self.addr, self.name.clone(), failures, tx));
        Ok(Some(rx))
    }

    /// The open connection, opening one if needed (one attempt at a time,
    /// shared by every caller). Fails at once while backing off after a
    /// failure, and when the server is draining.
    pub async fn connect(&self) -> Result<Connection, TransportError> {
        loop {
            let mut rx = {
                let mut state = self.lock();
                self.refresh(&mut state);
                if let State::Ready(conn) = &*state {
                    return Ok(conn.clone());
                }
                match self.begin_attempt(&mut state)? {
                    Some(rx) => rx,
                    None => continue,
                }
            };
            // Woken when the attempt ends, whichever way; then look again.
            let _ = rx.wait_for(|done| *done).await;
            let state = self.lock();
            if let State::BackingOff {
                failure,
                until,
                reason,
                ..
            } = &*state
            {
                return Err(TransportError::BackingOff {
                    failure: *failure,
                    reason: reason.clone(),
                    retry_in: until.saturating_duration_since(Instant::now()),
                });
            }
        }
    }

    /// Marks the server as draining: no new calls go to it; calls in flight
    /// finish. When its connection closes the slot becomes idle again, so a
    /// restarted server is reconnected.
    pub fn mark_draining(&self) {
        let mut state = self.lock();
        if let State::Ready(conn) = &*state {
            *state = State::Draining(conn.clone());
        }
    }

    /// Closes the connection, if any, with an application code and reason.
    pub fn close_connection(&self, code: u32, reason: &[u8]) {
        let state = self.lock();
        if let State::Ready(conn) | State::Draining(conn) = &*state {
            conn.close(code, reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notices a connection that closed since the last look.
    fn refresh(&self, state: &mut State) {
        if let State::Ready(conn) | State::Draining(conn) = &*state
            && let Some(failure) = conn.failure()
        {
            tracing::debug!(addr = %self.addr, %failure, "connection closed");
            if let Some(pool) = self.pool.upgrade() {
                pool.open.fetch_sub(1, Ordering::Relaxed);
            }
            *state = match failure {
                // A close by either side, or idleness: reconnect on demand.
                Failure::Closed => State::Idle { failures: 0 },
                // The server vanished (went silent, timed out, reset): start
                // backing off, with a first attempt due at once.
                failure => State::BackingOff {
                    until: Instant::now(),
                    failures: 1,
                    failure,
                    reason: match (conn.silent_for(), conn.close_reason()) {
                        (Some(silent), _) => {
                            format!("server silent for {} ms", silent.as_millis()).into()
                        }
                        (None, Some(reason)) => crate::describe(&reason).into(),
                        (None, None) => failure.to_string().into(),
                    },
                },
            };
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .field("status", &self.status())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Counts a call on a slot while alive.
pub struct CallGuard {
    slot: Arc<Slot>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallGuard")
            .field("addr", &self.slot.addr)
            .finish()
    }
}

/// One connection attempt, in its own task; records the outcome in the slot.
async fn attempt(
    pool: Arc<PoolInner>,
    addr: SocketAddr,
    name: Arc<str>,
    failures: u32,
    done: watch::Sender<bool>,
) {
    let result = pool.endpoint.connect(addr, &name).await;
    let slot = {
        let slots = pool.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.get(&(addr, name.clone())).cloned()
    };
    let Some(slot) = slot else {
        // The server left the pool meanwhile.
        pool.open.fetch_sub(1, Ordering::Relaxed);
        if let Ok(conn) = result {
            conn.close(0, b"server removed");
        }
        return;
    };
    let mut state = slot.lock();
    *state = match result {
        Ok(conn) => State::Ready(conn),
        Err(e) => {
            pool.open.fetch_sub(1, Ordering::Relaxed);
            let failures = failures.saturating_add(1);
            let wait = backoff(failures, &pool.options, fastrand::f64());
            tracing::debug!(%addr, failures, ?wait, "connection attempt failed: {e}");
            State::BackingOff {
                until: Instant::now() + wait,
                failures,
                failure: e.failure(),
                reason: reason_of(&e),
            }
        }
    };
    drop(state);
    let _ = done.send(true);
}

/// Why a connection attempt failed, in words: the TLS reason of a refused
/// handshake rather than only its kind.
fn reason_of(e: &TransportError) -> Arc<str> {
    match e {
        TransportError::Connection { error, .. } => crate::describe(error).into(),
        e => e.to_string().into(),
    }
}

/// `base × 2^(failures - 1)`, capped, times a jitter factor in [0.5, 1.0).
pub(crate) fn backoff(failures: u32, options: &PoolOptions, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30) as i32;
    let raw = options.backoff_base.as_secs_f64() * 2f64.powi(exp);
    let capped = raw.min(options.backoff_max.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
}

/// Closes connections idle for longer than the pool's idle timeout, until
/// the pool is dropped.
async fn reap_idle(pool: Weak<PoolInner>) {
    let period = match pool.upgrade() {
        Some(p) => (p.options.idle_timeout / 4).max(Duration::from_millis(50)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let now_ms = pool.origin.elapsed().as_millis() as u64;
        let idle_ms = pool.options.idle_timeout.as_millis() as u64;
        let slots: Vec<_> = {
            let slots = pool.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.values().cloned().collect()
        };
        for slot in slots {
            let last = slot.last_used_ms.load(Ordering::Relaxed);
            if slot.in_flight() == 0 && now_ms.saturating_sub(last) >= idle_ms {
                slot.close_connection(0, b"idle");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let options = PoolOptions::default();
        assert_eq!(backoff(1, &options, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(1, &options, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(2, &options, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(4, &options, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(20, &options, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX, &options, 0.0), Duration::from_secs(5));
    }
}
