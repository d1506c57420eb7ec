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
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{Record, Store, StoreError, Table};

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

/// The issued-credential cache every issuer reads through: the record of
/// `name` (read off the async workers unless the store is local), turned
/// into a credential by `parse`.
/// A secret that does not parse is a corrupt record, not a missing one.
pub(crate) async fn read_stored<M, T, E>(
    store: &Arc<Store>,
    table: Table,
    name: &str,
    parse: impl FnOnce(Record<M>) -> Result<T, E>,
) -> Result<Option<T>, IssueError>
where
    M: DeserializeOwned + Send + 'static,
    E: std::fmt::Display,
{
    let (from, key) = (Arc::clone(store), name.to_string());
    let found = store
        .reading(move || from.get::<M>(table, &key))
        .await
        .map_err(|e| IssueError::Task(e.to_string()))??;
    found.map(parse).transpose().map_err(|e| {
        IssueError::Store(StoreError::Corrupt {
            record: name.to_string(),
            reason: e.to_string(),
        })
    })
}

/// Writes an issued credential's record off the async workers.
pub(crate) async fn write_stored<M>(
    store: &Arc<Store>,
    table: Table,
    name: &str,
    meta: M,
    secret: zeroize::Zeroizing<Vec<u8>>,
) -> Result<(), IssueError>
where
    M: Serialize + Send + 'static,
{
    let store = Arc::clone(store);
    let key = name.to_string();
    tokio::task::spawn_blocking(move || store.put(table, &key, &meta, &secret))
        .await
        .map_err(|e| IssueError::Task(e.to_string()))??;
    Ok(())
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
            GateError::Refused {
                lane,
                protection: Protection::ClusterBudget,
                message,
            } => IssueError::Store(StoreError::Db(format!("{lane}: {message}"))),
            GateError::Failed(e) => e.into(),
        }
    }
}
