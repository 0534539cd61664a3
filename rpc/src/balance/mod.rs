//! Pure logic of the cluster client: load estimates, server selection,
//! ejection of failing servers, the retry budget and client-side
//! throttling.
//!
//! Nothing here does I/O or reads a clock: time comes in as a [`Duration`]
//! since an origin the caller chooses, and randomness as a function that
//! returns `u64`s, so that every decision can be replayed in a unit test.
//!
//! [`Duration`]: std::time::Duration

mod budget;
mod eject;
mod ewma;
mod policy;
mod throttle;
mod window;

pub use budget::{RetryBudget, RetryBudgetConfig};
pub use eject::{EjectionConfig, Health, may_eject};
pub use ewma::PeakEwma;
pub use policy::{Candidate, Policy};
pub use throttle::{Throttle, ThrottleConfig, Throttled};
