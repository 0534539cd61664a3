//! The attacks of the soak, each bounded in count and time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quicall::certs::{read_certs, read_key};
use quicall::demo::{ADD, EACH, ECHO, SUM};
use quicall::transport::quinn::VarInt;
use quicall::transport::{CertificateDer, ClientEndpoint, ClientTls, Connection, Limits};
use quicall::wire::{REQUEST_HEADER_LEN, RequestHead, message_header};

/// The attacks, by name.
pub const KINDS: [&str; 19] = [
    "random bytes",
    "4 GiB header",
    "half header, then reset",
    "body shorter than said",
    "body longer than said",
    "unknown method",
    "rapid reset (200 streams)",
    "slow loris (32 streams)",
    "random datagrams (100)",
    "no client certificate",
    "connection flood (20)",
    "slow bodies (64 streams)",
    "slow readers (64 calls)",
    "connection hoarding (80)",
    "forged chain (12 fake CAs)",
    "half-open handshakes (100)",
    "hostile rkyv bodies (50)",
    "hostile metadata (50)",
    "hostile request streams (50)",
];

pub struct Attacker {
    servers: Vec<SocketAddr>,
    valid: ClientEndpoint,
    /// The same identity, with a 4 KiB stream window: a slow reader.
    reader: ClientEndpoint,
    anonymous: ClientEndpoint,
    /// A leaf signed by a fake CA carrying the real CA's name, followed by
    /// twelve such fakes: path-building amplification.
    forged: ClientEndpoint,
    /// Without certificate, on 127.0.0.2, hearing only Retry packets: its
    /// handshakes stay half open (none where 127.0.0.2 cannot be bound).
    deaf: Option<ClientEndpoint>,
    conns: Mutex<Vec<Option<Connection>>>,
    counts: [AtomicU64; KINDS.len()],
}

const LIMIT: Duration = Duration::from_secs(3);

