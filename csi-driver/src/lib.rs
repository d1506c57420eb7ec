//! The kcred CSI node driver: mounts issued credentials into pods on tmpfs
//! and keeps them fresh.
//!
//! Three rooms, one job each:
//! - [`csi`]: the CSI protocol kubelet speaks (validation, status codes);
//! - [`volumes`]: a volume's life as one state machine (publish, refresh,
//!   wipe, unpublish) on one scheduler, talking to the controller through
//!   [`controller_client`];
//! - [`storage`]: bytes on the node behind one small trait (tmpfs mounts
//!   and the atomic writer; plain directories for tests), and the
//!   non-secret state that lets the driver resume after a restart.
//!
//! [`psat`] reads the driver pod's own token, the node's identity where
//! nodes have no host keytab.
//!
//! [`support`] holds the idioms all three share (locks, times, retries,
//! randomness).

pub mod config;
pub mod connection_proof;
pub mod controller_client;
pub mod csi;
pub mod metrics;
pub mod node_identity;
pub mod psat;
pub mod storage;
pub mod support;
pub mod volumes;

pub use config::DriverConfig;
