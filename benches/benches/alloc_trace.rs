//! Where the heap allocations of one call come from: prints, for one `add`
//! call through a `Cluster` and one through a `Client` (after warm-up), each
//! allocation's size and the first quicall/quinn/tokio frames of its stack.
//!
//! `cargo bench -p quicall-benches --bench alloc_trace 2>&1 | grep -E '^(===|ALLOC)'`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use quicall::demo::{ADD, AddRequest};
use zerocopy::little_endian::I64;

static TRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

struct Tracing;

// SAFETY: every call is forwarded to the system allocator unchanged; the
// tracing around it allocates only with the reentrancy flag set, so it never
// recurses.
unsafe impl GlobalAlloc for Tracing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACE.load(Ordering::Relaxed) && !INSIDE.with(|c| c.replace(true)) {
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            let frames: Vec<&str> = trace
                .lines()
                .filter(|l| l.contains("quicall") || l.contains("quinn") || l.contains("tokio::"))
                .filter(|l| !l.trim_start().starts_with("at "))
                .take(4)
                .map(str::trim)
                .collect();
            eprintln!("ALLOC {:>5} B :: {}", layout.size(), frames.join(" | "));
            INSIDE.with(|c| c.set(false));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracing = Tracing;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = AddRequest {
        a: I64::new(1),
        b: I64::new(2),
    };
    rt.block_on(async {
        let (_servers, cluster) = quicall_benches::loopback_cluster(1).await;
        for _ in 0..100 {
            cluster.call(&ADD, &request).await.unwrap();
        }
        eprintln!("=== one add call through a Cluster (client and server)");
        TRACE.store(true, Ordering::Relaxed);
        cluster.call(&ADD, &request).await.unwrap();
        TRACE.store(false, Ordering::Relaxed);

        let (_server, client) = quicall_benches::loopback_pair().await;
        for _ in 0..100 {
            client.call(&ADD, &request).await.unwrap();
        }
        eprintln!("=== one add call through a Client (client and server)");
        TRACE.store(true, Ordering::Relaxed);
        client.call(&ADD, &request).await.unwrap();
        TRACE.store(false, Ordering::Relaxed);
    });
}
