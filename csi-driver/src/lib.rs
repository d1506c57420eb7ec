//! The kcred CSI node driver: mounts issued credentials into pods on tmpfs
//! and keeps them fresh.
//!
//! Three rooms, one job each:
//! - [`csi`]: the CSI protocol kubelet speaks (validation, status codes);
//! - [`volumes`]: a volume's life (publish, refresh, unpublish), talking to
//!   the controller through [`controller_client`];
//! - [`storage`]: bytes on the node (tmpfs mounts, the atomic writer, the
//!   non-secret state that lets the driver resume after a restart).

pub mod config;
pub mod controller_client;
pub mod csi;
pub mod metrics;
pub mod storage;
pub mod volumes;

pub use config::DriverConfig;
