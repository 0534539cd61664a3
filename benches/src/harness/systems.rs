//! The systems under test, each an echo server and a client of it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use quicall::certs::{CertificateAuthority, NodeSpec};
use quicall::demo::{ECHO, ECHO_CHUNKS};

/// Payloads from this size up are echoed as `Chunks`.
const CHUNKED_FROM: usize = 64 << 10;
use quicall::transport::{ClientEndpoint, Connection, ServerEndpoint};
use quicall::{
    Client, ClientAuth, ClientOptions, ClientTls, Limits, Server, ServerOptions, ServerTls,
};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// quicall: `demo.Echo/Echo` with mutual TLS and default settings.
    Quicall,
    /// Raw quinn: one bidirectional stream per call, write the payload,
    /// finish, read to the end; the same TLS and transport settings.
    Quinn,
    /// tonic gRPC, unary, over HTTP/2 on TCP with mutual TLS (rustls).
    Grpc,
    /// tonic gRPC, unary, over HTTP/2 on TCP without TLS.
    GrpcPlain,
    /// tarpc, over TCP with bincode, without TLS (as its examples run it).
    Tarpc,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Quicall => "quicall",
            System::Quinn => "raw-quinn",
            System::Grpc => "grpc-tls",
            System::GrpcPlain => "grpc-plain",
            System::Tarpc => "tarpc",
        }
    }

    pub fn all() -> [System; 5] {
        [
            System::Quicall,
            System::Quinn,
            System::Grpc,
            System::GrpcPlain,
            System::Tarpc,
        ]
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        System::all()
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!("unknown system {s:?}: quicall, raw-quinn, grpc-tls, grpc-plain, tarpc")
            })
    }
}

/// Certificates shared by every system of a run.
pub struct Pki {
    ca: CertificateAuthority,
    server: quicall::certs::NodeCert,
    client: quicall::certs::NodeCert,
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let ca = CertificateAuthority::new("bench CA", quicall::certs::DEFAULT_VALIDITY)?;
        let server = ca.issue(&NodeSpec::server("bench-server").san("localhost"))?;
        let client = ca.issue(&NodeSpec::client("bench-client"))?;
        Ok(Self { ca, server, client })
    }

    /// Server TLS requiring client certificates from this CA.
    pub fn server_tls(&self) -> ServerTls {
        ServerTls::new(
            self.server.chain(),
            self.server.key_der(),
            ClientAuth::Required(vec![self.ca.cert_der().clone()]),
        )
    }

    pub fn grpc_tls(&self) -> super::grpc::GrpcTls {
        super::grpc::GrpcTls {
            ca: self.ca.cert_pem().to_owned(),
            server_cert: self.server.cert_pem().to_owned(),
            server_key: self.server.key_pem(),
            client_cert: self.client.cert_pem().to_owned(),
            client_key: self.client.key_pem(),
        }
    }

    /// Client TLS trusting this CA, with the client certificate.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::new(vec![self.ca.cert_der().clone()])
            .with_identity(self.client.chain(), self.client.key_der())
    }
}

/// A running echo server and a client of it.
pub enum Echo {
    Quicall {
        _server: Option<Server>,
        client: Client,
    },
    Quinn {
        _server: tokio::task::JoinHandle<()>,
        conn: Connection,
        _endpoint: ClientEndpoint,
    },
    Grpc {
        server: tokio::task::JoinHandle<()>,
        addr: SocketAddr,
        /// Whether the server wants mutual TLS (`grpc-tls`).
        tls: bool,
        client: super::grpc::GrpcClient,
    },
    Tarpc {
        server: tokio::task::JoinHandle<()>,
        addr: SocketAddr,
        client: super::tarpc_echo::TarpcClient,
    },
}

impl Drop for Echo {
    fn drop(&mut self) {
        match self {
            Echo::Quinn { _server, .. } => _server.abort(),
            Echo::Grpc { server, .. } | Echo::Tarpc { server, .. } => server.abort(),
            Echo::Quicall { .. } => {}
        }
    }
}

impl Echo {
    /// Starts `system`'s server on loopback and connects a client, both on
    /// the current runtime.
    pub async fn start(system: System, pki: &Pki, limits: &Limits) -> anyhow::Result<Echo> {
        Self::start_with(
            system,
            pki,
            limits,
            Arc::new(quicall::demo::Knobs::default()),
            None,
        )
        .await
    }

