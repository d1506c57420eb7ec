//! Issuers: one per credential kind, each deciding where a credential comes
//! from (the store, or the KDC through kadmind) and remembering it.

pub mod keytab;

use crate::kadmin::KadminError;
use crate::store::StoreError;

/// Why a credential could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// kadmind failed or refused.
    #[error(transparent)]
    Kadmin(#[from] KadminError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}
