//! The load harness: echo calls over loopback through quicall and through
//! raw quinn (same quinn, same TLS, same transport settings), in closed and
//! open loop, every latency in an HDR histogram.

pub mod grpc;
pub mod netmatrix;
pub mod output;
pub mod overload;
pub mod run;
pub mod streams;
pub mod systems;
pub mod tarpc_echo;
pub mod tuning;

pub use run::{Mode, Outcome, Workload, closed_loop, first_calls, open_loop};
pub use systems::{Echo, System};
pub mod grpc_stream;

static ORIGIN: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Nanoseconds since the process's first stamp: a message's send time,
/// written into it, read back by the receiver in the same process.
pub fn stamp() -> u64 {
    ORIGIN.elapsed().as_nanos() as u64
}

/// [`stamp`]'s reading at `at` (0 before the first stamp).
pub fn stamp_at(at: std::time::Instant) -> u64 {
    at.saturating_duration_since(*ORIGIN).as_nanos() as u64
}

/// Burns `cost` of CPU on the calling thread (no await: what a CPU-bound
/// handler does to its runtime's worker).
pub fn spin(cost: std::time::Duration) {
    if cost.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < cost {
        std::hint::spin_loop();
    }
}
