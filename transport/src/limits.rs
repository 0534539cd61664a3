use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::ControllerFactory;
use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Transport limits, with safe defaults, for servers and clients alike.
///
/// Every limit is checked before memory is committed: QUIC flow control bounds
/// what a peer may send before it is read, the stream limit bounds concurrent
/// calls per connection, and the connection limit bounds a server's peers.
///
/// ```
/// use quicall_transport::Limits;
/// use std::time::Duration;
/// let limits = Limits {
///     max_concurrent_streams: 256,
///     idle_timeout: Duration::from_secs(10),
///     ..Limits::default()
/// };
/// assert_eq!(limits.max_connections, Limits::default().max_connections);
/// ```
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bidirectional streams (calls) the peer may have open at once on one
    /// connection. Further calls wait for a stream to close. Default 1024.
    pub max_concurrent_streams: u32,
    /// Connections a server accepts at once; more are refused. Default 4096.
    pub max_connections: usize,
    /// Time allowed for the QUIC and TLS handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Server side: handshakes in progress at once (each also holds a
    /// connection slot). A new one beyond it pushes the oldest out. Default
    /// 256.
    pub max_handshakes: usize,
    /// Server side: handshakes in progress from one IP address; a new one
    /// beyond it pushes that address's oldest out, never another's. Default
    /// 16.
    pub max_handshakes_per_address: usize,
    /// Server side: the handshake timeout of handshakes that start while
    /// [`Limits::max_handshakes`] is at least half used. Default 1 s.
    pub handshake_timeout_under_pressure: Duration,
    /// A connection with no traffic for this long is closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Client side: a connection that has received nothing for this long
    /// sends a PING, which a live server acknowledges within a round trip
    /// (a busy connection sends none). This holds an idle connection open and
    /// lets [`Limits::liveness_timeout`] tell a silent server from a slow
    /// handler. `None` for none (and then no liveness check). Default 250 ms.
    /// A server never sends keep-alives: a client that wants its idle
    /// connection kept sends its own, so idle connections cost the server
    /// nothing past [`Limits::idle_timeout`].
    pub keep_alive: Option<Duration>,
    /// Client side: a connection on which nothing at all has arrived for this
    /// long (or for one keep-alive interval plus three probe timeouts, if that
    /// is longer: see [`silence_threshold`](crate::silence_threshold)) is
    /// given up, and its calls fail at once with UNAVAILABLE: the server died
    /// without closing (SIGKILL, a vanished host, a partition). `None` to
    /// wait for [`Limits::idle_timeout`] instead. Needs
    /// [`Limits::keep_alive`]. Default 1 s.
    pub liveness_timeout: Option<Duration>,
    /// Handshakes in progress on a server above which new connection attempts
    /// from addresses not yet validated must first echo a QUIC Retry token
    /// (one extra round trip), so that a flood of spoofed Initial packets
    /// costs the server no handshake state. Default 64; 0 makes every client
    /// prove its address.
    pub retry_above_handshakes: usize,
    /// Bytes a peer on the network may send on one stream before it is
    /// read. Default 2 MiB. The window must cover the path's
    /// bandwidth-delay product (a shorter one caps a single stream's rate at
    /// window / round trip); whatever it holds beyond that is a queue while
    /// a writer outruns its reader, and each message then waits behind it.
    pub stream_receive_window: u32,
    /// The same window towards a peer on a loopback address, whose round
    /// trip is microseconds: default 512 KiB, still about ten times what a
    /// loopback stream moves in a round trip, so that a reader's pause of
    /// a millisecond or two costs no rate. Measured against 2 MiB (64 B
    /// stream messages, docs/benchmarks.md, "The loopback stream window"):
    /// the same messages/s, a p99 a third as long; a writer that outruns
    /// its reader holds a 512 KiB queue, not 2 MiB.
    pub loopback_stream_receive_window: u32,
    /// Bytes the peer may send on a whole connection before they are read.
    /// Default 16 MiB.
    pub receive_window: u32,
    /// Bytes of unacknowledged data this side keeps in flight on a connection.
    /// Default 16 MiB.
    pub send_window: u64,
    /// Largest UDP payload path MTU discovery probes for, towards a peer on
    /// a network. Default 1452 (an Ethernet path; discovery finds less where
    /// the path has less). Jumbo-frame networks carry more: a larger bound
    /// means fewer, larger packets, and much less work per byte. Bounds above
    /// [`GSO_MTU_LIMIT`] turn segmentation offload off for the connection
    /// (see there).
    pub max_mtu: u16,
    /// The same bound towards a peer on a loopback address (`127.0.0.0/8`,
    /// `::1`), whose path carries up to 65,507 bytes. Default
    /// [`GSO_MTU_LIMIT`] (6,500): about 4.5 times fewer packets per byte than
    /// 1452, which doubled bulk throughput on loopback in the load benchmark.
    /// A loopback connection starts at this bound rather than discovering
    /// it, or at what the `lo` interface carries where the kernel reports a
    /// smaller MTU for it (it is 65,536 unless set otherwise).
    pub loopback_mtu: u16,
    /// The congestion controller of each connection to a peer on the
    /// network. Default BBR: loss on a network is not always congestion,
    /// and the loss-based controllers take every loss for it. In the
    /// network lab (`netbench`) at 1% random loss, CUBIC gave 16 and 128
    /// callers of 16 KiB 0.01x-0.44x of BBR's calls/s (at a 20 ms round
    /// trip, 41 calls/s against 3,148 with 128 callers: its window never
    /// grew past the 12-20 packets that one loss in a hundred allows),
    /// while 64 B calls got 0.55x-2.3x (0.87x-1.06x on a fast path at low
    /// loss; docs/benchmarks.md). The BBR is quinn's (version 1, marked
    /// experimental by quinn), in a copy whose first PROBE_RTT comes 10 s
    /// into a connection instead of at its first loaded round trip (which
    /// stalled the first calls of every connection for about 250 ms).
    /// Like every BBRv1 it keeps sending through loss, and can take more
    /// than its share of a bottleneck shared with loss-based flows: choose
    /// CUBIC where that matters more than throughput under random loss.
    pub congestion: Congestion,
    /// The congestion controller towards a peer on a loopback address.
    /// Default CUBIC (quinn's own default): loopback loses nothing, and
    /// there CUBIC gave 64 B calls the higher rate. CUBIC and NewReno start
    /// there with a window of ten packets of [`Limits::loopback_mtu`] (RFC
    /// 9002's 14,720-byte cap would hold one 6,500-byte packet in flight).
    pub loopback_congestion: Congestion,
    /// With `Some(n)`, asks the peer (QUIC ACK frequency extension) to
    /// acknowledge only every `n` ack-eliciting packets (or after its max ACK
    /// delay): fewer ACKs, less work per byte on fast links. `None` (the
    /// default) keeps QUIC's ACK every other packet.
    pub ack_every: Option<u32>,
    /// With `Some(d)`, asks a peer on the network (not on loopback: QUIC
    /// ACK frequency extension, which every quinn peer supports) to
    /// acknowledge within `d` instead of the 25 ms QUIC allows by default
    /// (a peer is never asked for less than the `min_ack_delay` it
    /// advertises: 1 ms for stock quinn, [`Limits::timer_granularity`] for
    /// quicall). The sender's probe timeout includes the peer's ACK delay,
    /// so a lost last packet (a request or response with nothing after it)
    /// is found that much sooner. `None` keeps the peer's own (25 ms).
    /// Default 250 µs: on a 0.1 ms path at 1% loss, one caller's p99 went
    /// from 28 ms (25 ms) to 3.6 ms (1 ms) and 0.75 ms (250 µs, with the
    /// 100 µs granularity) (docs/benchmarks.md); an idle connection's
    /// acknowledgements come sooner, none more often when traffic is steady.
    pub max_ack_delay: Option<Duration>,
    /// Whether quinn's timers fire on time (to the tens of microseconds:
    /// the last millisecond of each is kept by one thread of the process)
    /// or on tokio's 1 ms tick, up to 1 ms late. A probe timeout, a delayed
    /// acknowledgement and a loss found by time each wait for a timer, so
    /// on a fast path this sets the tail of every loss recovery. Default
    /// `true`. Turn it off where tokio's clock is paused
    /// (`tokio::time::pause`): the precise thread keeps real time.
    pub precise_timers: bool,
    /// The granularity of QUIC's loss-recovery timers (RFC 9002's
    /// kGranularity): the least time a probe timeout leaves for the round
    /// trip's variation, the least time after which a packet is declared
    /// lost by time, and the least ACK delay a peer may ask of this end.
    /// Applied only with [`Limits::precise_timers`] (tokio's timers are up to
    /// 1 ms late anyway); 1 ms, RFC 9002's value, without them. Default
    /// 100 µs: with the 250 µs ACK delay, a lost request on a 0.1 ms path
    /// is probed 0.46 ms after it instead of 2.1 ms. quinn has the value as
    /// a constant; quicall builds with a patched quinn-proto
    /// (vendor/quinn-proto). Applied towards network peers only: loopback
    /// loses nothing, and its peers keep RFC 9002's 1 ms.
    pub timer_granularity: Duration,
    /// The round trip a connection assumes before it has measured one
    /// (RFC 9002's kInitialRtt): a lost handshake packet is sent again
    /// after three times this (its probe timeout), doubled per further
    /// loss. Default 10 ms, where RFC 9002 and quinn assume 333 ms for a
    /// path nothing is known of: quicall's peers are mostly in one data
    /// centre or region, and a first call that lost a handshake packet took
    /// about 1 s with 333 ms against 30-60 ms with 10 ms (1% and 5% loss,
    /// `netbench --first-calls`, docs/benchmarks.md). On a longer path the
    /// cost is a few early copies of the first flight, at 30, 90, 210 ms...
    pub initial_rtt: Duration,
    /// Loss detection's packet threshold (RFC 9002's kPacketThreshold): a
    /// packet counts as lost once a packet sent this many after it is
    /// acknowledged. Default 3, RFC 9002's (1 measured no better on lossy
    /// paths without reordering; docs/benchmarks.md).
    pub packet_threshold: u32,
    /// Loss detection's time threshold (kTimeThreshold), as a factor of the
    /// round trip: a packet counts as lost this long after it was sent, once
    /// a later one is acknowledged. Default 9/8, RFC 9002's.
    pub time_threshold: f32,
    /// Kernel receive buffer of the UDP socket (SO_RCVBUF), 0 for the
    /// system's default. Default 4 MiB: a burst of a full window must not
    /// overflow it (the kernel caps it at `net.core.rmem_max`; a warning is
    /// logged when it does).
    pub socket_receive_buffer: usize,
    /// Kernel send buffer of the UDP socket (SO_SNDBUF), 0 for the system's
    /// default. Default 4 MiB.
    pub socket_send_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 1024,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_address: 16,
            handshake_timeout_under_pressure: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_millis(250)),
            liveness_timeout: Some(Duration::from_secs(1)),
            retry_above_handshakes: 64,
            stream_receive_window: 2 << 20,
            loopback_stream_receive_window: 512 << 10,
            receive_window: 16 << 20,
            send_window: 16 << 20,
            max_mtu: 1452,
            loopback_mtu: GSO_MTU_LIMIT,
            congestion: Congestion::Bbr,
            loopback_congestion: Congestion::Cubic,
            ack_every: None,
            max_ack_delay: Some(Duration::from_micros(250)),
            precise_timers: true,
            timer_granularity: Duration::from_micros(100),
            initial_rtt: Duration::from_millis(10),
            packet_threshold: 3,
            time_threshold: 9.0 / 8.0,
            socket_receive_buffer: 4 << 20,
            socket_send_buffer: 4 << 20,
        }
    }
}

