//! The server's adaptive admission (see [`crate::admission`]): a count of
//! calls in flight against the learned limit, taken without a lock when a
//! stream is accepted (before it waits for a worker); a unary call without
//! room is refused once its header is read, and each admitted call's
//! latency is fed back when its handler ends (a short lock, never held
//! across an await).

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

    /// A stream has just been accepted (its header not read yet): it is
    /// admitted if fewer than the limit are in flight, and counts from now,
    /// so that the time it waits for a worker (behind CPU-bound handlers,
    /// say) is part of the latency the limit learns from.
    pub(crate) fn arrive(self: &Arc<Self>) -> Arrival {
        let limit = self.limit.load(Ordering::Relaxed);
        // Room for the most any priority may join; the call's own bound is
        // checked once its priority is known.
        let bound = Priority::High.bound(limit);
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            });
        Arrival {
            limiter: self.clone(),
            accepted: Instant::now(),
            held: taken.is_ok(),
            ahead: taken.unwrap_or_else(|n| n),
            limit,
        }
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
/// was room), given back when its handler ends or when it is dropped.
pub(crate) struct Arrival {
    limiter: Arc<Limiter>,
    accepted: Instant,
    /// Whether the call counts in flight.
    held: bool,
    /// Calls in flight when it was accepted, and the limit then.
    ahead: usize,
    limit: usize,
}

impl Arrival {
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
        if !self.held || (!metadata && !Priority::Normal.admits(self.ahead, self.limit)) {
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

    /// The handler has ended: its latency since the stream was accepted
    /// teaches the limit, and the call no longer counts (its answer may
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
