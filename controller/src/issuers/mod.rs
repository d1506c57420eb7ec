//! Issuers: one per credential kind, each deciding where a credential comes
//! from (the store, or the KDC through the gate) and remembering it.

pub mod ca;
pub mod certs;
pub mod data_keys;
pub mod keys;
pub mod keytab;
pub mod tickets;

use crate::gate::GateError;
use crate::gate::single_flight::Abandoned;
use crate::kadmin::KadminError;
use crate::store::StoreError;

/// Why a credential could not be issued.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IssueError {
    /// kadmind failed or refused.
    #[error(transparent)]
    Kadmin(#[from] KadminError),
    /// The KDC failed or refused a ticket.
    #[error(transparent)]
    Ticket(#[from] crate::kdc::TicketError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The gate protected the KDC or kadmind; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The credential does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl From<Abandoned> for IssueError {
    fn from(_: Abandoned) -> Self {
        IssueError::Unavailable("the request this one waited on was cancelled; retry".into())
    }
}

impl<E: Into<IssueError>> From<GateError<E>> for IssueError {
    fn from(e: GateError<E>) -> Self {
        match e {
            GateError::Refused { lane, reason } => {
                IssueError::Unavailable(format!("{lane} is protected: {reason}"))
            }
            GateError::Failed(e) => e.into(),
        }
    }
}
