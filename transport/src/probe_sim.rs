//! quinn's state machines for a client and a server on a simulated path
//! (a fixed one-way delay; any packet may be dropped) and a simulated
//! clock: how long a call's lost last packet waits for its probe under
//! quicall's transport configurations. No socket and no real time: the
//! clock jumps from one event to the next, so every figure is exact.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    ServerConfig, TransportConfig,
};

use crate::{ClientAuth, ClientTls, Limits, ServerTls};

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), 40000);
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), 4433);

/// One end: its endpoint and, once there is one, its connection.
struct End {
    endpoint: Endpoint,
    conn: Option<(ConnectionHandle, Connection)>,
}

/// A datagram on the path, delivered at `at`.
struct InFlight {
    at: Instant,
    to_server: bool,
    data: BytesMut,
}

struct Sim {
    now: Instant,
    one_way: Duration,
    client: End,
    server: End,
    path: Vec<InFlight>,
    /// The client's datagrams to drop, by their index among all it sends.
    drop_from_client: BTreeSet<usize>,
    /// When the client last sent a datagram (dropped or not).
    client_sent: Vec<Instant>,
}

impl Sim {
    /// A client and a server `rtt` apart, each configured from its side's
    /// transport configuration, handshake done and the path quiet.
    fn connected(client: Arc<TransportConfig>, server: Arc<TransportConfig>, rtt: Duration) -> Sim {
        Self::connected_losing(client, server, rtt, &[])
    }

    /// Like [`Sim::connected`], the client's datagrams at these indices
    /// lost on the way.
    fn connected_losing(
        client: Arc<TransportConfig>,
        server: Arc<TransportConfig>,
        rtt: Duration,
        lost: &[usize],
    ) -> Sim {
        let ca =
            quicall_certs::CertificateAuthority::new("sim CA", Duration::from_secs(3600)).unwrap();
        let node = ca
            .issue(&quicall_certs::NodeSpec::server("server").san("localhost"))
            .unwrap();
        let roots = vec![ca.cert_der().clone()];
        let server_crypto = ServerTls::new(node.chain(), node.key_der(), ClientAuth::None)
            .quic_config()
            .unwrap();
        let mut server_config = ServerConfig::with_crypto(server_crypto);
        server_config.transport_config(server);
        let mut client_config = ClientConfig::new(ClientTls::new(roots).quic_config().unwrap());
        client_config.transport_config(client);
        let endpoint_config = Arc::new(EndpointConfig::default());
        let now = Instant::now();
        let mut sim = Sim {
            now,
            one_way: rtt / 2,
            client: End {
                endpoint: Endpoint::new(endpoint_config.clone(), None, false, Some([1; 32])),
                conn: None,
            },
            server: End {
                endpoint: Endpoint::new(
                    endpoint_config,
                    Some(Arc::new(server_config)),
                    false,
                    Some([2; 32]),
                ),
                conn: None,
            },
            path: Vec::new(),
            drop_from_client: BTreeSet::new(),
            client_sent: Vec::new(),
        };
        sim.drop_from_client.extend(lost);
        let conn = sim
            .client
            .endpoint
            .connect(now, client_config, SERVER, "localhost")
            .unwrap();
        sim.client.conn = Some(conn);
        // The handshake (a lost Initial is sent again after about three
        // initial RTTs), then the ACK_FREQUENCY frames, their
        // acknowledgements and any recovery of what was lost.
        for _ in 0..50 {
            sim.run_for(Duration::from_millis(100));
            if !Self::conn(&mut sim.client).is_handshaking() {
                break;
            }
        }
        sim.run_for(Duration::from_millis(100));
        let client = Self::conn(&mut sim.client);
        assert!(!client.is_handshaking() && !client.is_closed());
        sim
    }

    fn conn(end: &mut End) -> &mut Connection {
        &mut end.conn.as_mut().expect("a connection").1
    }

    /// Sends what both ends have to send, handing endpoint events over.
    fn flush(&mut self) {
        let mut buf = Vec::new();
        for to_server in [true, false] {
            let (from, now) = if to_server {
                (&mut self.client, self.now)
            } else {
                (&mut self.server, self.now)
            };
            let Some((ch, conn)) = from.conn.as_mut() else {
                continue;
            };
            while let Some(event) = conn.poll_endpoint_events() {
                if let Some(event) = from.endpoint.handle_event(*ch, event) {
                    conn.handle_event(event);
                }
            }
            while conn.poll().is_some() {}
            loop {
                buf.clear();
                let Some(transmit) = conn.poll_transmit(now, 1, &mut buf) else {
                    break;
                };
                let data = BytesMut::from(&buf[..transmit.size]);
                if to_server {
                    self.client_sent.push(now);
                    if self
                        .drop_from_client
                        .contains(&(self.client_sent.len() - 1))
                    {
                        continue;
                    }
                }
                self.path.push(InFlight {
                    at: now + self.one_way,
                    to_server,
                    data,
                });
            }
        }
    }

    /// Delivers one datagram to its end.
    fn deliver(&mut self, packet: InFlight) {
        let (to, remote) = if packet.to_server {
            (&mut self.server, CLIENT)
        } else {
            (&mut self.client, SERVER)
        };
        let mut buf = Vec::new();
        let event = to
            .endpoint
            .handle(self.now, remote, None, None, packet.data, &mut buf);
        match event {
            Some(DatagramEvent::ConnectionEvent(_, event)) => Self::conn(to).handle_event(event),
            Some(DatagramEvent::NewConnection(incoming)) => {
                let accepted = to.endpoint.accept(incoming, self.now, &mut buf, None);
                to.conn = Some(accepted.map_err(|e| e.cause).unwrap());
            }
            Some(DatagramEvent::Response(transmit)) => {
                self.path.push(InFlight {
                    at: self.now + self.one_way,
                    to_server: !packet.to_server,
                    data: BytesMut::from(&buf[..transmit.size]),
                });
            }
            None => {}
        }
    }

