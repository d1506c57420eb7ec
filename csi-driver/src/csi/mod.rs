//! The CSI protocol, and nothing else: validate what kubelet sends, hand it
//! to [`crate::volumes`], and answer with the status code the spec names.

pub mod identity;
pub mod node;
pub mod pod_token;
pub mod request;
pub mod server;
pub mod status;

#[cfg(test)]
mod fuzz;
