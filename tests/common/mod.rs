//! Helpers shared by the integration tests: certificates, servers and clients
//! on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use quicall::certs::{CertificateAuthority, NodeCert, NodeSpec};
use quicall::{
    Client, ClientAuth, ClientOptions, ClientTls, Router, Server, ServerOptions, ServerTls,
};

/// A CA with a server certificate for localhost and a client certificate.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub server: NodeCert,
    pub client: NodeCert,
}

impl Pki {
    pub fn new() -> Self {
        Self::named("test CA")
    }

    pub fn named(name: &str) -> Self {
        let ca = CertificateAuthority::new(name, Duration::from_secs(3600)).unwrap();
        let server = ca
            .issue(&NodeSpec::server("server").san("localhost").san("127.0.0.1"))
            .unwrap();
        let client = ca.issue(&NodeSpec::client("alice")).unwrap();
        Self { ca, server, client }
    }

    pub fn roots(&self) -> Vec<quicall::transport::CertificateDer<'static>> {
        vec![self.ca.cert_der().clone()]
    }

    /// Server TLS that requires client certificates from this CA.
    pub fn server_tls(&self) -> ServerTls {
        ServerTls::new(
            self.server.chain(),
            self.server.key_der(),
            ClientAuth::Required(self.roots()),
        )
    }

    /// Client TLS that trusts this CA and presents the client certificate.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::new(self.roots()).with_identity(self.client.chain(), self.client.key_der())
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn serve(pki: &Pki, router: Router) -> Server {
    serve_with(pki, router, ServerOptions::default())
}

pub fn serve_with(pki: &Pki, router: Router, options: ServerOptions) -> Server {
    Server::bind(loopback(), pki.server_tls(), router, options).unwrap()
}

pub async fn connect(pki: &Pki, server: &Server) -> Client {
    Client::connect(
        server.local_addr(),
        "localhost",
        pki.client_tls(),
        ClientOptions::default(),
    )
    .await
    .unwrap()
}

/// Runs `fut` with a bound on its time, so that a hang fails the test
/// instead of stalling it.
pub async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test step did not finish in 30 s")
}