/// The first UDP payload size of a loopback connection: its MTU bound, or
/// what the loopback interface carries (`lo_payload`) if that is less; none
/// (quinn's 1,200, discovering upwards) where that is unknown or smaller.
/// Starting above what `lo` carries would lose every full packet until
/// quinn's black-hole detection stepped down (a first 1 MiB call took
/// about 220 ms instead of 5 with `lo` at MTU 1,500).
fn initial_mtu(bound: u16, lo_payload: Option<u16>) -> Option<u16> {
    Some(bound.min(lo_payload?)).filter(|&start| start > 1200)
}

/// The largest MTU bound at which quinn's segmentation offload (GSO) is safe.
///
/// quinn sends up to 10 packets of one connection in one GSO batch, and the
/// kernel refuses a batch larger than one UDP datagram (65,507 bytes) with
/// `EMSGSIZE`, which quinn-udp discards silently (it expects that error from
/// MTU probes only): every such batch is lost, and the connection stalls on
/// loss recovery. 10 x 6,500 = 65,000 bytes fits. Connections whose MTU bound
/// is above this send one packet per system call instead.
pub const GSO_MTU_LIMIT: u16 = 6500;

/// Whether `peer` is on a loopback address (`127.0.0.0/8`, `::1`, or IPv4
/// loopback mapped into IPv6, as a dual-stack socket reports it): the peers
/// that get [`Limits::loopback_mtu`].
pub(crate) fn is_loopback(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

impl Limits {
    /// The MTU bound towards a peer at `peer`: [`Limits::loopback_mtu`] for a
    /// loopback address, [`Limits::max_mtu`] otherwise; never below QUIC's
    /// minimum of 1200.
    ///
    /// ```
    /// use quicall_transport::Limits;
    /// let limits = Limits::default();
    /// assert_eq!(limits.mtu_towards("127.0.0.1".parse().unwrap()), 6500);
    /// assert_eq!(limits.mtu_towards("::ffff:127.0.0.1".parse().unwrap()), 6500);
    /// assert_eq!(limits.mtu_towards("192.0.2.7".parse().unwrap()), 1452);
    /// ```
    pub fn mtu_towards(&self, peer: IpAddr) -> u16 {
        let mtu = if is_loopback(peer) {
            self.loopback_mtu
        } else {
            self.max_mtu
        };
        mtu.max(1200)
    }

    /// The stream receive window towards a peer at `peer`:
    /// [`Limits::loopback_stream_receive_window`] for a loopback address,
    /// [`Limits::stream_receive_window`] otherwise.
    ///
    /// ```
    /// let limits = quicall_transport::Limits::default();
    /// assert_eq!(limits.stream_window_towards("127.0.0.1".parse().unwrap()), 512 << 10);
    /// assert_eq!(limits.stream_window_towards("::1".parse().unwrap()), 512 << 10);
    /// assert_eq!(limits.stream_window_towards("192.0.2.7".parse().unwrap()), 2 << 20);
    /// ```
    pub fn stream_window_towards(&self, peer: IpAddr) -> u32 {
        if is_loopback(peer) {
            self.loopback_stream_receive_window
        } else {
            self.stream_receive_window
        }
    }

    /// The quinn transport configuration for a client connecting to `peer`:
    /// the server never opens streams towards a client, so it may open none.
    pub(crate) fn client_transport_config(&self, peer: IpAddr) -> Arc<TransportConfig> {
        let mut config = self.base_config(peer);
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .keep_alive_interval(self.keep_alive);
        Arc::new(config)
    }

    /// The quinn transport configuration for a server's connection from
    /// `peer`: no keep-alives of its own (an idle client's connection ends
    /// at the idle timeout unless the client keeps it).
    pub(crate) fn transport_config(&self, peer: IpAddr) -> Arc<TransportConfig> {
        Arc::new(self.base_config(peer))
    }

    /// Whether client connections are watched for a silent server, and with
    /// which floor and keep-alive interval.
    pub(crate) fn liveness(&self) -> Option<(Duration, Duration)> {
        Some((self.liveness_timeout?, self.keep_alive?))
    }

    fn base_config(&self, peer: IpAddr) -> TransportConfig {
        let mtu_bound = self.mtu_towards(peer);
        // A loopback peer loses nothing, and a short ACK delay there only
        // adds acknowledgements (about 10% of the calls/s at 64 B × 16).
        let max_ack_delay = self.max_ack_delay.filter(|_| !is_loopback(peer));
        let mut config = TransportConfig::default();
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(None)
            // quicall never reads unreliable datagrams: no buffer for them
            // (quinn's default keeps 1.25 MB per connection for a peer to fill).
            .datagram_receive_buffer_size(None)
            .datagram_send_buffer_size(0)
            .stream_receive_window(VarInt::from_u32(self.stream_window_towards(peer)))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .timer_granularity(self.timer_granularity_towards(peer))
            .initial_rtt(self.initial_rtt)
            .packet_threshold(self.packet_threshold)
            .time_threshold(self.time_threshold);
        // Towards loopback the path is this host's `lo` interface, whose MTU
        // the kernel tells: a connection starts at the bound (or what `lo`
        // carries, if less) instead of discovering it from 1,200 bytes up;
        // its first window is ten packets of the bound (`congestion_factory`).
        if is_loopback(peer)
            && let Some(start) = initial_mtu(mtu_bound, crate::socket::loopback_payload())
        {
            config.initial_mtu(start);
        }
        config.congestion_controller_factory(self.congestion_factory(peer));
        if self.ack_every.is_some() || max_ack_delay.is_some() {
            let mut ack = quinn::AckFrequencyConfig::default();
            if let Some(n) = self.ack_every {
                ack.ack_eliciting_threshold(VarInt::from_u32(n.saturating_sub(1)));
            }
            ack.max_ack_delay(max_ack_delay);
            config.ack_frequency_config(Some(ack));
        }
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(mtu_bound);
        config.mtu_discovery_config(Some(mtu));
        config.enable_segmentation_offload(mtu_bound <= GSO_MTU_LIMIT);
        config
    }

    /// The congestion controller of a connection to `peer`, configured.
    ///
    /// Towards loopback its first window is ten packets of the MTU bound
    /// (TCP's initial window on loopback is ten of its 64 KiB segments), not
    /// RFC 9002's 14,720-byte cap for unknown Internet paths: with 6,500-byte
    /// packets that cap let one packet be in flight, and the peer
    /// acknowledges a lone packet only after its 25 ms ACK delay
    /// (docs/benchmarks.md, "The first window towards loopback").
    fn congestion_factory(&self, peer: IpAddr) -> Arc<dyn ControllerFactory + Send + Sync> {
        let loopback_window = is_loopback(peer).then(|| 10 * u64::from(self.mtu_towards(peer)));
        match self.congestion_towards(peer) {
            Congestion::Cubic => {
                let mut cubic = quinn::congestion::CubicConfig::default();
                if let Some(window) = loopback_window {
                    cubic.initial_window(window);
                }
                Arc::new(cubic)
            }
            Congestion::NewReno => {
                let mut reno = quinn::congestion::NewRenoConfig::default();
                if let Some(window) = loopback_window {
                    reno.initial_window(window);
                }
                Arc::new(reno)
            }
            // quinn's BBR starts at 200 packets of 1,200 bytes.
            Congestion::Bbr => Arc::new(crate::bbr::BbrConfig::default()),
        }
    }

    /// The timer granularity of a connection to `peer`:
    /// [`Limits::timer_granularity`] towards a network peer with precise
    /// timers, RFC 9002's 1 ms otherwise.
    fn timer_granularity_towards(&self, peer: IpAddr) -> Duration {
        if self.precise_timers && !is_loopback(peer) {
            self.timer_granularity
        } else {
            Duration::from_millis(1)
        }
    }

    /// The congestion controller of a connection to `peer`:
    /// [`Limits::loopback_congestion`] for a loopback address,
    /// [`Limits::congestion`] otherwise.
    pub fn congestion_towards(&self, peer: IpAddr) -> Congestion {
        if is_loopback(peer) {
            self.loopback_congestion
        } else {
            self.congestion
        }
    }

    /// The endpoint configuration: UDP payloads up to the larger of
    /// [`Limits::max_mtu`] and [`Limits::loopback_mtu`] (each connection's
    /// own transport configuration bounds its path by its peer's kind).
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut config = quinn::EndpointConfig::default();
        // quinn refuses more than 65,527 and would then keep its default of
        // 1,472, capping every path there.
        let largest = self.max_mtu.max(self.loopback_mtu).clamp(1200, 65_527);
        let _ = config.max_udp_payload_size(largest);
        config
    }
}

