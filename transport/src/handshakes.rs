//! Handshakes in progress on a server: a small pool of their own, a cap per
//! source address, the oldest evicted when either is full, and a shorter
//! timeout under pressure.
//!
//! A peer without a certificate can start handshakes it never finishes (it
//! lets its Initial packets out and ignores the answers; it passes a Retry,
//! so address validation does not stop it). Each such handshake holds server
//! state until its timeout. Bounded by the connection limit alone, a flood
//! of them fills every slot and good clients are refused. Here they have a
//! pool of their own ([`Limits::max_handshakes`](crate::Limits::max_handshakes)),
//! an address may hold only a few places in it
//! ([`Limits::max_handshakes_per_address`](crate::Limits::max_handshakes_per_address)),
//! and a new handshake evicts the oldest one (of its own address first):
//! a real client finishes its handshake in a round trip or two, long before
//! a flood can push it out, while a stalled one is the oldest. Once the pool
//! is half full, new handshakes get
//! [`Limits::handshake_timeout_under_pressure`](crate::Limits::handshake_timeout_under_pressure).
//!
//! [`Pool`] decides; the server endpoint carries out its decisions.

use std::collections::VecDeque;
use std::net::IpAddr;

/// The handshakes in progress, oldest first.
#[derive(Debug)]
pub(crate) struct Pool {
    entries: VecDeque<(u64, IpAddr)>,
    next: u64,
    max: usize,
    per_address: usize,
}

/// A handshake let in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Its number, to [`Pool::remove`] it when it ends.
    pub(crate) id: u64,
    /// The handshake it pushes out, if the pool (or its address's share)
    /// was full.
    pub(crate) evict: Option<u64>,
    /// Whether the pool was at least half full: the new handshake gets the
    /// shorter timeout.
    pub(crate) pressure: bool,
}

impl Pool {
    pub(crate) fn new(max: usize, per_address: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            next: 0,
            max: max.max(1),
            per_address: per_address.max(1),
        }
    }

    /// Lets a handshake from `addr` in.
    pub(crate) fn admit(&mut self, addr: IpAddr) -> Admitted {
        let addr = addr.to_canonical();
        let pressure = self.entries.len() * 2 >= self.max;
        let from_addr = self.entries.iter().filter(|(_, a)| *a == addr).count();
        let evict = if from_addr >= self.per_address {
            let i = self.entries.iter().position(|(_, a)| *a == addr);
            i.and_then(|i| self.entries.remove(i)).map(|(id, _)| id)
        } else if self.entries.len() >= self.max {
            self.entries.pop_front().map(|(id, _)| id)
        } else {
            None
        };
        let id = self.next;
        self.next += 1;
        self.entries.push_back((id, addr));
        Admitted {
            id,
            evict,
            pressure,
        }
    }

    /// Forgets a handshake that ended (or was evicted: then a no-op).
    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(i) = self.entries.iter().position(|(e, _)| *e == id) {
            self.entries.remove(i);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn the_oldest_is_evicted_when_the_pool_is_full() {
        let mut pool = Pool::new(4, 4);
        for i in 0..4 {
            let a = pool.admit(ip(i));
            assert_eq!(a.evict, None);
            assert_eq!(a.pressure, i >= 2);
        }
        let a = pool.admit(ip(9));
        assert_eq!(a.evict, Some(0));
        assert!(a.pressure);
        assert_eq!(pool.len(), 4);
        let a = pool.admit(ip(9));
        assert_eq!(a.evict, Some(1));
    }

    #[test]
    fn an_address_at_its_cap_evicts_its_own_oldest_not_others() {
        let mut pool = Pool::new(100, 2);
        let good = pool.admit(ip(1)).id;
        let first = pool.admit(ip(2)).id;
        let second = pool.admit(ip(2)).id;
        assert_eq!(pool.admit(ip(2)).evict, Some(first));
        assert_eq!(pool.admit(ip(2)).evict, Some(second));
        // A flood from one address never pushes out another's handshake.
        for _ in 0..1000 {
            assert_ne!(pool.admit(ip(2)).evict, Some(good));
        }
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn ended_handshakes_leave_and_evicted_ones_are_not_removed_twice() {
        let mut pool = Pool::new(2, 2);
        let a = pool.admit(ip(1)).id;
        let b = pool.admit(ip(1)).id;
        pool.remove(a);
        assert_eq!(pool.len(), 1);
        let c = pool.admit(ip(1));
        assert_eq!(c.evict, None);
        let d = pool.admit(ip(1));
        assert_eq!(d.evict, Some(b));
        pool.remove(b);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn mapped_and_plain_ipv4_are_one_address() {
        let mut pool = Pool::new(10, 1);
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let first = pool.admit(v4).id;
        assert_eq!(pool.admit(mapped).evict, Some(first));
    }
}