    /// Like [`Echo::start`]; a quicall server spends `knobs`' service time
    /// on every call (to test the harness against a known delay), and with
    /// `server_runtime` the server runs there (its endpoint, connections and
    /// handlers), as it would in a process of its own.
    pub async fn start_with(
        system: System,
        pki: &Pki,
        limits: &Limits,
        knobs: Arc<quicall::demo::Knobs>,
        server_runtime: Option<&tokio::runtime::Handle>,
    ) -> anyhow::Result<Echo> {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        Self::start_at(system, pki, limits, knobs, (server_runtime, loopback)).await
    }

    /// Like [`Echo::start_with`], the server bound to `server_ip` (a
    /// network lab's host, whose namespace the server runtime's threads
    /// are in; the client then calls from the namespace of the thread that
    /// runs this).
    pub async fn start_at(
        system: System,
        pki: &Pki,
        limits: &Limits,
        knobs: Arc<quicall::demo::Knobs>,
        (server_runtime, server_ip): (Option<&tokio::runtime::Handle>, IpAddr),
    ) -> anyhow::Result<Echo> {
        let spec = ServerSpec {
            system,
            ip: server_ip,
            tls: pki.server_tls(),
            grpc_tls: (system == System::Grpc).then(|| pki.grpc_tls()),
            limits: limits.clone(),
            knobs,
        };
        let server = match server_runtime {
            Some(runtime) => runtime.spawn(spec.start()).await??,
            None => spec.start().await?,
        };
        match server {
            ServerSide::Quicall(server) => {
                let client = Client::connect(
                    server.local_addr(),
                    "localhost",
                    pki.client_tls(),
                    client_options(limits),
                )
                .await
                .context("connecting to the quicall server")?;
                Ok(Echo::Quicall {
                    _server: Some(server),
                    client,
                })
            }
            ServerSide::Quinn(server, addr) => {
                let client = ClientEndpoint::new(pki.client_tls(), limits.clone())?;
                let conn = client.connect(addr, "localhost").await?;
                Ok(Echo::Quinn {
                    _server: server,
                    conn,
                    _endpoint: client,
                })
            }
            ServerSide::Grpc(server, addr) => {
                let tls = (system == System::Grpc).then(|| pki.grpc_tls());
                let client = super::grpc::GrpcClient::connect(addr, tls.as_ref())
                    .await
                    .context("connecting to the gRPC server")?;
                Ok(Echo::Grpc {
                    server,
                    addr,
                    tls: tls.is_some(),
                    client,
                })
            }
            ServerSide::Tarpc(server, addr) => {
                let client = super::tarpc_echo::TarpcClient::connect(addr)
                    .await
                    .context("connecting to the tarpc server")?;
                Ok(Echo::Tarpc {
                    server,
                    addr,
                    client,
                })
            }
        }
    }

    /// A quicall client of a server in another process (`quicall serve`),
    /// for measuring across processes or hosts.
    pub async fn connect_quicall(
        addr: SocketAddr,
        server_name: &str,
        tls: ClientTls,
        limits: &Limits,
    ) -> anyhow::Result<Echo> {
        let client = Client::connect(addr, server_name, tls, client_options(limits))
            .await
            .with_context(|| format!("connecting to {addr} as {server_name}"))?;
        Ok(Echo::Quicall {
            _server: None,
            client,
        })
    }

    /// Packets the client's QUIC connection declared lost so far (QUIC
    /// systems only).
    pub fn lost_packets(&self) -> Option<u64> {
        match self {
            Echo::Quicall { client, .. } => {
                Some(client.connection().quinn().stats().path.lost_packets)
            }
            Echo::Quinn { conn, .. } => Some(conn.quinn().stats().path.lost_packets),
            Echo::Grpc { .. } | Echo::Tarpc { .. } => None,
        }
    }

    /// A new connection to this echo's server (its own handshake: QUIC's,
    /// or TCP's and TLS's) and one call on it: the time from the start of
    /// the connection to the answer, as a caller meets a server it has not
    /// called before (a new host, a restarted one). The QUIC systems connect
    /// from `endpoint`, as a process's clients share theirs (a new endpoint
    /// costs quinn's receive buffers, megabytes zeroed, once per process);
    /// gRPC and tarpc open a new TCP connection. The connection is dropped
    /// after the answer.
    pub async fn first_call(
        &self,
        endpoint: &ClientEndpoint,
        pki: &Pki,
        limits: &Limits,
        payload: &Bytes,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let len = match self {
            Echo::Quicall { client, .. } => {
                let addr = client.connection().remote_address();
                let conn = endpoint.connect(addr, "localhost").await?;
                let echo = Echo::Quicall {
                    _server: None,
                    client: Client::from_connection(conn, client_options(limits)),
                };
                echo.call(payload).await?
            }
            Echo::Quinn { conn, .. } => {
                let conn = endpoint.connect(conn.remote_address(), "localhost").await?;
                quinn_echo(&conn, payload).await?
            }
            Echo::Grpc { addr, tls, .. } => {
                let tls = tls.then(|| pki.grpc_tls());
                let client = super::grpc::GrpcClient::connect(*addr, tls.as_ref()).await?;
                client.echo(payload.clone()).await?
            }
            Echo::Tarpc { addr, .. } => {
                let client = super::tarpc_echo::TarpcClient::connect(*addr).await?;
                client.echo(payload).await?
            }
        };
        anyhow::ensure!(
            len == payload.len(),
            "echoed {len} of {} bytes",
            payload.len()
        );
        Ok(start.elapsed())
    }

