//! One server of a cluster: its pool slot, latency estimate, health and stats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quicall_transport::{Slot, SlotStatus};

use crate::balance::{Candidate, Health, PeakEwma};
use crate::metrics::Stats;

pub(crate) struct Member {
    pub(crate) slot: Arc<Slot>,
    pub(crate) ewma: Mutex<PeakEwma>,
    pub(crate) health: Mutex<Health>,
    pub(crate) stats: Stats,
    /// Its attempts, for Prometheus.
    pub(crate) meter: crate::meter::MethodMeter,
}

impl Member {
    pub(crate) fn new(
        slot: Arc<Slot>,
        initial: Duration,
        decay: Duration,
        meter: crate::meter::MethodMeter,
    ) -> Self {
        Self {
            slot,
            ewma: Mutex::new(PeakEwma::new(initial, decay)),
            health: Mutex::new(Health::default()),
            stats: Stats::default(),
            meter,
        }
    }

    pub(crate) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ewma(&self) -> std::sync::MutexGuard<'_, PeakEwma> {
        self.ewma.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the balancer sees of this server at `now`, or `None` if it takes
    /// no call now (ejected, probing, draining, or waiting to reconnect).
    /// With `connected_only`, a server without an open connection is skipped
    /// too, and a connection attempt to it is started in the background, so
    /// that calls go to connected servers while it reconnects.
    pub(crate) fn candidate(&self, now: Duration, connected_only: bool) -> Option<Candidate> {
        if !self.health().is_available(now) {
            return None;
        }
        match self.slot.status() {
            SlotStatus::Draining | SlotStatus::BackingOff => return None,
            SlotStatus::Idle if connected_only => {
                self.slot.start_connect();
                return None;
            }
            SlotStatus::Connecting if connected_only => return None,
            _ => {}
        }
        Some(Candidate {
            in_flight: self.slot.in_flight(),
            latency_ns: self.ewma().estimate_ns(now),
        })
    }
}
