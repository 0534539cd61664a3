//! The load harness: echo calls over loopback through quicall and through
//! raw quinn (same quinn, same TLS, same transport settings), in closed and
//! open loop, every latency in an HDR histogram.

pub mod grpc;
pub mod output;
pub mod run;
pub mod systems;

pub use run::{Mode, Outcome, Workload, closed_loop, open_loop};
pub use systems::{Echo, System};