    /// Runs every event (arrivals and both ends' timers) for `span` of
    /// simulated time.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.flush();
            let timers = [&mut self.client, &mut self.server]
                .into_iter()
                .filter_map(|end| end.conn.as_mut()?.1.poll_timeout());
            let arrival = self.path.iter().map(|p| p.at).min();
            let Some(next) = timers.chain(arrival).min() else {
                self.now = end;
                return;
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            let (due, later) = std::mem::take(&mut self.path)
                .into_iter()
                .partition(|p| p.at <= self.now);
            self.path = later;
            for packet in due {
                self.deliver(packet);
            }
            for end in [&mut self.client, &mut self.server] {
                if let Some((_, conn)) = end.conn.as_mut()
                    && conn.poll_timeout().is_some_and(|t| t <= self.now)
                {
                    conn.handle_timeout(self.now);
                }
            }
        }
    }

    /// Starts a call whose only packet (a 64-byte request) is lost, and
    /// returns how long after it the client sent its next packet: the probe.
    fn lost_request_probed_after(&mut self) -> Duration {
        let client = Self::conn(&mut self.client);
        let stream = client.streams().open(Dir::Bi).unwrap();
        client.send_stream(stream).write(&[7; 64]).unwrap();
        client.send_stream(stream).finish().unwrap();
        let sent = self.client_sent.len();
        self.drop_from_client.insert(sent);
        let start = self.now;
        self.run_for(Duration::from_secs(1));
        let probe = self
            .client_sent
            .get(sent + 1)
            .expect("the client probed for its lost request");
        *probe - start
    }
}

/// quicall's configuration of each side towards a network peer.
fn network(limits: &Limits) -> (Arc<TransportConfig>, Arc<TransportConfig>) {
    let peer = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));
    (
        limits.client_transport_config(peer),
        limits.transport_config(peer),
    )
}

const RTT: Duration = Duration::from_micros(100);

#[test]
fn a_lost_request_on_a_fast_path_is_probed_within_half_a_millisecond() {
    let (client, server) = network(&Limits::default());
    let mut sim = Sim::connected(client, server, RTT);
    let probe = sim.lost_request_probed_after();
    // smoothed RTT + max(4 x RTT variation, 100 us) + the peer's 250 us.
    assert!(probe >= RTT + Duration::from_micros(350), "{probe:?}");
    assert!(probe < Duration::from_micros(600), "{probe:?}");
}

#[test]
fn rfc_9002s_granularity_and_a_1_ms_ack_delay_probe_after_2_ms() {
    let limits = Limits {
        timer_granularity: Duration::from_millis(1),
        max_ack_delay: Some(Duration::from_millis(1)),
        ..Limits::default()
    };
    let (client, server) = network(&limits);
    let mut sim = Sim::connected(client, server, RTT);
    let probe = sim.lost_request_probed_after();
    assert!(probe >= RTT + Duration::from_millis(2), "{probe:?}");
    assert!(probe < Duration::from_micros(2300), "{probe:?}");
}

#[test]
fn a_peer_on_quinns_own_granularity_is_asked_for_no_less_than_its_1_ms() {
    // A server on stock quinn advertises min_ack_delay 1 ms: the client's
    // 250 us request is raised to it, and the probe waits that long.
    let (client, _) = network(&Limits::default());
    let mut sim = Sim::connected(client, Arc::new(TransportConfig::default()), RTT);
    let probe = sim.lost_request_probed_after();
    assert!(probe >= RTT + Duration::from_micros(1100), "{probe:?}");
    assert!(probe < Duration::from_micros(1500), "{probe:?}");
}

#[test]
fn whichever_packet_of_the_connections_start_is_lost_the_short_ack_delay_is_asked_for() {
    // The client asks for its 250 us in an ACK_FREQUENCY frame early in the
    // connection; if the packet that carries it is lost, the frame must be
    // sent again, or every later probe waits for the peer's 25 ms.
    let (client, server) = network(&Limits::default());
    for lost in 0..12 {
        let mut sim = Sim::connected_losing(client.clone(), server.clone(), RTT, &[lost]);
        let probe = sim.lost_request_probed_after();
        assert!(
            probe < Duration::from_micros(600),
            "client datagram {lost} lost: the probe waited {probe:?}"
        );
    }
}

#[test]
fn a_lost_first_handshake_packet_is_sent_again_after_three_initial_rtts() {
    // Before any round trip is measured the probe timeout is the initial
    // RTT plus twice it (its variation): 30 ms with quicall's 10 ms, about
    // 1 s with RFC 9002's 333 ms, the wait of a first call that lost it.
    let resent_after = |limits: &Limits| {
        let (client, server) = network(limits);
        let sim = Sim::connected_losing(client, server, RTT, &[0]);
        sim.client_sent[1] - sim.client_sent[0]
    };
    let quick = resent_after(&Limits::default());
    assert!(quick >= Duration::from_millis(30), "{quick:?}");
    assert!(quick < Duration::from_millis(31), "{quick:?}");
    let rfc = resent_after(&Limits {
        initial_rtt: Duration::from_millis(333),
        ..Limits::default()
    });
    assert!(rfc >= Duration::from_millis(999), "{rfc:?}");
    assert!(rfc < Duration::from_millis(1000), "{rfc:?}");
}
