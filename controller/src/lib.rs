//! The kcred controller: decides, issues and remembers the credentials pods
//! receive.
//!
//! A node driver asks for a pod's bundle ([`api::node`]). The controller
//! checks the pod against its own view of the cluster ([`pods`]), reads
//! what the pod asks for ([`annotations`]), checks the role-account
//! [`policy`], and gets each credential from its [`issuers`]: from the
//! encrypted [`store`] when it was issued before, else from the KDC through
//! [`kadmin`], exactly once.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bundle;
pub mod config;
pub mod crypto;
pub mod gate;
pub mod issued;
pub mod issuers;
pub mod kadmin;
pub mod kdc;
pub mod keytab;
pub mod kubernetes;
pub mod metrics;
pub mod names;
pub mod nodes;
pub mod pods;
pub mod policy;
pub mod reload;
pub mod rotation;
pub mod server;
pub mod state;
pub mod store;
pub mod timefmt;

pub use config::Config;
pub use server::{Controller, ServeError};
