//! The server's adaptive admission (see [`crate::admission`]): a count of
//! calls in flight against the learned limit, taken without a lock when a
//! stream is accepted (before it waits for a worker: behind CPU-bound
//! handlers, that wait is the queue), given back while the call waits on
//! the network for its header or body and taken again when they come; a
//! unary call without room is refused once its header is read, and each
//! admitted call's latency is fed back when its handler ends (a short
//! lock, never held across an await).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::admission::{Adaptive, AdaptiveLimit, Priority};

pub(crate) struct Limiter {
    /// The learned limit, read by every admission.
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    learn: Mutex<AdaptiveLimit>,
    origin: Instant,
    limit_gauge: Gauge<i64, AtomicI64>,
    shed: Counter,
}

impl Limiter {
    /// A limiter that learns within `options` and never passes `max`; its
    /// gauge and counter are registered in `registry`.
    pub(crate) fn new(options: Adaptive, max: usize, registry: &mut Registry) -> Self {
        let learn = AdaptiveLimit::new(options, max);
        let limit_gauge = Gauge::default();
        limit_gauge.set(learn.limit() as i64);
        let shed = Counter::default();
        let sub = registry.sub_registry_with_prefix("quicall_server");
        sub.register(
            "concurrency_limit",
            "Unary calls admitted at once, as the adaptive limit learned it",
            limit_gauge.clone(),
        );
        sub.register(
            "calls_shed",
            "Calls refused because the adaptive limit was reached (RESOURCE_EXHAUSTED, not processed)",
            shed.clone(),
        );
        Self {
            limit: AtomicUsize::new(learn.limit()),
            in_flight: AtomicUsize::new(0),
            learn: Mutex::new(learn),
            origin: Instant::now(),
            limit_gauge,
            shed,
        }
    }

    /// A stream has just been accepted (its header not read yet): it takes
    /// a place if there is room for a call of any priority, and counts from
    /// now, so that the time it waits for a worker (behind CPU-bound
    /// handlers, say) is part of the latency the limit learns from.
    pub(crate) fn arrive(self: &Arc<Self>) -> Arrival {
        let mut arrival = Arrival {
            limiter: self.clone(),
            accepted: Instant::now(),
            held: false,
            paused: false,
            ahead: 0,
            limit: 0,
        };
        arrival.take();
        arrival
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Calls shed so far.
    pub(crate) fn shed(&self) -> u64 {
        self.shed.get()
    }
}

/// A stream's place under the limit, taken when it was accepted (if there
/// was room), given back while the call waits on the network for its
/// header or body (which costs the server nothing, and which a peer could
/// otherwise stretch to hold every place), taken again when they have
/// come, given back for good when its handler ends or when it is dropped.
pub(crate) struct Arrival {
    limiter: Arc<Limiter>,
    /// When it last took its place.
    accepted: Instant,
    /// Whether the call counts in flight.
    held: bool,
    /// Whether it gave back its place to wait on the network.
    paused: bool,
    /// Calls in flight when it took its place, and the limit then.
    ahead: usize,
    limit: usize,
}

impl Arrival {
    /// Takes a place if there is room for a call of any priority (its own
    /// bound is checked once its priority is known).
    fn take(&mut self) {
        let limiter = &*self.limiter;
        let limit = limiter.limit.load(Ordering::Relaxed);
        let bound = Priority::High.bound(limit);
        let taken = limiter
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            });
        self.held = taken.is_ok();
        self.ahead = taken.unwrap_or_else(|n| n);
        self.limit = limit;
        self.accepted = Instant::now();
    }

    /// The call waits on the network: its place is given back.
    pub(crate) fn pause(&mut self) {
        if self.held {
            self.release();
            self.paused = true;
        }
    }

    /// What it waited for has come: it takes a place again, if there is
    /// room.
    fn unpause(&mut self) {
        if std::mem::replace(&mut self.paused, false) {
            self.take();
        }
    }

    /// Whether a call of normal priority, or one whose priority is not
    /// known yet (`metadata`), may stay, by the calls that were ahead of it
    /// when it took its place. (Not by those in flight now: with a handler that
    /// holds its worker, the calls accepted with it are read one after
    /// another, each when the one before has ended, so that "now" there
    /// is always room, and the queue they stand in would never be seen.)
    fn may_stay(&self, metadata: bool) -> bool {
        self.held && (metadata || Priority::Normal.admits(self.ahead, self.limit))
    }

    /// After [`Arrival::pause`] and the wait, takes a place again: a call
    /// without room for any priority is refused (and counted shed); its
    /// own priority's bound is checked by [`Arrival::prioritize`].
    pub(crate) fn resume(&mut self) -> Result<(), ()> {
        if !self.paused {
            return Ok(());
        }
        self.unpause();
        if self.may_stay(true) {
            Ok(())
        } else {
            self.refuse();
            Err(())
        }
    }

    /// The call's header has been read: a streaming call (which may last
    /// for hours) gives back its place, and is held to the fixed limits
    /// alone; a unary call is admitted if a call of normal priority would
    /// be, else refused (and counted shed), unless its priority is still to
    /// be read (`metadata`: it is decided by [`Arrival::prioritize`]).
    pub(crate) fn admit(mut self, unary: bool, metadata: bool) -> Result<Option<Arrival>, ()> {
        if !unary {
            self.release();
            return Ok(None);
        }
        // A header that had to be waited for takes its place now.
        self.unpause();
        if !self.may_stay(metadata) {
            self.refuse();
            return Err(());
        }
        Ok(Some(self))
    }

    /// The call's priority is known: it stays if calls of its priority
    /// are admitted with as many ahead of it, else it is refused (and
    /// counted shed).
    pub(crate) fn prioritize(&mut self, priority: Priority) -> Result<(), ()> {
        if self.held && priority.admits(self.ahead, self.limit) {
            Ok(())
        } else {
            self.refuse();
            Err(())
        }
    }

    fn refuse(&mut self) {
        self.release();
        self.limiter.shed.inc();
    }

    /// The handler has ended: its latency since it took its place teaches
    /// the limit, and the call no longer counts (its answer may
    /// take a while to be read, which costs the server nothing). `ok` is
    /// false when it ran out of time (its deadline passed, or its caller
    /// left). A call dropped without this (refused or malformed after its
    /// header) teaches nothing.
    pub(crate) fn handled(&mut self, ok: bool) {
        if !self.held {
            return;
        }
        self.held = false;
        let limiter = &*self.limiter;
        let now = Instant::now();
        let in_flight = limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut learn = limiter.learn.lock().unwrap_or_else(|e| e.into_inner());
        let changed = learn.sample(now - self.accepted, ok, in_flight, now - limiter.origin);
        if changed {
            let limit = learn.limit();
            drop(learn);
            limiter.limit.store(limit, Ordering::Relaxed);
            limiter.limit_gauge.set(limit as i64);
        }
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.held, false) {
            self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.release();
    }
}
