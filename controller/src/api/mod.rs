//! The controller's gRPC services.

pub mod node;
mod status;