/// A congestion controller (quinn's implementations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Congestion {
    /// CUBIC (RFC 9438): quinn's default, and quicall's towards loopback.
    #[default]
    Cubic,
    /// NewReno (RFC 9002).
    NewReno,
    /// BBR (quinn's experimental version 1, with its first PROBE_RTT 10 s
    /// into a connection): quicall's towards the network.
    Bbr,
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "newreno" => Ok(Congestion::NewReno),
            "bbr" => Ok(Congestion::Bbr),
            _ => Err(format!(
                "unknown congestion controller {s:?}: cubic, newreno, bbr"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ACK frequency part of a peer's transport configuration.
    fn ack_config(limits: &Limits, peer: &str) -> String {
        let config = format!("{:?}", limits.transport_config(peer.parse().unwrap()));
        let start = config.find("ack_frequency_config").unwrap();
        config[start..]
            .split(", congestion")
            .next()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_network_peer_gets_bbr_and_a_loopback_peer_cubic() {
        let limits = Limits::default();
        let peer = |addr: &str| limits.congestion_towards(addr.parse().unwrap());
        assert_eq!(peer("10.77.0.1"), Congestion::Bbr);
        assert_eq!(peer("2001:db8::1"), Congestion::Bbr);
        assert_eq!(peer("127.0.0.1"), Congestion::Cubic);
        assert_eq!(peer("::1"), Congestion::Cubic);
        assert_eq!(peer("::ffff:127.0.0.1"), Congestion::Cubic);
        let chosen = Limits {
            congestion: Congestion::NewReno,
            loopback_congestion: Congestion::Bbr,
            ..Limits::default()
        };
        assert_eq!(
            chosen.congestion_towards("10.0.0.1".parse().unwrap()),
            Congestion::NewReno
        );
        assert_eq!(
            chosen.congestion_towards("127.0.0.1".parse().unwrap()),
            Congestion::Bbr
        );
    }

    #[test]
    fn a_loopback_peer_gets_the_loopback_stream_window() {
        let limits = Limits {
            stream_receive_window: 3 << 20,
            loopback_stream_receive_window: 300 << 10,
            ..Limits::default()
        };
        for (peer, window) in [
            ("10.77.0.1", 3 << 20),
            ("2001:db8::1", 3 << 20),
            ("127.0.0.1", 300 << 10),
            ("::1", 300 << 10),
            ("::ffff:127.0.0.1", 300 << 10),
        ] {
            let peer = peer.parse().unwrap();
            assert_eq!(limits.stream_window_towards(peer), window);
            for config in [
                format!("{:?}", limits.transport_config(peer)),
                format!("{:?}", limits.client_transport_config(peer)),
            ] {
                let field = format!("stream_receive_window: {window},");
                assert!(config.contains(&field), "{peer}: no {field} in {config}");
            }
        }
    }

    #[test]
    fn a_network_peer_is_asked_for_a_short_ack_delay_and_a_loopback_peer_is_not() {
        let limits = Limits::default();
        let network = ack_config(&limits, "10.77.0.1");
        assert!(network.contains("max_ack_delay: Some(250µs)"), "{network}");
        assert!(ack_config(&limits, "127.0.0.1").contains("ack_frequency_config: None"));
        assert!(ack_config(&limits, "::1").contains("ack_frequency_config: None"));
        let peer_default = Limits {
            max_ack_delay: None,
            ..Limits::default()
        };
        assert!(ack_config(&peer_default, "10.77.0.1").contains("ack_frequency_config: None"));
        let fewer_acks = Limits {
            ack_every: Some(4),
            ..peer_default
        };
        let loopback = ack_config(&fewer_acks, "127.0.0.1");
        assert!(loopback.contains("max_ack_delay: None"), "{loopback}");
    }

    #[test]
    fn a_loopback_peer_starts_at_its_mtu_bound_with_ten_packets_of_window() {
        // The start this machine's `lo` allows (6,500 and 9,000 where its
        // MTU is the usual 65,536).
        let lo = crate::socket::loopback_payload();
        let start = |bound| format!("initial_mtu: {},", initial_mtu(bound, lo).unwrap_or(1200));
        let limits = Limits::default();
        let config = |peer: &str| format!("{:?}", limits.transport_config(peer.parse().unwrap()));
        for loopback in ["127.0.0.1", "::1"] {
            let config = config(loopback);
            assert!(config.contains(&start(6500)), "{config}");
        }
        let network = config("10.77.0.1");
        assert!(network.contains("initial_mtu: 1200,"), "{network}");
        let first_window = |limits: &Limits, peer: &str| {
            let peer = peer.parse().unwrap();
            let factory = limits.congestion_factory(peer);
            factory
                .build(std::time::Instant::now(), limits.mtu_towards(peer))
                .window()
        };
        assert_eq!(first_window(&limits, "127.0.0.1"), 65_000);
        assert_eq!(first_window(&limits, "::1"), 65_000);
        assert_eq!(first_window(&limits, "10.77.0.1"), 240_000);
        let cubic_network = Limits {
            congestion: Congestion::Cubic,
            ..Limits::default()
        };
        assert_eq!(first_window(&cubic_network, "10.77.0.1"), 12_000);
        let reno = Limits {
            loopback_congestion: Congestion::NewReno,
            loopback_mtu: 9000,
            ..Limits::default()
        };
        let config = format!("{:?}", reno.transport_config("::1".parse().unwrap()));
        assert!(config.contains(&start(9000)), "{config}");
        assert_eq!(first_window(&reno, "::1"), 90_000);
        // Beyond what a loopback datagram carries, the start is that much
        // (discovery may still probe up to the bound, and find it refused).
        let beyond = Limits {
            loopback_mtu: u16::MAX,
            ..Limits::default()
        };
        let config = format!(
            "{:?}",
            beyond.transport_config("127.0.0.1".parse().unwrap())
        );
        assert!(config.contains(&start(u16::MAX)), "{config}");
        assert_eq!(first_window(&beyond, "127.0.0.1"), 655_350);
    }

    #[test]
    fn a_loopback_connection_starts_at_what_both_its_bound_and_lo_allow() {
        assert_eq!(initial_mtu(6500, Some(65_487)), Some(6500));
        assert_eq!(initial_mtu(u16::MAX, Some(65_487)), Some(65_487));
        // `lo` at MTU 1,500: start at its 1,452, not at the bound.
        assert_eq!(initial_mtu(6500, Some(1452)), Some(1452));
        // Unknown, or no more than quinn's own start: discover as before.
        assert_eq!(initial_mtu(6500, None), None);
        assert_eq!(initial_mtu(6500, Some(1200)), None);
        assert_eq!(initial_mtu(1200, Some(65_487)), None);
    }

    #[test]
    fn timers_finer_than_a_millisecond_only_towards_the_network_and_where_they_fire_on_time() {
        let granularity = |limits: &Limits, peer: &str| {
            let config = format!("{:?}", limits.transport_config(peer.parse().unwrap()));
            let start = config.find("timer_granularity: ").unwrap() + "timer_granularity: ".len();
            config[start..].split(',').next().unwrap().to_owned()
        };
        assert_eq!(granularity(&Limits::default(), "10.77.0.1"), "100µs");
        assert_eq!(granularity(&Limits::default(), "127.0.0.1"), "1ms");
        let coarse = Limits {
            precise_timers: false,
            ..Limits::default()
        };
        assert_eq!(granularity(&coarse, "10.77.0.1"), "1ms");
    }
}
