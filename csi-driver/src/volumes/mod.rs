//! A volume's life on the node: first publish, refresh, unpublish.
//!
//! The CSI layer hands validated requests here; this layer talks to the
//! controller and drives [`crate::storage`], which owns the bytes.

pub mod manager;
pub mod renewal;
pub mod request;
pub mod sync;

pub use manager::{PublishOutcome, PublishRequest, VolumeError, VolumeManager};
