//! What every kcred daemon needs the same way: graceful shutdown, logging
//! that suits files and log collectors, and the operations endpoint
//! (`/metrics`, `/healthz`, `/readyz`) with the process and build metrics
//! every Prometheus dashboard expects.

// Two calls need it: `malloc::limit_arenas` and `malloc::release_free_memory`.
#![deny(unsafe_code)]

pub mod health;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod ops;
mod shutdown;

pub use health::Check;
pub use logging::{LogArgs, LogFormat};
pub use metrics::{BuildInfo, register, render, set_build_info};
pub use ops::{OpsEndpoints, serve_metrics};
pub use shutdown::shutdown_signal;