    /// One echo call; the length of the answer.
    pub async fn call(&self, payload: &Bytes) -> anyhow::Result<usize> {
        match self {
            // Large bodies as raw bytes kept in the chunks they arrive in
            // (as a service moving blobs would declare them: no gathering
            // copy); small ones as one buffer (`[u8]`, what most callers
            // read; `Chunks` costs a 64 B call about 6% here, not yet
            // understood). The same method on the wire.
            Echo::Quicall { client, .. } if payload.len() >= CHUNKED_FROM => {
                Ok(client.call(&ECHO_CHUNKS, payload.clone()).await?.len())
            }
            Echo::Quicall { client, .. } => Ok(client.call(&ECHO, payload.clone()).await?.len()),
            Echo::Quinn { conn, .. } => quinn_echo(conn, payload).await,
            Echo::Grpc { client, .. } => client.echo(payload.clone()).await,
            Echo::Tarpc { client, .. } => client.echo(payload).await,
        }
    }
}

/// A quicall client's options in the benchmarks: `limits`, and responses
/// up to 64 MiB.
fn client_options(limits: &Limits) -> ClientOptions {
    ClientOptions {
        transport: limits.clone(),
        max_response_size: 64 << 20,
        ..ClientOptions::default()
    }
}

/// One raw-quinn echo on `conn`: a stream of its own, the payload written
/// and finished, the answer read to its end; the answer's length.
async fn quinn_echo(conn: &Connection, payload: &Bytes) -> anyhow::Result<usize> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_chunk(payload.clone()).await?;
    send.finish()?;
    Ok(recv.read_to_end(64 << 20).await?.len())
}

/// What a system's server needs, owned, so that it can start on another
/// runtime.
struct ServerSpec {
    system: System,
    /// The address to bind.
    ip: IpAddr,
    tls: ServerTls,
    grpc_tls: Option<super::grpc::GrpcTls>,
    limits: Limits,
    knobs: Arc<quicall::demo::Knobs>,
}

/// A running server.
enum ServerSide {
    Quicall(Server),
    Quinn(tokio::task::JoinHandle<()>, SocketAddr),
    Grpc(tokio::task::JoinHandle<()>, SocketAddr),
    Tarpc(tokio::task::JoinHandle<()>, SocketAddr),
}

impl ServerSpec {
    /// Starts the server on the current runtime.
    async fn start(self) -> anyhow::Result<ServerSide> {
        let addr = SocketAddr::new(self.ip, 0);
        match self.system {
            System::Quicall => {
                let options = ServerOptions {
                    transport: self.limits,
                    max_request_size: 64 << 20,
                    max_response_size: 64 << 20,
                    ..ServerOptions::default()
                };
                let router = quicall::demo::router_with(self.knobs);
                Ok(ServerSide::Quicall(Server::bind(
                    addr, self.tls, router, options,
                )?))
            }
            System::Quinn => {
                let endpoint = ServerEndpoint::bind(addr, self.tls, self.limits)?;
                let addr = endpoint.local_addr()?;
                Ok(ServerSide::Quinn(
                    tokio::spawn(raw_echo_server(endpoint)),
                    addr,
                ))
            }
            System::Grpc | System::GrpcPlain => {
                let (addr, task) = super::grpc::serve(self.grpc_tls.as_ref(), self.ip).await?;
                Ok(ServerSide::Grpc(task, addr))
            }
            System::Tarpc => {
                let (addr, task) = super::tarpc_echo::serve(self.ip).await?;
                Ok(ServerSide::Tarpc(task, addr))
            }
        }
    }
}

/// Raw quinn echo: for each stream, read to the end and write it back.
pub async fn raw_echo_server(endpoint: ServerEndpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.accept().await else {
                return;
            };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(data) = recv.read_to_end(64 << 20).await {
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}
