//! Heap allocations per call on the client and on the server, apart, for
//! quicall and for raw quinn (same quinn, TLS and transport settings): the
//! server runs on its own thread and runtime, and the allocator counts by
//! thread role.
//!
//! `cargo bench -p quicall-benches --bench alloc_sides`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quicall::certs::{CertificateAuthority, NodeSpec};
use quicall::demo::ECHO;
use quicall::transport::{ClientEndpoint, ServerEndpoint};
use quicall::{
    Client, ClientAuth, ClientOptions, ClientTls, Limits, Server, ServerOptions, ServerTls,
};

/// Allocations by role: 0 other threads, 1 the client's, 2 the server's.
static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

thread_local! {
    static ROLE: Cell<usize> = const { Cell::new(0) };
}

struct ByRole;

// SAFETY: forwards to the system allocator unchanged; counting touches only
// a const-initialised thread-local and atomics, which do not allocate.
unsafe impl GlobalAlloc for ByRole {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNTS[ROLE.with(Cell::get)].fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        COUNTS[ROLE.with(Cell::get)].fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: ByRole = ByRole;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let ca = CertificateAuthority::new("bench CA", quicall::certs::DEFAULT_VALIDITY).unwrap();
    let server_cert = ca.issue(&NodeSpec::server("s").san("localhost")).unwrap();
    let client_cert = ca.issue(&NodeSpec::client("c")).unwrap();
    let roots = vec![ca.cert_der().clone()];
    let payload = Bytes::from(vec![7u8; 64]);
    let calls = 10_000u64;
    for quicall in [true, false] {
        let server_tls = ServerTls::new(
            server_cert.chain(),
            server_cert.key_der(),
            ClientAuth::Required(roots.clone()),
        );
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            ROLE.with(|r| r.set(2));
            runtime().block_on(async move {
                let addr = "127.0.0.1:0".parse().unwrap();
                if quicall {
                    let server = Server::bind(
                        addr,
                        server_tls,
                        quicall::demo::router(),
                        ServerOptions::default(),
                    )
                    .unwrap();
                    addr_tx.send(server.local_addr()).unwrap();
                    let _ = stop_rx.await;
                } else {
                    let endpoint =
                        ServerEndpoint::bind(addr, server_tls, Limits::default()).unwrap();
                    addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
                    let serve = quicall_benches::harness::systems::raw_echo_server(endpoint);
                    tokio::select! { _ = serve => {}, _ = stop_rx => {} }
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        ROLE.with(|r| r.set(1));
        let client_tls =
            ClientTls::new(roots.clone()).with_identity(client_cert.chain(), client_cert.key_der());
        let (client_side, server_side) = runtime().block_on(async {
            if quicall {
                let client =
                    Client::connect(addr, "localhost", client_tls, ClientOptions::default())
                        .await
                        .unwrap();
                for _ in 0..1000 {
                    client.call(&ECHO, payload.clone()).await.unwrap();
                }
                let before = [
                    COUNTS[1].load(Ordering::Relaxed),
                    COUNTS[2].load(Ordering::Relaxed),
                ];
                for _ in 0..calls {
                    client.call(&ECHO, payload.clone()).await.unwrap();
                }
                (
                    COUNTS[1].load(Ordering::Relaxed) - before[0],
                    COUNTS[2].load(Ordering::Relaxed) - before[1],
                )
            } else {
                let endpoint = ClientEndpoint::new(client_tls, Limits::default()).unwrap();
                let conn = endpoint.connect(addr, "localhost").await.unwrap();
                let one = || async {
                    let (mut send, mut recv) = conn.open_bi().await.unwrap();
                    send.write_chunk(payload.clone()).await.unwrap();
                    send.finish().unwrap();
                    recv.read_to_end(1 << 20).await.unwrap()
                };
                for _ in 0..1000 {
                    one().await;
                }
                let before = [
                    COUNTS[1].load(Ordering::Relaxed),
                    COUNTS[2].load(Ordering::Relaxed),
                ];
                for _ in 0..calls {
                    one().await;
                }
                (
                    COUNTS[1].load(Ordering::Relaxed) - before[0],
                    COUNTS[2].load(Ordering::Relaxed) - before[1],
                )
            }
        });
        let _ = stop_tx.send(());
        server.join().unwrap();
        println!(
            "{:<10} heap allocations per 64 B echo call: client {:.1}, server {:.1}",
            if quicall { "quicall" } else { "raw-quinn" },
            client_side as f64 / calls as f64,
            server_side as f64 / calls as f64
        );
    }
}
