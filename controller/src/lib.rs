//! The kcred controller: decides, issues and remembers the credentials pods
//! receive.
//!
//! A node driver asks for a pod's bundle ([`api::node`]). [`admission`]
//! decides, in one place, from the controller's own view of the cluster
//! ([`pods`]), what the pod asks for ([`annotations`]), the role-account
//! [`policy`], the node's lease ([`nodes`]) and what was issued before
//! ([`issued`]). Each credential then comes from its [`issuers`]: from the
//! encrypted [`store`] when it was issued before, else from the KDC through
//! the [`gate`] and [`kadmin`], exactly once. Every refusal and failure
//! names one reason of a closed vocabulary ([`reasons`]).

#![forbid(unsafe_code)]

pub mod ad;
pub mod admission;
pub mod annotations;
pub mod api;
pub mod audit_head;
pub mod audit_settings;
pub mod auth;
pub mod blocking;
pub mod bundle;
pub mod check;
pub mod child_env;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod denials;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod gate;
pub mod intern;
pub mod issued;
pub mod issuers;
pub mod kadmin;
pub mod kdc;
pub mod keytab;
pub mod kubernetes;
pub mod listener;
pub mod locks;
pub mod metrics;
pub mod names;
pub mod nodes;
pub mod pods;
pub mod policy;
pub mod private_dir;
pub mod private_file;
pub mod realms;
pub mod reasons;
pub mod reload;
pub mod revocation_sync;
pub mod rotation;
pub mod server;
pub mod serving_tls;
pub mod state;
pub mod store;
pub mod webhook;
pub mod write_coalescing;

pub use config::Config;
pub use server::{Controller, ServeError};
