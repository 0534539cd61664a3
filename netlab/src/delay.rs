//! The lab's delay and jitter: a user-space forwarder on a TUN device in
//! the hub (this kernel has no `netem`). The hub routes every packet a
//! delayed host sends into the device (policy routing on the port it came
//! in by); the forwarder reads it, holds it until its time is due (the
//! sender's delay, plus a uniformly random share of its jitter) and writes
//! it back into the device, from which the hub routes it on to its
//! destination. Packets of any protocol are treated alike, so QUIC and TCP
//! see the same path. Jitter reorders packets (as `netem`'s does): each
//! one's time is drawn on its own.
//!
//! Two threads: one reads the device (and is interrupted to stop), one
//! writes what is due. The queue is bounded; a packet beyond it is dropped
//! and counted, as a router's full queue would.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tun_rs::{InterruptEvent, SyncDevice};

/// Name of the forwarder's device in the hub.
pub(crate) const DEVICE: &str = "qdelay";

/// Packets held at most; more are dropped (counted).
const QUEUE_LIMIT: usize = 100_000;

/// The forwarder: its device, its threads and what they share.
pub(crate) struct Forwarder {
    shared: Arc<Shared>,
    event: Arc<InterruptEvent>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("held", &self.shared.queue().heap.len())
            .field(
                "overflowed",
                &self.shared.overflowed.load(Ordering::Relaxed),
            )
            .finish()
    }
}

/// The delay of the packets of each host, by the last byte of its address
/// (hosts are 10.77.0.x): what [`Host::set_path`](crate::Host::set_path)
/// changes while the forwarder runs.
#[derive(Debug)]
pub(crate) struct Delays {
    delay_ns: [AtomicU64; 256],
    jitter_ns: [AtomicU64; 256],
}

impl Delays {
    pub(crate) fn set(&self, host: u8, delay: Duration, jitter: Duration) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.delay_ns[host as usize].store(ns(delay), Ordering::Relaxed);
        self.jitter_ns[host as usize].store(ns(jitter), Ordering::Relaxed);
    }

    /// How long a packet from `host` is held: its delay, plus `draw`
    /// (uniform in 0..=1) of its jitter.
    fn hold(&self, host: u8, draw: f64) -> Duration {
        let delay = self.delay_ns[host as usize].load(Ordering::Relaxed);
        let jitter = self.jitter_ns[host as usize].load(Ordering::Relaxed);
        Duration::from_nanos(delay.saturating_add((jitter as f64 * draw) as u64))
    }
}

struct Shared {
    delays: Arc<Delays>,
    queue: Mutex<Queue>,
    due: Condvar,
    stop: AtomicBool,
    overflowed: AtomicU64,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Held>>,
    next: u64,
}

/// A packet and when it is due; equal times go in arrival order.
struct Held {
    due: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Queue {
    /// Holds `packet` until `due`; false when the queue is full.
    fn push(&mut self, due: Instant, packet: Vec<u8>) -> bool {
        if self.heap.len() >= QUEUE_LIMIT {
            return false;
        }
        self.next += 1;
        self.heap.push(Reverse(Held {
            due,
            seq: self.next,
            packet,
        }));
        true
    }

    /// The packets due by `now`, earliest first, into `out`; else how long
    /// until the next one is (`None`: none is held).
    fn take_due(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) -> Option<Duration> {
        while let Some(Reverse(first)) = self.heap.peek() {
            if first.due > now {
                return out.is_empty().then(|| first.due - now);
            }
            let Reverse(held) = self.heap.pop().expect("peeked");
            out.push(held.packet);
        }
        None
    }
}

/// The last byte of an IPv4 packet's source address (`None` for anything
/// else).
pub(crate) fn source_host(packet: &[u8]) -> Option<u8> {
    (packet.len() >= 20 && packet[0] >> 4 == 4).then(|| packet[15])
}

impl Forwarder {
    /// Starts forwarding on `device` (made in the hub, non-blocking).
    pub(crate) fn start(device: SyncDevice, delays: Arc<Delays>) -> std::io::Result<Forwarder> {
        device.set_nonblocking(true)?;
        let device = Arc::new(device);
        let event = Arc::new(InterruptEvent::new()?);
        let shared = Arc::new(Shared {
            delays,
            queue: Mutex::new(Queue::default()),
            due: Condvar::new(),
            stop: AtomicBool::new(false),
            overflowed: AtomicU64::new(0),
        });
        let reader = {
            let (device, event, shared) = (device.clone(), event.clone(), shared.clone());
            std::thread::Builder::new()
                .name("netlab-delay-in".into())
                .spawn(move || read(&device, &event, &shared))?
        };
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("netlab-delay-out".into())
                .spawn(move || write(&device, &shared))?
        };
        Ok(Forwarder {
            shared,
            event,
            threads: vec![reader, writer],
        })
    }