impl Attacker {
    pub fn new(
        dir: &Path,
        ca: Vec<CertificateDer<'static>>,
        servers: Vec<SocketAddr>,
    ) -> anyhow::Result<Self> {
        // A valid certificate of its own: the attacker is an insider.
        let insider = super::super::demo::INSIDER;
        let chain = read_certs(&dir.join(format!("{insider}.crt")))?;
        let key = read_key(&dir.join(format!("{insider}.key")))?;
        let tls = || ClientTls::new(ca.clone()).with_identity(chain.clone(), key.clone_key());
        let small_window = Limits {
            stream_receive_window: 4 << 10,
            loopback_stream_receive_window: 4 << 10,
            ..Limits::default()
        };
        Ok(Self {
            conns: Mutex::new(vec![None; servers.len()]),
            servers,
            valid: ClientEndpoint::new(tls(), Limits::default())?,
            reader: ClientEndpoint::new(tls(), small_window)?,
            forged: forged_chain(ca.clone())?,
            deaf: deaf_endpoint(ca.clone()),
            anonymous: ClientEndpoint::new(ClientTls::new(ca), Limits::default())?,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }

    pub fn close(&self) {
        self.valid.close(0, b"soak over");
        self.reader.close(0, b"soak over");
        self.anonymous.close(0, b"soak over");
        self.forged.close(0, b"soak over");
        if let Some(deaf) = &self.deaf {
            deaf.close(0, b"soak over");
        }
    }

    /// An open connection to server `i`, reopened when it closed.
    async fn conn(&self, i: usize) -> Option<Connection> {
        let existing = self.conns.lock().unwrap_or_else(|e| e.into_inner())[i].clone();
        if let Some(conn) = existing.filter(|c| c.close_reason().is_none()) {
            return Some(conn);
        }
        let conn = tokio::time::timeout(LIMIT, self.valid.connect(self.servers[i], "localhost"))
            .await
            .ok()?
            .ok()?;
        self.conns.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(conn.clone());
        Some(conn)
    }

    pub async fn one_attack(&self) {
        let kind = fastrand::usize(..KINDS.len());
        let server = fastrand::usize(..self.servers.len());
        self.counts[kind].fetch_add(1, Ordering::Relaxed);
        let addr = self.servers[server];
        match kind {
            0..=5 => {
                if let Some(conn) = self.conn(server).await {
                    malformed(&conn, kind).await;
                }
            }
            6 => {
                if let Some(conn) = self.conn(server).await {
                    for _ in 0..200 {
                        let Ok(Ok((mut send, _recv))) =
                            tokio::time::timeout(LIMIT, conn.open_bi()).await
                        else {
                            break;
                        };
                        let _ = send.write_all(&header(ADD.id(), 16)[..4]).await;
                        let _ = send.reset(VarInt::from_u32(0));
                    }
                }
            }
            7 => {
                if let Some(conn) = self.conn(server).await {
                    let mut held = Vec::new();
                    for _ in 0..32 {
                        let Ok(Ok((mut send, recv))) =
                            tokio::time::timeout(LIMIT, conn.open_bi()).await
                        else {
                            break;
                        };
                        let _ = send.write_all(&[1, 0]).await;
                        held.push((send, recv));
                    }
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
            }
            8 => {
                if let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await {
                    for _ in 0..100 {
                        let len = fastrand::usize(1..1400);
                        let mut datagram: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
                        datagram[0] |= 0xc0;
                        let _ = socket.send_to(&datagram, addr).await;
                    }
                }
            }
            9 => {
                if let Ok(Ok(conn)) =
                    tokio::time::timeout(LIMIT, self.anonymous.connect(addr, "localhost")).await
                {
                    // The server refuses the handshake; the stream fails.
                    malformed(&conn, 5).await;
                    conn.close(0, b"");
                }
            }
            11 => {
                if let Some(conn) = self.conn(server).await {
                    slow_bodies(&conn).await;
                }
            }
            12 => {
                if let Ok(Ok(conn)) =
                    tokio::time::timeout(LIMIT, self.reader.connect(addr, "localhost")).await
                {
                    slow_readers(&conn).await;
                    conn.close(0, b"");
                }
            }
            13 => {
                let mut hoard = Vec::new();
                for _ in 0..80 {
                    if let Ok(Ok(conn)) =
                        tokio::time::timeout(LIMIT, self.valid.connect(addr, "localhost")).await
                    {
                        hoard.push(conn);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                for conn in hoard {
                    conn.close(0, b"");
                }
            }
            14 => {
                if let Ok(Ok(conn)) =
                    tokio::time::timeout(LIMIT, self.forged.connect(addr, "localhost")).await
                {
                    // Refused before path building; the stream fails.
                    malformed(&conn, 5).await;
                    conn.close(0, b"");
                }
            }
            16 => {
                if let Some(conn) = self.conn(server).await {
                    hostile_archives(&conn).await;
                }
            }
            17 => {
                if let Some(conn) = self.conn(server).await {
                    hostile_metadata(&conn).await;
                }
            }
            18 => {
                if let Some(conn) = self.conn(server).await {
                    hostile_request_streams(&conn).await;
                }
            }
            15 => {
                if let Some(deaf) = &self.deaf {
                    let mut attempts = tokio::task::JoinSet::new();
                    for _ in 0..100 {
                        let deaf = deaf.clone();
                        attempts.spawn(async move {
                            let _ =
                                tokio::time::timeout(LIMIT, deaf.connect(addr, "localhost")).await;
                        });
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    while attempts.join_next().await.is_some() {}
                }
            }
            _ => {
                let mut flood = Vec::new();
                for _ in 0..20 {
                    if let Ok(Ok(conn)) =
                        tokio::time::timeout(LIMIT, self.valid.connect(addr, "localhost")).await
                    {
                        flood.push(conn);
                    }
                }
                for conn in flood {
                    conn.close(0, b"");
                }
            }
        }
    }
}

/// An anonymous endpoint on 127.0.0.2 whose handshakes never finish.
fn deaf_endpoint(ca: Vec<CertificateDer<'static>>) -> Option<ClientEndpoint> {
    use quicall::transport::quinn::Runtime;
    let socket = std::net::UdpSocket::bind("127.0.0.2:0").ok()?;
    let socket = quicall::transport::quinn::TokioRuntime
        .wrap_udp_socket(socket)
        .ok()?;
    let limits = Limits {
        handshake_timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    ClientEndpoint::with_socket(
        ClientTls::new(ca),
        limits,
        std::sync::Arc::new(super::deaf::Deaf(socket)),
    )
    .ok()
}

/// An endpoint presenting a leaf signed by a fake of the demo CA (same
/// name, which is public) and twelve such fakes.
fn forged_chain(ca: Vec<CertificateDer<'static>>) -> anyhow::Result<ClientEndpoint> {
    use quicall::certs::{CertificateAuthority, NodeSpec};
    let day = Duration::from_secs(86_400);
    let fakes = (0..12)
        .map(|_| CertificateAuthority::new(super::super::demo::CA_NAME, day))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = fakes[0].issue(&NodeSpec::client("forger"))?;
    let mut chain = leaf.chain();
    chain.extend(fakes.iter().map(|f| f.cert_der().clone()));
    let tls = ClientTls::new(ca).with_identity(chain, leaf.key_der());
    Ok(ClientEndpoint::new(tls, Limits::default())?)
}

fn header(method_id: u64, body_len: u32) -> [u8; REQUEST_HEADER_LEN] {
    RequestHead {
        method_id,
        body_len,
        deadline: None,
        metadata_len: None,
        stream: false,
    }
    .encode()
}

/// 64 echo calls announcing 4 MiB bodies, trickled a byte every 100 ms for
/// 1.5 s, then abandoned.
async fn slow_bodies(conn: &Connection) {
    let mut held = Vec::new();
    for _ in 0..64 {
        let Ok(Ok((mut send, recv))) = tokio::time::timeout(LIMIT, conn.open_bi()).await else {
            break;
        };
        let head = RequestHead {
            method_id: ECHO.id(),
            body_len: 4 << 20,
            // The longest deadline the server grants.
            deadline: Some(Duration::from_secs(300)),
            metadata_len: None,
            stream: false,
        };
        let _ = send.write_all(&head.encode()).await;
        held.push((send, recv));
    }
    for _ in 0..15 {
        for (send, _) in &mut held {
            let _ = send.write_all(&[0]).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 64 echo calls of 32 KiB whose responses are never read (through a 4 KiB
/// stream window), held for 1.5 s.
async fn slow_readers(conn: &Connection) {
    let mut held = Vec::new();
    for _ in 0..64 {
        let Ok(Ok((mut send, recv))) = tokio::time::timeout(LIMIT, conn.open_bi()).await else {
            break;
        };
        let _ = send.write_all(&header(ECHO.id(), 32 << 10)).await;
        let _ = send.write_all(&[7u8; 32 << 10]).await;
        let _ = send.finish();
        held.push(recv);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Fifty calls of `calc.Calc/Sum` whose bodies are random bytes, a valid
/// archive with bytes flipped, or one with a lying root size; reads what
/// comes back (INVALID_ARGUMENT, or a sum for a corruption that is still
/// a valid archive).
async fn hostile_archives(conn: &Connection) {
    let Ok(good) = quicall::rpc::encode::<quicall::Rkyv<Vec<i64>>>((0..64).collect::<Vec<i64>>())
    else {
        return;
    };
    for _ in 0..50 {
        let body: Vec<u8> = match fastrand::u8(..3) {
            0 => (0..fastrand::usize(..600))
                .map(|_| fastrand::u8(..))
                .collect(),
            1 => {
                let mut body = good.to_vec();
                for _ in 0..fastrand::usize(1..4) {
                    let at = fastrand::usize(..body.len());
                    body[at] ^= fastrand::u8(1..);
                }
                body
            }
            _ => {
                let mut body = good.to_vec();
                let end = body.len();
                body[end - 4..].copy_from_slice(&fastrand::u32(..).to_le_bytes());
                body
            }
        };
        let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(LIMIT, conn.open_bi()).await else {
            return;
        };
        let request = [&header(SUM.id(), body.len() as u32)[..], &body[..]].concat();
        let _ = send.write_all(&request).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(LIMIT, recv.read_to_end(1 << 16)).await;
    }
}

/// Fifty echo calls whose metadata blocks are random bytes, lie about
/// their length (more announced than sent), repeat a key, or announce
/// 60,000 bytes; reads what comes back.
async fn hostile_metadata(conn: &Connection) {
    for _ in 0..50 {
        let (block, announced): (Vec<u8>, u16) = match fastrand::u8(..4) {
            0 => {
                let block: Vec<u8> = (0..fastrand::usize(..300))
                    .map(|_| fastrand::u8(..))
                    .collect();
                let len = block.len() as u16;
                (block, len)
            }
            1 => (vec![1, 4, 0, b'k'], fastrand::u16(5..2000)),
            2 => (vec![1, 1, 0, b'k', 1, 1, 1, 0, b'k', 2], 10),
            _ => (Vec::new(), 60_000),
        };
        let head = RequestHead {
            method_id: ECHO.id(),
            body_len: 2,
            deadline: None,
            metadata_len: Some(announced),
            stream: false,
        };
        let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(LIMIT, conn.open_bi()).await else {
            return;
        };
        let request = [&head.encode()[..], &block[..], b"hi"].concat();
        let _ = send.write_all(&request).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(LIMIT, recv.read_to_end(1 << 16)).await;
    }
}

/// 50 bidirectional calls of the demo's `demo.Echo/Each` whose request
/// streams go wrong after a few good messages: a length that lies (more
/// announced than sent), garbage between messages, a length of 4 GiB, a
/// reset in the middle of a message, or a caller that sends a flood and
/// never reads; reads what comes back (for a while).
async fn hostile_request_streams(conn: &Connection) {
    for _ in 0..50 {
        let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(LIMIT, conn.open_bi()).await else {
            return;
        };
        let head = RequestHead {
            method_id: EACH.id(),
            body_len: 0,
            deadline: None,
            metadata_len: None,
            stream: true,
        };
        let mut bytes = head.encode().to_vec();
        for _ in 0..fastrand::usize(..5) {
            let body: Vec<u8> = (0..fastrand::usize(..64))
                .map(|_| fastrand::u8(..))
                .collect();
            bytes.extend(message_header(body.len() as u32));
            bytes.extend(body);
        }
        let kind = fastrand::u8(..5);
        match kind {
            0 => {
                bytes.extend(message_header(fastrand::u32(100..1 << 20)));
                bytes.extend([7u8; 50]);
            }
            1 => bytes.extend((0..fastrand::usize(1..40)).map(|_| fastrand::u8(..))),
            2 => bytes.extend(message_header(u32::MAX)),
            3 => {
                bytes.extend(message_header(1000));
                bytes.extend([7u8; 10]);
            }
            _ => {
                // Echoes pile up unread: the server stops reading once its
                // window to this caller is full.
                for _ in 0..500 {
                    bytes.extend(message_header(1000));
                    bytes.extend([7u8; 1000]);
                }
            }
        }
        let write = tokio::time::timeout(LIMIT, send.write_all(&bytes));
        if kind == 3 {
            let _ = write.await;
            let _ = send.reset(VarInt::from_u32(1));
        } else if kind == 4 {
            // Abandoned once the writes stall (or after the limit).
            let _ = write.await;
            continue;
        } else {
            let _ = write.await;
            let _ = send.finish();
        }
        let _ = tokio::time::timeout(LIMIT, recv.read_to_end(1 << 20)).await;
    }
}

/// One malformed request of kind 0 to 5 (see [`KINDS`]); reads what comes back.
async fn malformed(conn: &Connection, kind: usize) {
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(LIMIT, conn.open_bi()).await else {
        return;
    };
    let bytes: Vec<u8> = match kind {
        0 => (0..fastrand::usize(1..300))
            .map(|_| fastrand::u8(..))
            .collect(),
        1 => header(ADD.id(), u32::MAX).to_vec(),
        2 => header(ADD.id(), 16)[..12].to_vec(),
        3 => [&header(ADD.id(), 16)[..], &[1, 2, 3]].concat(),
        4 => [&header(ADD.id(), 16)[..], &[7u8; 4000][..]].concat(),
        _ => header(0x0bad_cafe, 0).to_vec(),
    };
    let _ = send.write_all(&bytes).await;
    if kind == 2 {
        let _ = send.reset(VarInt::from_u32(1));
    } else {
        let _ = send.finish();
    }
    let _ = tokio::time::timeout(LIMIT, recv.read_to_end(1 << 16)).await;
}
