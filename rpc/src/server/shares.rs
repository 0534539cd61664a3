//! Each peer's share of the server: calls in flight, request bytes held and
//! connections, bounded per peer as well as in total, so that no single
//! peer, however many connections it opens, can take what the others need.
//!
//! A peer is the verified certificate's name (every connection and every
//! certificate of one principal share one share; a certificate without a
//! name is a peer of its own, by fingerprint), or, for a caller without a
//! certificate, its IP address. The global limits are semaphores in
//! [`super::Shared`]; a call takes from both, and gives both back when it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use quicall_transport::PeerIdentity;
use tokio::sync::Semaphore;

use super::limiter::Arrival;
use crate::admission::Priority;

/// Who a share belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    /// The verified certificate's name.
    Name(Arc<str>),
    /// A verified certificate without a name, by its SHA-256 fingerprint.
    Certificate([u8; 32]),
    /// A caller without certificate, by address.
    Address(IpAddr),
}

impl PeerKey {
    pub(crate) fn of(peer: Option<&PeerIdentity>, addr: IpAddr) -> Self {
        match peer {
            Some(p) if p.name().is_empty() => PeerKey::Certificate(*p.fingerprint()),
            Some(p) => PeerKey::Name(Arc::from(p.name())),
            None => PeerKey::Address(addr.to_canonical()),
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Name(name) => write!(f, "{name}"),
            PeerKey::Certificate(fingerprint) => {
                write!(f, "the certificate ")?;
                fingerprint[..8]
                    .iter()
                    .try_for_each(|b| write!(f, "{b:02x}"))?;
                write!(f, "…")
            }
            PeerKey::Address(addr) => write!(f, "{addr} (no certificate)"),
        }
    }
}

/// The most one peer may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerLimits {
    pub(crate) calls: usize,
    pub(crate) bytes: usize,
    pub(crate) connections: usize,
}

/// One peer's counters.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    calls: AtomicUsize,
    bytes: AtomicUsize,
    connections: AtomicUsize,
    limits: PeerLimits,
}

/// Adds `n` to `counter` unless that would pass `max`.
fn try_add(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(n).filter(|&sum| sum <= max)
        })
        .is_ok()
}

/// Every peer with a connection (or a call) now.
#[derive(Debug)]
pub(crate) struct Peers {
    map: Mutex<Known>,
    limits: PeerLimits,
}

#[derive(Debug)]
struct Known {
    peers: HashMap<PeerKey, Weak<Peer>>,
    /// Size at which the peers that are gone are forgotten next.
    prune_at: usize,
}

impl Peers {
    pub(crate) fn new(limits: PeerLimits) -> Self {
        Self {
            map: Mutex::new(Known {
                peers: HashMap::new(),
                prune_at: 64,
            }),
            limits,
        }
    }

    /// A share for a new connection of `key`, or `None` when that peer
    /// holds as many connections as it may.
    pub(crate) fn connect(&self, key: PeerKey) -> Option<ConnectionShare> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let peer = match map.peers.get(&key).and_then(Weak::upgrade) {
            Some(peer) => peer,
            None => {
                // Forget peers that are gone, amortized: the map holds at
                // most about twice the live peers (or 64).
                if map.peers.len() >= map.prune_at {
                    map.peers.retain(|_, peer| peer.strong_count() > 0);
                    map.prune_at = (map.peers.len() * 2).max(64);
                }
                let peer = Arc::new(Peer {
                    key: key.clone(),
                    calls: AtomicUsize::new(0),
                    bytes: AtomicUsize::new(0),
                    connections: AtomicUsize::new(0),
                    limits: self.limits,
                });
                map.peers.insert(key, Arc::downgrade(&peer));
                peer
            }
        };
        drop(map);
        // Not `then_some`: a share made and dropped would give back a
        // connection that was never counted.
        if try_add(&peer.connections, 1, peer.limits.connections) {
            Some(ConnectionShare(peer))
        } else {
            None
        }
    }

    /// Peers known now (live or not yet forgotten).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peers
            .len()
    }
}

