//! The controller's gRPC services.

pub mod admin;
pub mod batch;
mod heartbeats;
pub mod node;
