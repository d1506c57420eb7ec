//! What was issued where: one record per volume (node, pod, credentials,
//! versions), kept in the store without secrets. It answers "which volumes
//! hold this principal?" for rotations, "what does this node hold?" for
//! leases and reconciliation, and `kcredctl list`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::locks::lock;
use std::time::Duration;

use tokio::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Table};

/// One volume's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// CSI volume id.
    pub volume_id: String,
    /// Node it was published on.
    pub node: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Service principals in its keytab.
    pub keytabs: BTreeSet<String>,
    /// Role account whose ticket it holds.
    pub ticket: Option<String>,
    /// Certificate names.
    pub certs: BTreeSet<String>,
    /// Key ring ids.
    pub keys: BTreeSet<String>,
    /// Versions delivered: principal -> highest kvno, key id -> primary.
    pub versions: BTreeMap<String, u32>,
    /// Last issue, seconds since the epoch.
    pub issued_unix: i64,
    /// Bundle generation delivered last.
    pub generation: String,
    /// Revoked by an operator: nothing more is issued to it.
    pub revoked: bool,
}

/// The registry over the store. Writes are batched (one transaction per
/// ~50 ms) so a storm of pod starts costs a few fsyncs, not one per pod;
/// reads see pending writes at once.
#[derive(Clone)]
pub struct Issued {
    store: Arc<Store>,
    pending: Arc<Mutex<HashMap<String, VolumeRecord>>>,
    wake: mpsc::UnboundedSender<()>,
    /// Pod UIDs with a revoked volume: a node cannot get around a
    /// revocation by naming another volume id for the same pod.
    revoked_pods: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The volume (or its pod) was revoked meanwhile.
    #[error("volume {0} was revoked")]
    Revoked(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const BATCH_LINGER: Duration = Duration::from_millis(50);

impl Issued {
    /// Reads and writes through `store`; starts the batch writer on the
    /// current Tokio runtime.
    pub fn new(store: Arc<Store>) -> Self {
        let pending: Arc<Mutex<HashMap<String, VolumeRecord>>> = Arc::default();
        let (wake, mut rx) = mpsc::unbounded_channel::<()>();
        let (s, p) = (Arc::clone(&store), Arc::clone(&pending));
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(BATCH_LINGER).await;
                while rx.try_recv().is_ok() {}
                let batch: Vec<(String, VolumeRecord)> = lock(&p)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                let store = Arc::clone(&s);
                let written = batch.clone();
                match tokio::task::spawn_blocking(move || store.put_many(Table::Volumes, &batch))
                    .await
                {
                    Ok(Ok(())) => {
                        let mut pending = lock(&p);
                        for (k, v) in written {
                            if pending.get(&k) == Some(&v) {
                                pending.remove(&k);
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot write volume records; will retry")
                    }
                    Err(e) => tracing::error!(error = %e, "volume record writer failed"),
                }
            }
        });
        let revoked_pods = store
            .list::<VolumeRecord>(Table::Volumes)
            .map(|all| {
                all.into_iter()
                    .filter(|(_, r, _)| r.revoked)
                    .map(|(_, r, _)| r.pod_uid)
                    .collect()
            })
            .unwrap_or_default();
        Issued {
            store,
            pending,
            wake,
            revoked_pods: Arc::new(Mutex::new(revoked_pods)),
        }
    }

    /// Whether any volume of this pod was revoked.
    pub fn pod_revoked(&self, pod_uid: &str) -> bool {
        lock(&self.revoked_pods).contains(pod_uid)
    }

    /// Records (or updates) an issued volume; refuses to un-revoke one (a
    /// fetch that was in flight when an operator revoked it).
    pub fn put(&self, rec: &VolumeRecord) -> Result<(), PutError> {
        let mut pending = lock(&self.pending);
        let revoked = self.pod_revoked(&rec.pod_uid)
            || match pending.get(&rec.volume_id) {
                Some(p) => p.revoked,
                None => self
                    .store
                    .get::<VolumeRecord>(Table::Volumes, &rec.volume_id)?
                    .is_some_and(|r| r.meta.revoked),
            };
        if revoked && !rec.revoked {
            return Err(PutError::Revoked(rec.volume_id.clone()));
        }
        pending.insert(rec.volume_id.clone(), rec.clone());
        drop(pending);
        let _ = self.wake.send(());
        Ok(())
    }

    /// Revokes a volume, durably before it returns (an audited revocation
    /// must survive a crash).
    pub fn revoke(&self, rec: &VolumeRecord) -> Result<(), StoreError> {
        let mut r = rec.clone();
        r.revoked = true;
        lock(&self.revoked_pods).insert(r.pod_uid.clone());
        let mut pending = lock(&self.pending);
        self.store
            .put_many(Table::Volumes, &[(r.volume_id.clone(), r.clone())])?;
        pending.remove(&r.volume_id);
        Ok(())
    }

    /// The records of volumes published on `node`.
    pub fn on_node(&self, node: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self.all()?.into_iter().filter(|r| r.node == node).collect())
    }

    /// One volume's record.
    pub fn get(&self, volume_id: &str) -> Result<Option<VolumeRecord>, StoreError> {
        if let Some(r) = lock(&self.pending).get(volume_id) {
            return Ok(Some(r.clone()));
        }
        Ok(self
            .store
            .get::<VolumeRecord>(Table::Volumes, volume_id)?
            .map(|r| r.meta))
    }

    /// Forgets a volume (its pod is gone).
    pub fn remove(&self, volume_id: &str) -> Result<(), StoreError> {
        lock(&self.pending).remove(volume_id);
        self.store.delete(Table::Volumes, volume_id)
    }

    /// Every volume record.
    pub fn all(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let mut all: HashMap<String, VolumeRecord> = self
            .store
            .list::<VolumeRecord>(Table::Volumes)?
            .into_iter()
            .map(|(k, r, _)| (k, r))
            .collect();
        for (k, v) in lock(&self.pending).iter() {
            all.insert(k.clone(), v.clone());
        }
        let mut v: Vec<VolumeRecord> = all.into_values().collect();
        v.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        Ok(v)
    }

    /// Volumes whose keytab holds `principal`.
    pub fn holding_principal(&self, principal: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|v| !v.revoked && v.keytabs.contains(principal))
            .collect())
    }

    /// Volumes holding key ring `id`.
    pub fn holding_key(&self, id: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|v| !v.revoked && v.keys.contains(id))
            .collect())
    }
}
