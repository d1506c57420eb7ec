//! Several controllers on one etcd, and what they must agree on.
//!
//! With the embedded store a controller is alone: it always leads, its
//! in-process single-flight and budget are the whole cluster's. With etcd,
//! each controller holds one etcd lease (its session), kept alive while it
//! reaches etcd, and through it:
//! - [`election`]: one leader (etcd's election API) runs the lease sweeper
//!   and the rotations' pending purges;
//! - [`lock`]: a per-credential lock, so a credential is extracted or
//!   issued once whichever controller a storm lands on;
//! - [`budget`]: the KDC budget, one token bucket for the whole cluster;
//! - [`heartbeats`]: node heartbeats and losses, shared so the leader sees
//!   every node whichever controller it heartbeats to;
//! - [`replay`]: a Kerberos token accepted by one controller is refused by
//!   every other.
//!
//! A controller that dies holds nothing longer than its lease's time to
//! live; one that loses etcd steps down before its lease can lapse.

pub mod budget;
pub mod election;
pub mod heartbeats;
pub mod lock;
pub mod replay;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::StoreError;
use crate::store::etcd::Etcd;

/// This controller's place among the controllers sharing its store.
pub struct Cluster {
    etcd: Option<Arc<Etcd>>,
    id: String,
    lease_ttl: Duration,
    /// The etcd lease this controller holds now (none while regranting).
    session: Mutex<Option<i64>>,
    leader: watch::Sender<bool>,
    /// The lease replay entries live under, and when it was granted.
    replay_lease: Mutex<Option<(i64, std::time::Instant)>>,
}

impl Cluster {
    /// A controller alone on its embedded store: always the leader.
    pub fn solo() -> Arc<Cluster> {
        Arc::new(Cluster {
            etcd: None,
            id: String::new(),
            lease_ttl: Duration::ZERO,
            session: Mutex::new(None),
            leader: watch::channel(true).0,
            replay_lease: Mutex::new(None),
        })
    }

    /// A controller sharing `etcd` with others, known to them as `id`.
    /// Not the leader until [`Self::spawn_election`] wins.
    pub fn on_etcd(etcd: Arc<Etcd>, id: &str, lease_ttl: Duration) -> Arc<Cluster> {
        Arc::new(Cluster {
            etcd: Some(etcd),
            id: id.to_string(),
            lease_ttl,
            session: Mutex::new(None),
            leader: watch::channel(false).0,
            replay_lease: Mutex::new(None),
        })
    }

    /// Whether other controllers may share the store.
    pub fn is_shared(&self) -> bool {
        self.etcd.is_some()
    }

    /// Whether this controller runs the cluster's singleton work now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Follows leadership changes (for the `kcred_leader` metric).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// This controller's name in the election.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn set_session(&self, lease: Option<i64>) {
        *crate::locks::lock(&self.session) = lease;
    }

    /// The etcd lease held now; an error while there is none (etcd lost):
    /// work that needs it fails closed.
    fn session(&self) -> Result<i64, StoreError> {
        crate::locks::lock(&self.session)
            .ok_or_else(|| StoreError::Db("no etcd lease held: etcd unreachable".into()))
    }
}
