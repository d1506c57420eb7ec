//! The controller's gRPC services.

pub mod admin;
mod audit_export;
pub mod batch;
pub(crate) mod date_header;
mod heartbeats;
pub mod node;
