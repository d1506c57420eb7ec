//! Issuers: one per credential kind, each deciding where a credential comes
//! from (the store, or the KDC through the gate) and remembering it.

pub mod ca;
pub mod certs;
pub mod data_keys;
pub mod keys;
pub mod keytab;
pub mod tickets;

use crate::gate::single_flight::Abandoned;
use crate::gate::{GateError, Protection};
use crate::kadmin::KadminError;
use crate::keytab::KeytabError;
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
    /// Too many requests already wait for the KDC; retry later.
    #[error("{0}")]
    Busy(String),
    /// No such key ring (or key version).
    #[error("{0}")]
    KeyUnknown(String),
    /// The key ring cannot do that in its present state (retire the primary).
    #[error("{0}")]
    KeyState(String),
    /// A keytab kadmind wrote, or the store held, is malformed.
    #[error("keytab: {0}")]
    Keytab(#[from] KeytabError),
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
            GateError::Refused {
                lane,
                protection: Protection::QueueFull,
                message,
            } => IssueError::Busy(format!("{lane} is protected: {message}")),
            GateError::Refused {
                lane,
                protection: Protection::BreakerOpen,
                message,
            } => IssueError::Unavailable(format!("{lane} is protected: {message}")),
            GateError::Failed(e) => e.into(),
        }
    }
}
