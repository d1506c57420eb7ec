//! A volume's life on the node: first publish, refresh, wipe, unpublish.
//!
//! - [`lifecycle`]: the state machine: triggers, plans, and the one
//!   function that decides;
//! - [`reconcile`]: doing what was decided, against the controller and the
//!   storage;
//! - [`scheduler`]: when each volume is looked at next (deadlines,
//!   retries, pushed triggers), with bounded parallelism;
//! - [`batch`]: refreshes of volumes that hold the same bundle, with one
//!   controller call;
//! - [`manager`]: the entry points (kubelet's calls, triggers) and the
//!   per-volume locks;
//! - [`sync`]: the heartbeat and update stream, turned into triggers;
//! - [`freshness`]: whether a republish can be answered from what the node
//!   holds;
//! - [`pod_tokens`]: the pods' own tokens kubelet passed, forwarded to the
//!   controller.

pub mod batch;
pub mod error;
pub mod freshness;
pub mod lifecycle;
pub mod manager;
pub mod pod_tokens;
pub mod reconcile;
pub mod scheduler;
pub mod sync;

pub use error::{Refusal, VolumeError};
pub use lifecycle::{Cause, PublishRequest};
pub use manager::VolumeManager;
pub use reconcile::Outcome;

#[cfg(test)]
mod tests;
