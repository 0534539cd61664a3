//! Shared set-up for quicall's benchmarks: a loopback mTLS server and client,
//! and a counting allocator.
#![forbid(unsafe_code)]

pub mod harness;
pub mod structured;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use harness::systems::Pki;
use quicall::{Client, ClientOptions, Server, ServerOptions};

/// A server serving the demo methods and a client connected to it, over
/// mutual TLS on loopback.
pub async fn loopback_pair() -> (Server, Client) {
    let pki = Pki::new().unwrap();
    let server = demo_server(&pki);
    let client = Client::connect(
        server.local_addr(),
        "localhost",
        pki.client_tls(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    (server, client)
}

/// `n` servers of the demo methods and a cluster client of them (default
/// policy), over mutual TLS on loopback.
pub async fn loopback_cluster(n: usize) -> (Vec<Server>, quicall::Cluster) {
    let pki = Pki::new().unwrap();
    let servers: Vec<Server> = (0..n).map(|_| demo_server(&pki)).collect();
    let list = servers
        .iter()
        .map(|s| (s.local_addr().to_string(), "localhost".to_string()));
    let cluster = quicall::Cluster::new(
        quicall::Discovery::fixed(list),
        pki.client_tls(),
        quicall::ClusterOptions::default(),
    )
    .await
    .unwrap();
    (servers, cluster)
}

/// A server of the demo methods on a free loopback port, with `pki`'s
/// server certificate, requiring client certificates.
fn demo_server(pki: &Pki) -> Server {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Server::bind(
        addr,
        pki.server_tls(),
        quicall::demo::router(),
        ServerOptions::default(),
    )
    .unwrap()
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
