//! Shared set-up for quicall's benchmarks: a loopback mTLS server and client,
//! and a counting allocator.
#![forbid(unsafe_code)]

pub mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use quicall::certs::{CertificateAuthority, NodeSpec};
use quicall::{Client, ClientAuth, ClientOptions, ClientTls, Server, ServerOptions, ServerTls};

/// A server serving the demo methods and a client connected to it, over
/// mutual TLS on loopback.
pub async fn loopback_pair() -> (Server, Client) {
    let ca = CertificateAuthority::new("bench CA", quicall::certs::DEFAULT_VALIDITY).unwrap();
    let server_cert = ca
        .issue(&NodeSpec::server("bench-server").san("localhost"))
        .unwrap();
    let client_cert = ca.issue(&NodeSpec::client("bench-client")).unwrap();
    let roots = vec![ca.cert_der().clone()];
    let tls = ServerTls::new(
        server_cert.chain(),
        server_cert.key_der(),
        ClientAuth::Required(roots.clone()),
    );
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server =
        Server::bind(addr, tls, quicall::demo::router(), ServerOptions::default()).unwrap();
    let tls = ClientTls::new(roots).with_identity(client_cert.chain(), client_cert.key_der());
    let client = Client::connect(
        server.local_addr(),
        "localhost",
        tls,
        ClientOptions::default(),
    )
    .await
    .unwrap();
    (server, client)
}

/// `n` servers of the demo methods and a cluster client of them (default
/// policy), over mutual TLS on loopback.
pub async fn loopback_cluster(n: usize) -> (Vec<Server>, quicall::Cluster) {
    let ca = CertificateAuthority::new("bench CA", quicall::certs::DEFAULT_VALIDITY).unwrap();
    let server_cert = ca
        .issue(&NodeSpec::server("bench-server").san("localhost"))
        .unwrap();
    let client_cert = ca.issue(&NodeSpec::client("bench-client")).unwrap();
    let roots = vec![ca.cert_der().clone()];
    let servers: Vec<Server> = (0..n)
        .map(|_| {
            let tls = ServerTls::new(
                server_cert.chain(),
                server_cert.key_der(),
                ClientAuth::Required(roots.clone()),
            );
            let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
            Server::bind(addr, tls, quicall::demo::router(), ServerOptions::default()).unwrap()
        })
        .collect();
    let tls = ClientTls::new(roots).with_identity(client_cert.chain(), client_cert.key_der());
    let list = servers
        .iter()
        .map(|s| (s.local_addr().to_string(), "localhost".to_string()));
    let cluster = quicall::Cluster::new(
        quicall::Discovery::fixed(list),
        tls,
        quicall::ClusterOptions::default(),
    )
    .await
    .unwrap();
    (servers, cluster)
}

/// Counts heap allocations made through it; install it as the global allocator.
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl CountingAlloc {
    /// Allocations (and reallocations) so far.
    pub fn count() -> u64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

// `GlobalAlloc` is an unsafe trait, and this crate forbids unsafe code, so
// the allocator itself is defined by a macro in each bench binary.

/// Defines a counting global allocator in the calling crate.
#[macro_export]
macro_rules! counting_allocator {
    () => {
        struct Counting;
        unsafe impl std::alloc::GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
                $crate::record_allocation();
                unsafe { std::alloc::System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
                unsafe { std::alloc::System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: std::alloc::Layout,
                size: usize,
            ) -> *mut u8 {
                $crate::record_allocation();
                unsafe { std::alloc::System.realloc(ptr, layout, size) }
            }
        }
        #[global_allocator]
        static GLOBAL: Counting = Counting;
    };
}

/// Called by the allocator that [`counting_allocator!`] defines.
#[doc(hidden)]
pub fn record_allocation() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
}
