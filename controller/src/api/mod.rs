//! The controller's gRPC services.

pub mod admin;
pub mod batch;
pub mod node;