/// A connection's place in its peer's share; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionShare(Arc<Peer>);

impl ConnectionShare {
    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.0
    }
}

impl Drop for ConnectionShare {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server holds all the calls it may.
    ServerCalls,
    /// This peer holds all the calls it may.
    PeerCalls,
    /// The server holds all the request bytes it may.
    ServerBytes,
    /// This peer holds all the request bytes it may.
    PeerBytes,
    /// The server's adaptive limit is reached: it is past its capacity.
    Overloaded,
}

/// A call's slot, taken from the server's and its peer's (and from the
/// adaptive limit, for a unary call on a server that has one): given back
/// when dropped.
pub(crate) struct CallSlot<'a> {
    server: &'a Semaphore,
    peer: &'a Peer,
    admitted: Option<Arrival>,
}

impl<'a> CallSlot<'a> {
    /// Takes a slot within the fixed limits, then under the adaptive limit
    /// if the call's stream had an `arrival` (see [`Arrival::admit`]; the
    /// flags say whether the call is unary and carries metadata): the
    /// fixed limits are the outer bounds, and a call over them is refused
    /// as such, whatever the adaptive limit.
    pub(crate) fn take(
        server: &'a Semaphore,
        peer: &'a Peer,
        arrival: Option<(Arrival, bool, bool)>,
    ) -> Result<Self, Refusal> {
        if !try_add(&peer.calls, 1, peer.limits.calls) {
            return Err(Refusal::PeerCalls);
        }
        match server.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                peer.calls.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::ServerCalls);
            }
        }
        // From here, dropping `slot` gives back what was taken.
        let mut slot = Self {
            server,
            peer,
            admitted: None,
        };
        if let Some((arrival, unary, metadata)) = arrival {
            slot.admitted = arrival
                .admit(unary, metadata)
                .map_err(|()| Refusal::Overloaded)?;
        }
        Ok(slot)
    }

    /// The call waits on the network for its body: see [`Arrival::pause`].
    pub(crate) fn pause(&mut self) {
        if let Some(arrival) = &mut self.admitted {
            arrival.pause();
        }
    }

    /// Its body has come: see [`Arrival::resume`].
    pub(crate) fn resume(&mut self) -> Result<(), Refusal> {
        match &mut self.admitted {
            Some(arrival) => arrival.resume().map_err(|()| Refusal::Overloaded),
            None => Ok(()),
        }
    }

    /// The call's priority, from its metadata: see [`Arrival::prioritize`].
    pub(crate) fn prioritize(&mut self, priority: Priority) -> Result<(), Refusal> {
        match &mut self.admitted {
            Some(arrival) => arrival
                .prioritize(priority)
                .map_err(|()| Refusal::Overloaded),
            None => Ok(()),
        }
    }

    /// The handler has ended (`ok`: in time): see [`Admitted::handled`].
    pub(crate) fn handled(&mut self, ok: bool) {
        if let Some(admitted) = &mut self.admitted {
            admitted.handled(ok);
        }
    }
}

impl std::fmt::Debug for CallSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSlot")
            .field("peer", &self.peer.key)
            .field("adaptive", &self.admitted.is_some())
            .finish()
    }
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        self.server.add_permits(1);
        self.peer.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Request bytes a call holds, charged as they arrive (not from the length a
/// header announces) against the server's and the peer's budgets; given back
/// when dropped.
#[derive(Debug)]
pub(crate) struct Charge<'a> {
    server: &'a Semaphore,
    peer: &'a Peer,
    held: usize,
}

impl<'a> Charge<'a> {
    pub(crate) fn new(server: &'a Semaphore, peer: &'a Peer) -> Self {
        Self {
            server,
            peer,
            held: 0,
        }
    }

    /// Charges `n` more bytes.
    pub(crate) fn add(&mut self, n: usize) -> Result<(), Refusal> {
        charge(self.server, self.peer, n)?;
        self.held += n;
        Ok(())
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        release(self.server, self.peer, self.held);
    }
}