    /// Packets dropped because the queue was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.shared.overflowed.load(Ordering::Relaxed)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.event.trigger();
        {
            let _queue = self.shared.queue();
            self.shared.due.notify_all();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Reads every packet the hub routes into the device and queues it until
/// its time, until stopped.
fn read(device: &SyncDevice, event: &InterruptEvent, shared: &Shared) {
    let mut buf = vec![0u8; 65_536];
    let mut batch = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match device.recv_intr(&mut buf, event) {
            Ok(n) => batch.push((Instant::now(), buf[..n].to_vec())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        // Whatever else is waiting, in one go.
        while batch.len() < 64 {
            match device.recv(&mut buf) {
                Ok(n) => batch.push((Instant::now(), buf[..n].to_vec())),
                Err(_) => break,
            }
        }
        let mut queue = shared.queue();
        for (arrived, packet) in batch.drain(..) {
            let host = source_host(&packet).unwrap_or(0);
            let due = arrived + shared.delays.hold(host, fastrand::f64());
            if !queue.push(due, packet) {
                shared.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.due.notify_one();
    }
}

/// Writes each held packet back into the device when it is due, until
/// stopped.
fn write(device: &SyncDevice, shared: &Shared) {
    // Wake-ups on time to within microseconds, not the default 50.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let mut due = Vec::new();
    let mut queue = shared.queue();
    while !shared.stop.load(Ordering::Relaxed) {
        match queue.take_due(Instant::now(), &mut due) {
            _ if !due.is_empty() => {
                drop(queue);
                for packet in due.drain(..) {
                    // A full device drops the packet, as a link would.
                    let _ = send(device, &packet);
                }
                queue = shared.queue();
            }
            Some(wait) => {
                queue = shared
                    .due
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            None => {
                queue = shared
                    .due
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// Writes one packet, waiting briefly if the device is momentarily full.
fn send(device: &SyncDevice, packet: &[u8]) -> std::io::Result<usize> {
    for _ in 0..100 {
        match device.send(packet) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(10));
            }
            other => return other,
        }
    }
    Err(std::io::ErrorKind::WouldBlock.into())
}

/// A delay table with nothing set.
pub(crate) fn no_delays() -> Arc<Delays> {
    Arc::new(Delays {
        delay_ns: std::array::from_fn(|_| AtomicU64::new(0)),
        jitter_ns: std::array::from_fn(|_| AtomicU64::new(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_leave_when_due_and_in_arrival_order_when_due_together() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut queue = Queue::default();
        assert!(queue.push(start + ms(20), vec![2]));
        assert!(queue.push(start + ms(10), vec![1]));
        assert!(queue.push(start + ms(20), vec![3]));
        let mut out = Vec::new();
        assert_eq!(queue.take_due(start, &mut out), Some(ms(10)));
        assert!(out.is_empty());
        assert_eq!(queue.take_due(start + ms(15), &mut out), None);
        assert_eq!(out, vec![vec![1]]);
        out.clear();
        assert_eq!(queue.take_due(start + ms(15), &mut out), Some(ms(5)));
        assert_eq!(queue.take_due(start + ms(25), &mut out), None);
        assert_eq!(out, vec![vec![2], vec![3]]);
        out.clear();
        assert_eq!(queue.take_due(start + ms(99), &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut queue = Queue::default();
        let now = Instant::now();
        for _ in 0..QUEUE_LIMIT {
            assert!(queue.push(now, Vec::new()));
        }
        assert!(!queue.push(now, Vec::new()));
    }

    #[test]
    fn a_packet_is_held_for_its_senders_delay_plus_its_share_of_jitter() {
        let delays = no_delays();
        let ms = Duration::from_millis;
        delays.set(2, ms(10), ms(4));
        assert_eq!(delays.hold(2, 0.0), ms(10));
        assert_eq!(delays.hold(2, 0.5), ms(12));
        assert_eq!(delays.hold(2, 1.0), ms(14));
        assert_eq!(delays.hold(3, 0.7), Duration::ZERO);
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[10, 77, 0, 2]);
        assert_eq!(source_host(&packet), Some(2));
        packet[0] = 0x60;
        assert_eq!(source_host(&packet), None);
        assert_eq!(source_host(&[0x45; 10]), None);
    }
}