/// Charges `n` request bytes to the server's budget and `peer`'s, or
/// neither.
pub(crate) fn charge(server: &Semaphore, peer: &Peer, n: usize) -> Result<(), Refusal> {
    if n == 0 {
        return Ok(());
    }
    if !try_add(&peer.bytes, n, peer.limits.bytes) {
        return Err(Refusal::PeerBytes);
    }
    let permits = u32::try_from(n).unwrap_or(u32::MAX);
    match server.try_acquire_many(permits) {
        Ok(permit) => permit.forget(),
        Err(_) => {
            peer.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(Refusal::ServerBytes);
        }
    }
    Ok(())
}

/// Gives back `n` bytes charged with [`charge`].
pub(crate) fn release(server: &Semaphore, peer: &Peer, n: usize) {
    if n > 0 {
        server.add_permits(n);
        peer.bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PeerLimits = PeerLimits {
        calls: 2,
        bytes: 100,
        connections: 2,
    };

    fn name(n: &str) -> PeerKey {
        PeerKey::Name(Arc::from(n))
    }

    #[test]
    fn connections_are_capped_per_peer_and_given_back() {
        let peers = Peers::new(LIMITS);
        let a1 = peers.connect(name("a")).unwrap();
        let a2 = peers.connect(name("a")).unwrap();
        assert!(peers.connect(name("a")).is_none());
        // A refusal gives nothing back that it did not take.
        assert!(peers.connect(name("a")).is_none());
        // Another peer is not affected.
        let _b = peers.connect(name("b")).unwrap();
        drop(a1);
        let _a3 = peers.connect(name("a")).unwrap();
        assert!(Arc::ptr_eq(a2.peer(), _a3.peer()));
    }

    #[test]
    fn calls_take_from_the_peer_and_the_server_and_give_both_back() {
        let server = Semaphore::new(3);
        let peers = Peers::new(LIMITS);
        let a = peers.connect(name("a")).unwrap();
        let b = peers.connect(name("b")).unwrap();
        let a1 = CallSlot::take(&server, a.peer(), None).unwrap();
        let _a2 = CallSlot::take(&server, a.peer(), None).unwrap();
        assert_eq!(
            CallSlot::take(&server, a.peer(), None).unwrap_err(),
            Refusal::PeerCalls
        );
        // The peer's refusal took nothing from the server.
        assert_eq!(server.available_permits(), 1);
        let _b1 = CallSlot::take(&server, b.peer(), None).unwrap();
        assert_eq!(
            CallSlot::take(&server, b.peer(), None).unwrap_err(),
            Refusal::ServerCalls
        );
        drop(a1);
        assert_eq!(server.available_permits(), 1);
        let _b2 = CallSlot::take(&server, b.peer(), None).unwrap();
    }

    #[test]
    fn bytes_are_charged_as_they_come_and_refused_past_either_budget() {
        let server = Semaphore::new(150);
        let peers = Peers::new(LIMITS);
        let a = peers.connect(name("a")).unwrap();
        let b = peers.connect(name("b")).unwrap();
        let mut ca = Charge::new(&server, a.peer());
        ca.add(60).unwrap();
        ca.add(40).unwrap();
        assert_eq!(ca.add(1).unwrap_err(), Refusal::PeerBytes);
        assert_eq!(server.available_permits(), 50);
        let mut cb = Charge::new(&server, b.peer());
        cb.add(50).unwrap();
        assert_eq!(cb.add(1).unwrap_err(), Refusal::ServerBytes);
        drop(ca);
        assert_eq!(server.available_permits(), 100);
        cb.add(50).unwrap();
        drop(cb);
        assert_eq!(server.available_permits(), 150);
    }

    #[test]
    fn gone_peers_are_forgotten() {
        let peers = Peers::new(LIMITS);
        for i in 0..1000 {
            let key = PeerKey::Address(std::net::Ipv4Addr::from(i as u32).into());
            drop(peers.connect(key).unwrap());
        }
        assert!(peers.len() <= 128, "{} peers remembered", peers.len());
    }

    #[test]
    fn addresses_are_keyed_in_canonical_form() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(PeerKey::of(None, v4), PeerKey::of(None, mapped));
    }
}
