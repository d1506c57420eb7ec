//! What was issued where: one record per volume (node, pod, credentials,
//! versions), kept in the store without secrets. It answers "which volumes
//! hold this principal?" for rotations, "what does this node hold?" for
//! leases and reconciliation, and `kcredctl list`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use parking_lot::{RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::intern::Interner;
use crate::locks::lock;
use kept::KeptVolume;

mod kept;
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

/// Where a volume is and whose pod it serves: what a heartbeat weighs,
/// without the record's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// CSI volume id.
    pub volume_id: Arc<str>,
    /// Pod namespace.
    pub namespace: Arc<str>,
    /// Pod name.
    pub pod: Arc<str>,
    /// Pod UID.
    pub pod_uid: Arc<str>,
    /// Revoked by an operator.
    pub revoked: bool,
}

/// The registry: every record in memory, indexed by node, over the store.
///
/// Reads never touch the store: a heartbeat asks about the volumes one node
/// holds, and must cost what that node holds, not what the cluster holds.
/// The store is loaded once at start and written behind: writes are batched
/// (one transaction per ~50 ms) so a storm of pod starts costs a few fsyncs,
/// not one per pod; revocations are written through before they return.
///
/// With several controllers on one store (`shared`), revocations are
/// read through: a revocation writes the pod's records it audited and the
/// pod's entry in [`Table::Revocations`] before it returns, and every controller
/// asks the store about the volume and the pod before issuing, so a
/// revocation made on one controller is refused on all of them at once.
/// Heartbeats (which ask about every volume a node holds) read the view,
/// which takes the cluster's revocations in every [`REVOCATION_SYNC`].
#[derive(Clone)]
pub struct Issued {
    store: Arc<Store>,
    shared: bool,
    view: Arc<RwLock<View>>,
    /// Written to the view, not yet to the store.
    pending: Arc<Mutex<HashMap<String, VolumeRecord>>>,
    /// Held across every store write of volume records (the batch writer's,
    /// a removal's, a revocation's); the view's lock is taken under it,
    /// never the other way round: writes land in the order their intents
    /// were taken from the view, while fetches and heartbeats, which need
    /// only the view, never wait on the store (an fsync, or an etcd round
    /// trip).
    writing: Arc<Mutex<()>>,
    wake: mpsc::UnboundedSender<()>,
}

/// Every record, by volume id and by node (the id shared by both, each
/// record kept compact: [`kept`]); pod UIDs with a revoked volume (a node
/// cannot get around a revocation by naming another volume id).
#[derive(Default)]
struct View {
    by_id: HashMap<Arc<str>, KeptVolume>,
    by_node: HashMap<Arc<str>, NodeIds>,
    revoked_pods: HashSet<String>,
    /// Revoked records nobody has audited, until audited and written
    /// revoked ([`Issued::unaudited_revocations`]): those marked on taking
    /// in a pod's revocation from the store (by the sync, a read, or on
    /// loading), and those this controller's own revocation reached
    /// without its caller having listed them. Each as it was when marked,
    /// so one removed meanwhile is still audited.
    unaudited: BTreeMap<Arc<str>, Queued>,
    names: Interner,
    /// Changes to any record so far: each node's [`NodeIds::changed`] is
    /// this count at its last change, so it never repeats, even for a
    /// node whose records all went and came back.
    changes: u64,
}

/// A record in [`View::unaudited`].
#[derive(Debug, Clone)]
struct Queued {
    record: VolumeRecord,
    /// Audited; its store write is what is left.
    audited: bool,
    /// Handed to a caller for its audit at this time
    /// ([`Issued::unaudited_revocations`]): not handed to another until
    /// that caller says how it went, or [`AUDIT_CLAIM`] has passed (a
    /// caller that gave up).
    claimed: Option<Instant>,
    /// False while the revocation that queued it has yet to write it (not
    /// revoked): no audit's write (revoked) may land before that one.
    landed: bool,
}

/// How long a record handed to a caller for its audit is not handed to
/// another.
const AUDIT_CLAIM: Duration = Duration::from_secs(60);

/// One node's volume ids, and when its records last changed.
#[derive(Default)]
struct NodeIds {
    ids: BTreeSet<Arc<str>>,
    /// [`View::changes`] when one of them was last added, removed or
    /// revoked: unchanged, the node's records are as they were.
    changed: u64,
}

impl View {
    /// Every record of a revoked pod is kept revoked: one recorded after
    /// the pod's revocation was taken in (read through from the store, or
    /// loaded at start) is marked as it comes, and a revoked record that
    /// brings its pod's revocation marks the pod's others.
    fn insert(&mut self, rec: &VolumeRecord) {
        let pod_revoked = self.revoked_pods.contains(&rec.pod_uid);
        let mut kept = KeptVolume::keep(rec, &mut self.names);
        let marked = pod_revoked && !kept.revoked;
        kept.revoked |= pod_revoked;
        let previous = self
            .by_id
            .get_key_value(rec.volume_id.as_str())
            .map(|(id, old)| (Arc::clone(id), Arc::clone(&old.node)));
        let id = match previous {
            Some((id, node)) => {
                if node != kept.node {
                    self.unindex(&node, &id);
                }
                id
            }
            None => Arc::from(rec.volume_id.as_str()),
        };
        self.changes += 1;
        let node = self.by_node.entry(Arc::clone(&kept.node)).or_default();
        node.ids.insert(Arc::clone(&id));
        node.changed = self.changes;
        self.by_id.insert(Arc::clone(&id), kept);
        if marked {
            self.queue(id);
        }
        if rec.revoked && !pod_revoked {
            self.revoke_pods([rec.pod_uid.clone()]);
        }
    }

    fn remove(&mut self, volume_id: &str) {
        if let Some(old) = self.by_id.remove(volume_id) {
            self.unindex(&old.node, volume_id);
        }
    }

    fn unindex(&mut self, node: &str, volume_id: &str) {
        self.changes += 1;
        if let Some(n) = self.by_node.get_mut(node) {
            n.ids.remove(volume_id);
            n.changed = self.changes;
            if n.ids.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    fn record(&self, volume_id: &str) -> Option<VolumeRecord> {
        self.by_id.get(volume_id).map(|k| k.record(volume_id))
    }
}

/// What [`Issued::revoke`] did.
#[derive(Debug, Default)]
pub struct Revocation {
    /// Every record of the pod, the named volume's first, all revoked now
    /// (in the view; in the store, those audited, unless its write failed).
    pub records: Vec<VolumeRecord>,
    /// The ids of those this call revoked (the others were before).
    pub newly: Vec<String>,
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

/// Records made per turn under the view's lock by a listing.
const LIST_TURN: usize = 1024;

/// What a listing of records asks for; `None`: any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listing<'a> {
    /// Volumes whose keytab holds this principal.
    pub principal: Option<&'a str>,
    /// Volumes of pods in this namespace.
    pub namespace: Option<&'a str>,
    /// Volumes on this node.
    pub node: Option<&'a str>,
}

/// How often a controller sharing its store takes in the revocations the
/// others made (for heartbeats' answers), and how often any controller
/// tries again to audit and write revoked volumes nobody audited.
pub const REVOCATION_SYNC: Duration = Duration::from_secs(2);

/// A pod's revocation, as every controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedPod {
    /// The volume whose revocation revoked the pod.
    pub volume_id: String,
    /// Who revoked it and why (absent from entries written before they
    /// were kept): what a controller that audits a volume of the pod
    /// after the fact ([`LateRevocation`]) attributes it to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Revoker>,
}

/// Who revoked a pod, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoker {
    /// The admin principal, as audited.
    pub admin: String,
    /// The operator's reason.
    pub reason: String,
}

/// A volume revoked with its pod that nobody audited: the revocation's
/// caller did not list it (it was recorded after the listing, here or on
/// another controller). Audited by the controller that holds it (by each,
/// should two hold it and look at once: at least once, never not at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRevocation {
    /// Its record, revoked.
    pub record: VolumeRecord,
    /// The pod's revocation, as the store keeps it.
    pub pod: Option<RevokedPod>,
}

impl View {
    /// Takes in revocations made elsewhere: pods, and their volumes (those
    /// it marks wait in [`View::unaudited`]).
    fn revoke_pods(&mut self, uids: impl IntoIterator<Item = String>) {
        for uid in uids {
            if !self.revoked_pods.contains(&uid) {
                for (id, marked) in self.revoke_pod(uid) {
                    if marked {
                        self.queue(id);
                    }
                }
            }
        }
    }

    /// Queues a record marked revoked for its audit.
    fn queue(&mut self, id: Arc<str>) {
        if let Some(record) = self.record(&id) {
            self.unaudited.entry(id).or_insert(Queued {
                record,
                audited: false,
                claimed: None,
                landed: true,
            });
        }
    }

    /// Revokes the pod and marks every volume of it on record revoked
    /// (each one's node hears it at its next heartbeat): every record of
    /// the pod, each with whether this call marked it.
    fn revoke_pod(&mut self, uid: String) -> Vec<(Arc<str>, bool)> {
        let mut pods = Vec::new();
        let mut moved = Vec::new();
        for (id, rec) in self.by_id.iter_mut() {
            if *rec.pod_uid == *uid {
                pods.push((Arc::clone(id), !rec.revoked));
                if !rec.revoked {
                    rec.revoked = true;
                    moved.push(Arc::clone(&rec.node));
                }
            }
        }
        for node in &moved {
            self.changes += 1;
            if let Some(n) = self.by_node.get_mut(node) {
                n.changed = self.changes;
            }
        }
        self.revoked_pods.insert(uid);
        pods
    }
}

/// One of a node's records, borrowed from the index (see
/// [`Issued::with_node`]).
pub struct PlacementRef<'a> {
    /// CSI volume id.
    pub volume_id: &'a Arc<str>,
    kept: &'a KeptVolume,
}

impl PlacementRef<'_> {
    /// Pod namespace.
    pub fn namespace(&self) -> &str {
        &self.kept.namespace
    }
    /// Pod name.
    pub fn pod(&self) -> &str {
        &self.kept.pod
    }
    /// Pod UID.
    pub fn pod_uid(&self) -> &str {
        &self.kept.pod_uid
    }
    /// Revoked by an operator.
    pub fn revoked(&self) -> bool {
        self.kept.revoked
    }
    /// An owned copy.
    pub fn to_placement(&self) -> Placement {
        Placement {
            volume_id: Arc::clone(self.volume_id),
            namespace: Arc::clone(&self.kept.namespace),
            pod: Arc::clone(&self.kept.pod),
            pod_uid: Arc::clone(&self.kept.pod_uid),
            revoked: self.kept.revoked,
        }
    }
}

/// One node's records, read under the index's lock.
pub struct NodeRecords<'a> {
    view: &'a View,
    node: &'a str,
}

impl<'a> NodeRecords<'a> {
    /// The volume's record if it is recorded on this node.
    pub fn get(&self, volume_id: &str) -> Option<PlacementRef<'a>> {
        let (id, kept) = self.view.by_id.get_key_value(volume_id)?;
        (*kept.node == *self.node).then_some(PlacementRef {
            volume_id: id,
            kept,
        })
    }

    /// Marks this node's records as of now: the same mark later means no
    /// record of the node was added, removed or revoked in between.
    pub fn changed(&self) -> u64 {
        self.view.by_node.get(self.node).map_or(0, |n| n.changed)
    }

    /// Every record on this node.
    pub fn all(&self) -> impl Iterator<Item = PlacementRef<'a>> + 'a {
        let view = self.view;
        view.by_node
            .get(self.node)
            .into_iter()
            .flat_map(|n| &n.ids)
            .filter_map(move |id| {
                let (id, kept) = view.by_id.get_key_value(id)?;
                Some(PlacementRef {
                    volume_id: id,
                    kept,
                })
            })
    }
}

/// Where each volume recorded on `node` is.
fn placements(view: &View, node: &str) -> Vec<Placement> {
    view.by_node
        .get(node)
        .into_iter()
        .flat_map(|n| &n.ids)
        .filter_map(|id| Some((id, view.by_id.get(id)?)))
        .map(|(id, r)| Placement {
            volume_id: Arc::clone(id),
            namespace: Arc::clone(&r.namespace),
            pod: Arc::clone(&r.pod),
            pod_uid: Arc::clone(&r.pod_uid),
            revoked: r.revoked,
        })
        .collect()
}

impl Issued {
    /// Loads every record from `store` and starts the batch writer on the
    /// current Tokio runtime; `shared`: other controllers use the store
    /// too (revocations are read through, and synced).
    pub fn new(store: Arc<Store>, shared: bool) -> Result<Self, StoreError> {
        let mut view = View::default();
        let records = store.list::<VolumeRecord>(Table::Volumes)?;
        // The revoked pods first, so each record is marked as it loads
        // (one pass, however many pods were revoked).
        let revoked = store.list::<RevokedPod>(Table::Revocations)?;
        view.revoked_pods
            .extend(revoked.into_iter().map(|(uid, _, _)| uid));
        view.revoked_pods.extend(
            records
                .iter()
                .filter(|(_, r, _)| r.revoked)
                .map(|(_, r, _)| r.pod_uid.clone()),
        );
        for (_, rec, _) in &records {
            view.insert(rec);
        }
        let view = Arc::new(RwLock::new(view));
        let pending: Arc<Mutex<HashMap<String, VolumeRecord>>> = Arc::default();
        let writing: Arc<Mutex<()>> = Arc::default();
        let (wake, mut rx) = mpsc::unbounded_channel::<()>();
        let (s, p, w) = (
            Arc::clone(&store),
            Arc::clone(&pending),
            Arc::clone(&writing),
        );
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(BATCH_LINGER).await;
                while rx.try_recv().is_ok() {}
                let (store, pending, writing) = (Arc::clone(&s), Arc::clone(&p), Arc::clone(&w));
                // The batch is taken with the writer's lock held: a removal
                // or revocation that took its volume out of `pending` first
                // writes after this batch, never before it.
                let written = tokio::task::spawn_blocking(move || {
                    let _writing = lock(&writing);
                    let batch: Vec<(String, VolumeRecord)> = lock(&pending)
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if batch.is_empty() {
                        return Ok(());
                    }
                    store.put_many(Table::Volumes, &batch)?;
                    let mut pending = lock(&pending);
                    for (k, v) in batch {
                        if pending.get(&k) == Some(&v) {
                            pending.remove(&k);
                        }
                    }
                    Ok::<(), StoreError>(())
                })
                .await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot write volume records; will retry")
                    }
                    Err(e) => tracing::error!(error = %e, "volume record writer failed"),
                }
            }
        });
        Ok(Issued {
            store,
            shared,
            view,
            pending,
            writing,
            wake,
        })
    }

    /// Whether any volume of this pod was revoked (with a shared store:
    /// by any controller, up to now).
    pub fn pod_revoked(&self, pod_uid: &str) -> Result<bool, StoreError> {
        if self.view.read().revoked_pods.contains(pod_uid) {
            return Ok(true);
        }
        if !self.shared {
            return Ok(false);
        }
        let revoked = self
            .store
            .get::<RevokedPod>(Table::Revocations, pod_uid)?
            .is_some();
        if revoked {
            self.view.write().revoke_pods([pod_uid.to_string()]);
        }
        Ok(revoked)
    }

    /// Records (or updates) an issued volume; refuses to un-revoke one (a
    /// fetch that was in flight when an operator revoked it).
    pub fn put(&self, rec: &VolumeRecord) -> Result<(), PutError> {
        let mut view = self.view.write();
        let revoked = view.revoked_pods.contains(&rec.pod_uid)
            || view
                .by_id
                .get(rec.volume_id.as_str())
                .is_some_and(|r| r.revoked);
        if revoked && !rec.revoked {
            return Err(PutError::Revoked(rec.volume_id.clone()));
        }
        view.insert(rec);
        lock(&self.pending).insert(rec.volume_id.clone(), rec.clone());
        drop(view);
        let _ = self.wake.send(());
        Ok(())
    }

    /// Every volume of `rec`'s pod on record but `rec`'s own: this
    /// controller's, and with a shared store the store's too (volumes
    /// issued through another controller), the store's copy where it is
    /// revoked or issued later (a renewal through another controller).
    /// Reads the whole table of a shared store: for a revocation, which
    /// is rare.
    pub fn pod_records(&self, rec: &VolumeRecord) -> Result<Vec<VolumeRecord>, StoreError> {
        let mut found: BTreeMap<String, VolumeRecord> = {
            let view = self.view.read();
            view.by_id
                .iter()
                .filter(|(_, k)| *k.pod_uid == *rec.pod_uid)
                .map(|(id, k)| (id.to_string(), k.record(id)))
                .collect()
        };
        if self.shared {
            for (id, stored, _) in self.store.list::<VolumeRecord>(Table::Volumes)? {
                if stored.pod_uid == rec.pod_uid
                    && found.get(&id).is_none_or(|v| {
                        (stored.revoked && !v.revoked) || stored.issued_unix > v.issued_unix
                    })
                {
                    found.insert(id, stored);
                }
            }
        }
        found.remove(&rec.volume_id);
        Ok(found.into_values().collect())
    }

    /// Revokes a volume and so its pod: the volume, every other volume of
    /// the pod this controller holds and those in `known` (from
    /// [`Issued::pod_records`]: a shared store's) are marked revoked, as
    /// every controller marks them on taking in the pod's revocation, and
    /// written, durably before the result is `Ok` (an audited revocation
    /// must survive a crash). The view refuses them at once, whatever the
    /// store does: should its write fail, the caller hears it and this
    /// controller still refuses (closed), but a restart would not until a
    /// retry writes them all again. The caller has audited the named
    /// volume and those `known` unrevoked; only audited records are
    /// written revoked (a stored copy not revoked beside its pod's entry
    /// is what marks a record nobody audited, across restarts and
    /// controllers); the others are queued for the caller's late audit
    /// ([`Issued::unaudited_revocations`]). `by` goes into the pod's entry.
    pub fn revoke(
        &self,
        rec: &VolumeRecord,
        known: &[VolumeRecord],
        by: &Revoker,
    ) -> (Revocation, Result<(), StoreError>) {
        let mut r = rec.clone();
        r.revoked = true;
        let (revocation, audited, unaudited) = {
            let mut view = self.view.write();
            let mut pending = lock(&self.pending);
            // The caller audited the named volume and those it listed
            // unrevoked; one queued as audited has its audit too.
            let by_caller = |id: &str| {
                id == r.volume_id || known.iter().any(|k| !k.revoked && k.volume_id == id)
            };
            let named_anew = !view
                .by_id
                .get(r.volume_id.as_str())
                .is_some_and(|k| k.revoked);
            // The pod first, so each insert below finds it revoked and
            // sweeps nothing more.
            let mut swept = view.revoke_pod(r.pod_uid.clone());
            // Only a shared store holds what this view lacks (a record
            // this controller let go of since stays gone), or a later copy
            // (written as it is, revoked).
            for k in known.iter().filter(|_| self.shared) {
                match view.record(&k.volume_id) {
                    None => {
                        view.insert(k);
                        swept.push((Arc::from(k.volume_id.as_str()), !k.revoked));
                    }
                    Some(v) if k.issued_unix > v.issued_unix => view.insert(k),
                    Some(_) => {}
                }
            }
            // One a peer revoked first (the sync has yet to bring it) was
            // audited there.
            for (id, anew) in &mut swept {
                *anew &= !known.iter().any(|k| k.revoked && *k.volume_id == **id);
            }
            view.insert(&r);
            swept.retain(|(id, _)| **id != *r.volume_id);
            let named = (Arc::from(r.volume_id.as_str()), named_anew);
            let mut revocation = Revocation::default();
            let (mut audited, mut unaudited) = (Vec::new(), Vec::new());
            for (id, anew) in std::iter::once(named).chain(swept) {
                let Some(record) = view.record(&id) else {
                    continue;
                };
                let queued = view.unaudited.get(&id).map(|q| q.audited);
                match (by_caller(&id), queued) {
                    // Revoked by a revocation taken in earlier and not
                    // audited here yet: left queued, as stored.
                    (false, Some(false)) => {}
                    // Recorded after the caller's listing: audited by nobody
                    // yet. Queued, and written as it was (not revoked), so
                    // that even a crash before its audit leaves it found.
                    (false, None) if anew => {
                        view.unaudited.insert(
                            Arc::clone(&id),
                            Queued {
                                record: record.clone(),
                                audited: false,
                                claimed: None,
                                landed: false,
                            },
                        );
                        pending.remove(&*id);
                        unaudited.push(VolumeRecord {
                            revoked: false,
                            ..record.clone()
                        });
                    }
                    // Audited (by the caller, by an earlier late audit, or
                    // before this call): written revoked now, out of the
                    // queue.
                    _ => {
                        view.unaudited.remove(&id);
                        pending.remove(&*id);
                        audited.push(record.clone());
                    }
                }
                if anew {
                    revocation.newly.push(id.to_string());
                }
                revocation.records.push(record);
            }
            (revocation, audited, unaudited)
        };
        let written = self.write_revocation(&r, &audited, &unaudited, by);
        if written.is_err() {
            // Their copies go to the store behind, as before, so that a
            // restart still finds them unaudited.
            let mut pending = lock(&self.pending);
            for v in &unaudited {
                pending
                    .entry(v.volume_id.clone())
                    .or_insert_with(|| v.clone());
            }
            drop(pending);
            let _ = self.wake.send(());
        }
        // Now their stored copies are what the queue says: they may be
        // handed for their audit (whose write must land after this one).
        let mut view = self.view.write();
        for v in &unaudited {
            if let Some(q) = view.unaudited.get_mut(v.volume_id.as_str()) {
                q.landed = true;
            }
        }
        drop(view);
        (revocation, written)
    }

    /// The records first, then the pod's entry: a controller that sees the
    /// entry finds every record this revocation audited written revoked,
    /// and those it revoked that nobody audited yet written as they were.
    /// The first revocation's entry stays: the one that revoked the pod's
    /// volumes the sync takes in is who they are audited as.
    fn write_revocation(
        &self,
        rec: &VolumeRecord,
        audited: &[VolumeRecord],
        unaudited: &[VolumeRecord],
        by: &Revoker,
    ) -> Result<(), StoreError> {
        let _writing = lock(&self.writing);
        let records: Vec<(String, VolumeRecord)> = audited
            .iter()
            .chain(unaudited)
            .map(|v| (v.volume_id.clone(), v.clone()))
            .collect();
        self.store.put_many(Table::Volumes, &records)?;
        let pod = RevokedPod {
            volume_id: rec.volume_id.clone(),
            by: Some(by.clone()),
        };
        self.store
            .put_if_absent(Table::Revocations, &rec.pod_uid, &pod, b"")
            .map(drop)
    }

    /// Takes in the revocations other controllers sharing the store made,
    /// for heartbeats' answers (every [`REVOCATION_SYNC`]; a fetch asks
    /// the store itself). Reads the store: blocking.
    pub fn take_in_revocations(&self) -> Result<(), StoreError> {
        if !self.shared {
            return Ok(());
        }
        let revoked = self.store.list::<RevokedPod>(Table::Revocations)?;
        self.view
            .write()
            .revoke_pods(revoked.into_iter().map(|(uid, _, _)| uid));
        Ok(())
    }

    /// The queued records nobody audited: those whose stored copy is not
    /// revoked, as only audited records are written revoked. Each is
    /// handed to this caller alone (claimed), and stays queued until the
    /// caller has audited it ([`Issued::audited`]) and written it
    /// ([`Issued::write_audited`]), or hands it back
    /// ([`Issued::audit_failed`]); one whose stored copy is revoked was
    /// audited where it was written so, and leaves the queue. `pod_uid`:
    /// only that pod's. Reads the store: blocking.
    pub fn unaudited_revocations(
        &self,
        pod_uid: Option<&str>,
    ) -> Result<Vec<LateRevocation>, StoreError> {
        // The usual case, for a read lock only.
        if self.view.read().unaudited.is_empty() {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        let claimed: Vec<(Arc<str>, VolumeRecord)> = {
            let mut view = self.view.write();
            view.unaudited
                .iter_mut()
                .filter(|(_, q)| {
                    !q.audited
                        && q.landed
                        && q.claimed
                            .is_none_or(|at| now.duration_since(at) >= AUDIT_CLAIM)
                        && pod_uid.is_none_or(|uid| q.record.pod_uid == uid)
                })
                .map(|(id, q)| {
                    q.claimed = Some(now);
                    (Arc::clone(id), q.record.clone())
                })
                .collect()
        };
        let looked = self.late_revocations(&claimed);
        let mut view = self.view.write();
        match looked {
            Ok((late, audited_elsewhere)) => {
                for id in audited_elsewhere {
                    view.unaudited.remove(&id);
                }
                Ok(late)
            }
            Err(e) => {
                for (id, _) in &claimed {
                    if let Some(q) = view.unaudited.get_mut(id) {
                        q.claimed = None;
                    }
                }
                Err(e)
            }
        }
    }

    /// Of records claimed for their audit: those nobody audited, and the
    /// ids of those audited elsewhere (stored revoked).
    fn late_revocations(
        &self,
        claimed: &[(Arc<str>, VolumeRecord)],
    ) -> Result<(Vec<LateRevocation>, Vec<Arc<str>>), StoreError> {
        let mut pods: HashMap<String, Option<RevokedPod>> = HashMap::new();
        let (mut late, mut audited_elsewhere) = (Vec::new(), Vec::new());
        for (id, record) in claimed {
            let stored = self.store.get::<VolumeRecord>(Table::Volumes, id)?;
            if stored.is_some_and(|s| s.meta.revoked) {
                audited_elsewhere.push(Arc::clone(id));
                continue;
            }
            let pod = match pods.get(&record.pod_uid) {
                Some(pod) => pod.clone(),
                None => {
                    let pod = self
                        .store
                        .get::<RevokedPod>(Table::Revocations, &record.pod_uid)?
                        .map(|p| p.meta);
                    pods.insert(record.pod_uid.clone(), pod.clone());
                    pod
                }
            };
            late.push(LateRevocation {
                record: record.clone(),
                pod,
            });
        }
        Ok((late, audited_elsewhere))
    }

    /// Hands records back whose audit failed: the next caller tries again.
    pub fn audit_failed<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut view = self.view.write();
        for id in ids {
            if let Some(q) = view.unaudited.get_mut(id) {
                q.claimed = None;
            }
        }
    }

    /// How many records wait for their audit or its store write.
    pub fn queued_revocations(&self) -> usize {
        self.view.read().unaudited.len()
    }

    /// Marks queued records audited: their store write is what is left.
    pub fn audited<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut view = self.view.write();
        for id in ids {
            if let Some(q) = view.unaudited.get_mut(id) {
                q.audited = true;
                q.claimed = None;
            }
        }
    }

    /// Writes every queued record marked audited as the view holds it
    /// (revoked), and lets it go: every controller then finds it revoked,
    /// and none audits it again. One removed meanwhile is deleted (its
    /// removal left it for this): now, or by the next call if the removal
    /// came during this one. Should the write fail, they stay queued for
    /// the next call.
    pub fn write_audited(&self) -> Result<(), StoreError> {
        // The usual case: nothing to write, and no wait for the writer.
        if !self.view.read().unaudited.values().any(|q| q.audited) {
            return Ok(());
        }
        // The writer's lock first, as a removal and the batch writer take
        // it: neither can come between the read of the view and the write.
        let _writing = lock(&self.writing);
        let (ids, records) = {
            let view = self.view.read();
            let ids: Vec<Arc<str>> = view
                .unaudited
                .iter()
                .filter(|(_, q)| q.audited)
                .map(|(id, _)| Arc::clone(id))
                .collect();
            let records: Vec<(String, VolumeRecord)> = ids
                .iter()
                .filter_map(|id| view.record(id))
                .map(|r| (r.volume_id.clone(), r))
                .collect();
            (ids, records)
        };
        if ids.is_empty() {
            return Ok(());
        }
        if !records.is_empty() {
            self.store.put_many(Table::Volumes, &records)?;
        }
        // Removed before, or while the write above waited (a removal of a
        // queued record leaves its stored copy for this).
        let gone: Vec<Arc<str>> = {
            let view = self.view.read();
            ids.iter()
                .filter(|id| view.record(id).is_none())
                .cloned()
                .collect()
        };
        for id in &gone {
            self.store.delete(Table::Volumes, id)?;
        }
        let mut view = self.view.write();
        let mut pending = lock(&self.pending);
        for id in ids {
            // Its unrevoked copy waiting for the batch writer is stale now.
            pending.remove(&*id);
            // One removed since the look above was written, not deleted:
            // it stays for the next call to delete.
            let removed_since = view.record(&id).is_none() && !gone.contains(&id);
            if !removed_since && view.unaudited.get(&id).is_some_and(|q| q.audited) {
                view.unaudited.remove(&id);
            }
        }
        Ok(())
    }

    /// The records of volumes published on `node`.
    pub fn on_node(&self, node: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        let view = self.view.read();
        Ok(view
            .by_node
            .get(node)
            .into_iter()
            .flat_map(|n| &n.ids)
            .filter_map(|id| view.record(id))
            .collect())
    }

    /// Where each volume recorded on `node` is, from the index by node:
    /// costs what the node holds, whatever the cluster holds.
    pub fn placements_on(&self, node: &str) -> Vec<Placement> {
        placements(&self.view.read(), node)
    }

    /// Runs `f` over `node`'s records, borrowed from the index under its
    /// read lock: a heartbeat weighs every record of its node, so copies
    /// would cost more than the answer. Without `wait`, `None` when the
    /// index is locked for writing (a revocation holds it while it sweeps
    /// every record for its pod's).
    pub fn with_node<R>(
        &self,
        node: &str,
        wait: bool,
        f: impl FnOnce(&NodeRecords<'_>) -> R,
    ) -> Option<R> {
        let view = if wait {
            self.view.read()
        } else {
            self.view.try_read()?
        };
        Some(f(&NodeRecords { view: &view, node }))
    }

    /// Whether this controller's index holds a record of `volume_id`.
    pub fn holds(&self, volume_id: &str) -> bool {
        self.view.read().by_id.contains_key(volume_id)
    }

    /// One volume's record, as this controller knows it (for heartbeats:
    /// no store access).
    pub fn known(&self, volume_id: &str) -> Option<VolumeRecord> {
        self.view.read().record(volume_id)
    }

    /// One volume's record. With a shared store, the store's record wins
    /// when it is revoked or this controller has none (another controller
    /// issued or revoked it).
    pub fn get(&self, volume_id: &str) -> Result<Option<VolumeRecord>, StoreError> {
        let local = self.known(volume_id);
        if !self.shared || local.as_ref().is_some_and(|r| r.revoked) {
            return Ok(local);
        }
        let stored = self
            .store
            .get::<VolumeRecord>(Table::Volumes, volume_id)?
            .map(|r| r.meta);
        match stored {
            Some(s) if s.revoked || local.is_none() => {
                let mut view = self.view.write();
                if !view.by_id.contains_key(volume_id) && view.unaudited.contains_key(volume_id) {
                    // Removed here, its stored copy kept only for its audit:
                    // revoked, and not taken back into the view.
                    return Ok(Some(VolumeRecord { revoked: true, ..s }));
                }
                // As the view keeps it (revoked if its pod is).
                view.insert(&s);
                Ok(view.record(volume_id))
            }
            _ => Ok(local),
        }
    }

    /// Forgets a volume (its pod is gone). One queued for its audit keeps
    /// its stored copy until it is audited ([`Issued::write_audited`]
    /// deletes it then): a restart must still find it.
    pub fn remove(&self, volume_id: &str) -> Result<(), StoreError> {
        {
            let mut view = self.view.write();
            lock(&self.pending).remove(volume_id);
            view.remove(volume_id);
            if view.unaudited.contains_key(volume_id) {
                return Ok(());
            }
        }
        let _writing = lock(&self.writing);
        // Issued again since (a new fetch for the id): that record stands,
        // and the batch writer, waiting on this lock, writes it next.
        if self.known(volume_id).is_some() {
            return Ok(());
        }
        self.store.delete(Table::Volumes, volume_id)
    }

    /// The records a listing asks for (each filter unset: any), revoked
    /// ones included, by volume id.
    pub fn listing(&self, wanted: &Listing<'_>) -> Vec<VolumeRecord> {
        let mut v = self.matching_all(|k| {
            wanted.principal.is_none_or(|p| k.holds_keytab(p))
                && wanted.namespace.is_none_or(|n| &*k.namespace == n)
                && wanted.node.is_none_or(|n| &*k.node == n)
        });
        v.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        v
    }

    /// How many volumes each node holds.
    pub fn count_by_node(&self) -> HashMap<String, usize> {
        self.view
            .read()
            .by_node
            .iter()
            .map(|(n, ids)| (n.to_string(), ids.ids.len()))
            .collect()
    }

    /// Volumes whose keytab holds `principal`.
    pub fn holding_principal(&self, principal: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self.matching(|v| v.holds_keytab(principal)))
    }

    /// Volumes holding key ring `id`.
    pub fn holding_key(&self, id: &str) -> Result<Vec<VolumeRecord>, StoreError> {
        Ok(self.matching(|v| v.keys.iter().any(|k| &**k == id)))
    }

    fn matching(&self, wanted: impl Fn(&KeptVolume) -> bool) -> Vec<VolumeRecord> {
        self.matching_all(|v| !v.revoked && wanted(v))
    }

    /// The records `wanted` picks, made in turns of [`LIST_TURN`] under
    /// the view's lock: a fetch waiting to write to the view (and every
    /// reader after it) waits for one turn, not for records to be made
    /// for the whole index. Only the first pass, which runs `wanted` and
    /// keeps the ids it picks, holds the lock across the whole index (a
    /// few milliseconds at 100,000 volumes). A record removed between
    /// turns is left out.
    fn matching_all(&self, wanted: impl Fn(&KeptVolume) -> bool) -> Vec<VolumeRecord> {
        let ids: Vec<Arc<str>> = self
            .view
            .read()
            .by_id
            .iter()
            .filter(|(_, v)| wanted(v))
            .map(|(id, _)| Arc::clone(id))
            .collect();
        let mut records = Vec::with_capacity(ids.len());
        for turn in ids.chunks(LIST_TURN) {
            let view = self.view.read();
            records.extend(turn.iter().filter_map(|id| {
                let kept = view.by_id.get(id)?;
                wanted(kept).then(|| kept.record(id))
            }));
            // Straight to a writer waiting (a fetch recording its volume),
            // before this listing's next turn.
            RwLockReadGuard::unlock_fair(view);
        }
        records
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    /// A record of one keytab; other modules' tests use it too.
    pub(crate) fn record(id: &str, node: &str, pod_uid: &str) -> VolumeRecord {
        VolumeRecord {
            volume_id: id.into(),
            node: node.into(),
            namespace: "web".into(),
            pod: format!("pod-{id}"),
            pod_uid: pod_uid.into(),
            keytabs: BTreeSet::from(["HTTP/web@R".to_string()]),
            ticket: None,
            certs: BTreeSet::new(),
            keys: BTreeSet::new(),
            versions: BTreeMap::new(),
            issued_unix: 0,
            generation: String::new(),
            revoked: false,
        }
    }

    /// The operator of these tests' revocations.
    fn by() -> Revoker {
        Revoker {
            admin: "ops@R".into(),
            reason: "key leaked".into(),
        }
    }

    /// The ids handed to the audit now.
    fn late_ids(i: &Issued) -> Vec<String> {
        i.unaudited_revocations(None)
            .expect("unaudited")
            .into_iter()
            .map(|l| l.record.volume_id)
            .collect()
    }

    fn store(dir: &std::path::Path) -> Arc<Store> {
        Arc::new(
            Store::open(&dir.join("store.redb"), MasterKey::from_bytes([7; 32])).expect("store"),
        )
    }

    #[test]
    fn a_nodes_mark_moves_with_each_change_to_its_records_only() {
        let mut view = View::default();
        let mark = |v: &View, node: &str| NodeRecords { view: v, node }.changed();
        view.insert(&record("v1", "node-a", "u1"));
        view.insert(&record("v2", "node-b", "u2"));
        let (a, b) = (mark(&view, "node-a"), mark(&view, "node-b"));
        assert!(a > 0 && b > a);
        view.insert(&record("v3", "node-b", "u3"));
        assert_eq!(mark(&view, "node-a"), a, "another node's change");
        let b = mark(&view, "node-b");
        // A pod's revocation, as synced from a shared store.
        view.revoke_pods(["u1".to_string()]);
        assert!(mark(&view, "node-a") > a);
        assert_eq!(mark(&view, "node-b"), b);
        let a = mark(&view, "node-a");
        view.revoke_pods(["u1".to_string()]);
        assert_eq!(mark(&view, "node-a"), a, "a revocation known already");
        // A record moved: both nodes change.
        view.insert(&record("v3", "node-a", "u3"));
        assert!(mark(&view, "node-a") > a && mark(&view, "node-b") > b);
        // Every record gone and one back: never an earlier mark again.
        let a = mark(&view, "node-a");
        view.remove("v1");
        view.remove("v3");
        assert_eq!(mark(&view, "node-a"), 0);
        view.insert(&record("v4", "node-a", "u4"));
        assert!(mark(&view, "node-a") > a);
    }

    /// Waits until the batch writer (lingering 50 ms) has written what
    /// `issued` took.
    async fn written_behind(issued: &Issued) {
        for _ in 0..100 {
            if lock(&issued.pending).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_node_sees_only_its_own_volumes_and_a_restart_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let issued = Issued::new(Arc::clone(&st), false).expect("issued");
        issued.put(&record("v1", "node-a", "u1")).expect("put");
        issued.put(&record("v2", "node-b", "u2")).expect("put");
        // A pod re-published on another node moves with its record.
        issued.put(&record("v3", "node-a", "u3")).expect("put");
        issued.put(&record("v3", "node-b", "u3")).expect("put");
        let on = |i: &Issued, n: &str| -> Vec<String> {
            let mut v: Vec<_> = i
                .on_node(n)
                .expect("on node")
                .into_iter()
                .map(|r| r.volume_id)
                .collect();
            v.sort();
            v
        };
        assert_eq!(on(&issued, "node-a"), ["v1"]);
        assert_eq!(on(&issued, "node-b"), ["v2", "v3"]);
        issued
            .revoke(&record("v2", "node-b", "u2"), &[], &by())
            .1
            .expect("revoke");
        issued.remove("v1").expect("remove");
        written_behind(&issued).await;
        drop(issued);
        // A restarted controller loads the view from the store.
        let again = Issued::new(st, false).expect("reloaded");
        assert_eq!(on(&again, "node-a"), Vec::<String>::new());
        assert_eq!(on(&again, "node-b"), ["v2", "v3"]);
        assert!(
            again.pod_revoked("u2").expect("revoked"),
            "revocations survive a restart"
        );
        assert_eq!(again.count_by_node().get("node-b"), Some(&2));
    }

    #[tokio::test]
    async fn a_listing_filters_and_sorts_and_lets_a_fetch_record_between_its_turns() {
        let dir = tempfile::tempdir().expect("dir");
        let issued = Arc::new(Issued::new(store(dir.path()), false).expect("issued"));
        let volumes = 3 * LIST_TURN;
        for i in 0..volumes {
            let node = if i % 2 == 0 { "node-a" } else { "node-b" };
            issued
                .put(&record(&format!("v{i:05}"), node, &format!("u{i}")))
                .expect("put");
        }
        let on_b = issued.listing(&Listing {
            node: Some("node-b"),
            ..Listing::default()
        });
        assert_eq!(on_b.len(), volumes / 2);
        assert!(on_b.iter().all(|r| r.node == "node-b"));
        assert!(on_b.windows(2).all(|w| w[0].volume_id < w[1].volume_id));
        let none = issued.listing(&Listing {
            principal: Some("HTTP/other@R"),
            ..Listing::default()
        });
        assert!(none.is_empty());
        let revoked = record("v00001", "node-b", "u1");
        let _ = issued.revoke(&revoked, std::slice::from_ref(&revoked), &by());
        let listed = issued.listing(&Listing {
            namespace: Some("web"),
            node: Some("node-b"),
            ..Listing::default()
        });
        assert_eq!(listed.len(), volumes / 2, "revoked volumes are listed too");
        assert!(listed[0].revoked && !listed[1].revoked);

        // A listing held at the end of its first turn until a fetch waits
        // to record its volume: the fetch records it before the listing's
        // next turn, not after the whole listing.
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        let looked = AtomicUsize::new(0);
        let recorded = AtomicBool::new(false);
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel::<()>();
        let recorded_before_next_turn = std::thread::scope(|scope| {
            let (issued, looked, recorded) = (&issued, &looked, &recorded);
            let lister = scope.spawn(move || {
                let seen = std::sync::OnceLock::new();
                let all = issued.matching_all(|_| {
                    // The first pass picks ids, then the turns make records.
                    let n = looked.fetch_add(1, SeqCst) + 1;
                    if n == volumes + LIST_TURN {
                        let _ = waiting_rx.recv_timeout(std::time::Duration::from_secs(10));
                        // Until the fetch waits for the lock (parking_lot
                        // marks it taken as soon as a writer waits).
                        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
                        while !issued.view.is_locked_exclusive()
                            && std::time::Instant::now() < until
                        {
                            std::thread::yield_now();
                        }
                    } else if n == volumes + LIST_TURN + 1 {
                        // Recorded already, unless it waits for this
                        // listing: then not within these 2 s either.
                        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
                        while !recorded.load(SeqCst) && std::time::Instant::now() < until {
                            std::thread::yield_now();
                        }
                        let _ = seen.set(recorded.load(SeqCst));
                    }
                    true
                });
                (all.len(), seen.get().copied())
            });
            while looked.load(SeqCst) < volumes {
                std::thread::yield_now();
            }
            waiting_tx.send(()).expect("send");
            issued
                .put(&record("v-new", "node-a", "u-new"))
                .expect("put");
            recorded.store(true, SeqCst);
            let (listed, seen) = lister.join().expect("lister");
            assert_eq!(listed, volumes);
            seen
        });
        assert_eq!(
            recorded_before_next_turn,
            Some(true),
            "the fetch's record waited for the whole listing"
        );
    }

    #[tokio::test]
    async fn a_revoked_volume_or_pod_is_never_recorded_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issued = Issued::new(store(dir.path()), false).expect("issued");
        issued.put(&record("v1", "node-a", "u1")).expect("put");
        issued
            .revoke(&record("v1", "node-a", "u1"), &[], &by())
            .1
            .expect("revoke");
        assert!(matches!(
            issued.put(&record("v1", "node-a", "u1")),
            Err(PutError::Revoked(_))
        ));
        // Another volume id of the same pod is refused too.
        assert!(matches!(
            issued.put(&record("v9", "node-a", "u1")),
            Err(PutError::Revoked(_))
        ));
        assert!(
            issued
                .holding_principal("HTTP/web@R")
                .expect("holders")
                .is_empty()
        );
    }

    /// Revoking one volume revokes its pod's others as well, as a
    /// restarted controller (or a peer taking in the pod's revocation)
    /// marks them: every controller answers the node's heartbeats alike.
    #[tokio::test]
    async fn a_revocation_takes_the_pods_other_volumes_as_every_controller_sees_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let issued = Issued::new(Arc::clone(&st), false).expect("issued");
        issued.put(&record("v1", "node-a", "u1")).expect("put");
        // The pod's other volume, recorded on another node.
        issued.put(&record("v2", "node-b", "u1")).expect("put");
        issued.put(&record("v3", "node-a", "u3")).expect("put");
        let mark = |i: &Issued| i.with_node("node-b", true, |n| n.changed());
        let before = mark(&issued);
        let (revoked, written) = issued.revoke(&record("v1", "node-a", "u1"), &[], &by());
        written.expect("revoke");
        assert_eq!(revoked.newly, ["v1", "v2"], "the named volume first");
        assert!(
            mark(&issued) > before,
            "the other node's heartbeat hears it"
        );
        let marked = |i: &Issued| -> Vec<(String, bool)> {
            let mut v: Vec<_> = ["node-a", "node-b"]
                .into_iter()
                .flat_map(|n| i.placements_on(n))
                .map(|p| (p.volume_id.to_string(), p.revoked))
                .collect();
            v.sort();
            v
        };
        let expected = [
            ("v1".to_string(), true),
            ("v2".to_string(), true),
            ("v3".to_string(), false),
        ];
        assert_eq!(marked(&issued), expected);
        let (again, written) = issued.revoke(&record("v2", "node-b", "u1"), &[], &by());
        written.expect("again");
        assert!(again.newly.is_empty(), "nothing is revoked twice");
        let all: Vec<&str> = again.records.iter().map(|r| r.volume_id.as_str()).collect();
        assert_eq!(all, ["v2", "v1"], "yet all are written and wiped again");
        written_behind(&issued).await;
        drop(issued);
        let again = Issued::new(st, false).expect("reloaded");
        assert_eq!(marked(&again), expected, "a restart marks the same");
    }

    /// With a shared store, a volume of the pod that only the store holds
    /// (issued through another controller) is found, revoked and written.
    #[tokio::test]
    async fn a_revocation_takes_a_volume_of_the_pod_issued_through_a_peer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let issued = Issued::new(Arc::clone(&st), true).expect("issued");
        issued.put(&record("v1", "node-a", "u1")).expect("put");
        let peers = record("v4", "node-a", "u1");
        st.put(Table::Volumes, "v4", &peers, b"")
            .expect("a peer's record");
        let v1 = issued.known("v1").expect("v1");
        let known = issued.pod_records(&v1).expect("pod records");
        assert_eq!(known, [peers]);
        let (revoked, written) = issued.revoke(&v1, &known, &by());
        written.expect("revoke");
        assert_eq!(revoked.newly, ["v1", "v4"]);
        assert!(issued.placements_on("node-a").iter().all(|p| p.revoked));
        let stored = st
            .get::<VolumeRecord>(Table::Volumes, "v4")
            .expect("read")
            .expect("kept");
        assert!(stored.meta.revoked, "written revoked for every controller");

        // A later copy in the store (renewed through the peer) is what
        // the revocation writes, revoked.
        issued.put(&record("v7", "node-a", "u3")).expect("put");
        issued.put(&record("v8", "node-a", "u3")).expect("put");
        let renewed = VolumeRecord {
            issued_unix: 100,
            versions: BTreeMap::from([("HTTP/web@R".to_string(), 5)]),
            ..record("v8", "node-a", "u3")
        };
        st.put(Table::Volumes, "v8", &renewed, b"")
            .expect("the peer's renewal");
        let v7 = issued.known("v7").expect("v7");
        let known = issued.pod_records(&v7).expect("pod records");
        let (revoked, written) = issued.revoke(&v7, &known, &by());
        written.expect("revoke");
        assert_eq!(revoked.newly, ["v7", "v8"]);
        let stored = st
            .get::<VolumeRecord>(Table::Volumes, "v8")
            .expect("read")
            .expect("kept")
            .meta;
        assert!(stored.revoked);
        assert_eq!(stored.versions.get("HTTP/web@R"), Some(&5), "{stored:?}");

        // A peer revoked the pod first (its volume's record says so; the
        // sync has not brought it yet): that volume was audited there.
        issued.put(&record("v5", "node-a", "u2")).expect("put");
        issued.put(&record("v6", "node-a", "u2")).expect("put");
        let peer_revoked = VolumeRecord {
            revoked: true,
            ..record("v6", "node-a", "u2")
        };
        st.put(Table::Volumes, "v6", &peer_revoked, b"")
            .expect("the peer's revocation");
        let v5 = issued.known("v5").expect("v5");
        let known = issued.pod_records(&v5).expect("pod records");
        let (revoked, written) = issued.revoke(&v5, &known, &by());
        written.expect("revoke");
        assert_eq!(revoked.newly, ["v5"], "v6 is not audited twice");
        assert_eq!(revoked.records.len(), 2, "both wiped");
    }

    /// Two controllers' indexes on one store.
    struct Peers {
        _dir: tempfile::TempDir,
        st: Arc<Store>,
        a: Issued,
        b: Issued,
    }

    fn peers() -> Peers {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        Peers {
            a: Issued::new(Arc::clone(&st), true).expect("a"),
            b: Issued::new(Arc::clone(&st), true).expect("b"),
            st,
            _dir: dir,
        }
    }

    /// `b` records `listed` (pod `uid`, all on node-b, written), `a` lists
    /// the pod's volumes through the first, `b` records `unlisted` (written
    /// behind if `flush`), and `a` revokes the first, as [`by`].
    async fn revoke_while_recording(
        p: &Peers,
        uid: &str,
        listed: &[&str],
        unlisted: &[&str],
        flush: bool,
    ) -> Revocation {
        for id in listed {
            p.b.put(&record(id, "node-b", uid)).expect("put");
        }
        written_behind(&p.b).await;
        let named = p.a.get(listed[0]).expect("get").expect("read through");
        let known = p.a.pod_records(&named).expect("pod records");
        for id in unlisted {
            p.b.put(&record(id, "node-b", uid)).expect("put");
        }
        if flush {
            written_behind(&p.b).await;
        }
        let (revoked, written) = p.a.revoke(&named, &known, &by());
        written.expect("revoke");
        revoked
    }

    /// Two controllers on one store: a volume recorded on one while the
    /// other revokes its pod (after that one listed the pod's volumes) is
    /// revoked by the first once it takes the revocation in, and handed to
    /// its audit as the operator's: not by the revoking controller, not for
    /// a volume the revoking controller knew and audited, again until it is
    /// audited and written (a failed audit is tried again; a restart hands
    /// it over again), and never after.
    #[tokio::test]
    async fn a_volume_recorded_while_a_peer_revokes_its_pod_is_handed_to_its_audit_until_written() {
        let p = peers();
        let (st, a, b) = (Arc::clone(&p.st), p.a.clone(), p.b.clone());
        // a lists u1's volumes, b records v2 for u1, a revokes.
        let revoked = revoke_while_recording(&p, "u1", &["v1"], &["v2"], true).await;
        assert_eq!(revoked.newly, ["v1"]);
        // And u2, knowing both of its volumes: each audited by a.
        let revoked = revoke_while_recording(&p, "u2", &["v3", "v4"], &[], true).await;
        assert_eq!(revoked.newly, ["v3", "v4"]);
        assert!(late_ids(&a).is_empty(), "a audited what it revoked");

        b.take_in_revocations().expect("sync");
        assert!(
            b.placements_on("node-b").iter().all(|p| p.revoked),
            "{:?}",
            b.placements_on("node-b")
        );
        let late = b.unaudited_revocations(None).expect("unaudited");
        assert_eq!(
            late,
            [LateRevocation {
                record: b.known("v2").expect("v2"),
                pod: Some(RevokedPod {
                    volume_id: "v1".into(),
                    by: Some(by()),
                }),
            }]
        );
        assert!(late[0].record.revoked);
        assert!(late_ids(&b).is_empty(), "handed to one caller at a time");
        b.audit_failed(["v2"]);
        assert_eq!(late_ids(&b), ["v2"], "until audited");
        let restarted = Issued::new(Arc::clone(&st), true).expect("restart");
        assert_eq!(late_ids(&restarted), ["v2"], "until written");

        b.audited(["v2"]);
        assert!(late_ids(&b).is_empty(), "audited: only its write is left");
        b.write_audited().expect("write");
        let stored = st
            .get::<VolumeRecord>(Table::Volumes, "v2")
            .expect("read")
            .expect("kept");
        assert!(stored.meta.revoked);
        assert!(b.view.read().unaudited.is_empty());
        let restarted = Issued::new(Arc::clone(&st), true).expect("restart");
        assert!(late_ids(&restarted).is_empty(), "audited once");
    }

    /// This controller's own revocation of a pod the sync revoked here:
    /// the named volume is audited by it; another the sync revoked and
    /// nobody audited yet stays queued for the caller's late audit (the
    /// pod's entry still names the first revoker), its record as it was in
    /// the store (neither written revoked before its audit nor dropped from
    /// the batch writer's queue).
    #[tokio::test]
    async fn a_revocation_leaves_what_the_sync_revoked_here_queued_for_its_late_audit() {
        let p = peers();
        let (st, b) = (Arc::clone(&p.st), p.b.clone());
        revoke_while_recording(&p, "u3", &["v5"], &["v6", "v7"], false).await;
        b.take_in_revocations().expect("sync");

        let v6 = b.known("v6").expect("v6");
        let known = b.pod_records(&v6).expect("pod records");
        let other = Revoker {
            admin: "other@R".into(),
            reason: "again".into(),
        };
        let (revoked, written) = b.revoke(&v6, &known, &other);
        written.expect("revoke");
        assert!(revoked.newly.is_empty(), "the sync revoked them all before");
        assert_eq!(revoked.records.len(), 3, "all wiped");
        let late = b.unaudited_revocations(None).expect("unaudited");
        assert_eq!(
            late,
            [LateRevocation {
                record: b.known("v7").expect("v7"),
                pod: Some(RevokedPod {
                    volume_id: "v5".into(),
                    by: Some(by()),
                }),
            }],
            "audited as the first revocation's"
        );
        written_behind(&b).await;
        let stored = |id: &str| stored_revoked(&st, id);
        assert_eq!(stored("v6"), Some(true));
        assert_eq!(stored("v7"), Some(false), "written unrevoked until audited");
    }

    /// Two revocations of one pod at once: a's operator listed v4 (and
    /// audited it), then a's sync took in c's revocation, which missed v4,
    /// before a's revocation was written. v4 is a's revocation's, written
    /// revoked by it and gone from the queue: audited once.
    #[tokio::test]
    async fn a_volume_the_revocation_listed_leaves_the_queue_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let (a, c) = (
            Issued::new(Arc::clone(&st), true).expect("a"),
            Issued::new(Arc::clone(&st), true).expect("c"),
        );
        a.put(&record("v1", "node-a", "u1")).expect("put");
        c.put(&record("v3", "node-c", "u1")).expect("put");
        written_behind(&a).await;
        written_behind(&c).await;
        let v3 = c.known("v3").expect("v3");
        let c_known = c.pod_records(&v3).expect("c lists");
        a.put(&record("v4", "node-a", "u1")).expect("put");
        written_behind(&a).await;
        let v1 = a.known("v1").expect("v1");
        let a_known = a.pod_records(&v1).expect("a lists");
        c.revoke(&v3, &c_known, &by()).1.expect("c revokes");
        a.take_in_revocations().expect("a syncs");
        assert_eq!(late_ids(&a), ["v4"], "v1 was audited by c");
        let (revoked, written) = a.revoke(&v1, &a_known, &by());
        written.expect("a revokes");
        assert_eq!(revoked.newly, ["v3"], "v1 and v4 were revoked by the sync");
        assert_eq!(
            a.queued_revocations(),
            0,
            "v1 and v4 audited by a's operator"
        );
        assert!(late_ids(&a).is_empty());
    }

    /// One controller's index (store not shared): `v1` recorded and
    /// written, the pod's volumes listed through it (as an operator's
    /// revocation does), then `v2` recorded, not yet written behind.
    async fn listed_then_recorded(st: &Arc<Store>) -> (Issued, VolumeRecord, Vec<VolumeRecord>) {
        let b = Issued::new(Arc::clone(st), false).expect("b");
        b.put(&record("v1", "node-b", "u1")).expect("put");
        written_behind(&b).await;
        let v1 = b.known("v1").expect("v1");
        let known = b.pod_records(&v1).expect("pod records");
        b.put(&record("v2", "node-b", "u1")).expect("put");
        (b, v1, known)
    }

    /// Whether the store holds `id` revoked (`None`: not at all).
    fn stored_revoked(st: &Store, id: &str) -> Option<bool> {
        st.get::<VolumeRecord>(Table::Volumes, id)
            .expect("read")
            .map(|r| r.meta.revoked)
    }

    /// A controller's own revocation with a volume of the pod recorded
    /// after its operator's listing (not audited by the caller, not yet
    /// written behind): queued for the caller's late audit and written
    /// not revoked, so even a crash before that audit leaves it to find;
    /// once audited, written revoked.
    #[tokio::test]
    async fn a_volume_recorded_after_the_listing_is_written_unrevoked_until_audited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let (b, v1, known) = listed_then_recorded(&st).await;
        let (revoked, written) = b.revoke(&v1, &known, &by());
        written.expect("revoke");
        assert_eq!(revoked.newly, ["v1", "v2"]);
        let stored = |id: &str| stored_revoked(&st, id);
        assert_eq!(stored("v1"), Some(true));
        assert_eq!(stored("v2"), Some(false), "written, not revoked");
        let restarted = Issued::new(Arc::clone(&st), false).expect("restart");
        assert_eq!(late_ids(&restarted), ["v2"]);
        let late = b.unaudited_revocations(Some("u1")).expect("late");
        assert_eq!(late.len(), 1);
        assert!(
            b.unaudited_revocations(Some("u2"))
                .expect("late")
                .is_empty()
        );
        b.audited(["v2"]);
        b.write_audited().expect("write");
        assert_eq!(stored("v2"), Some(true));
        assert_eq!(b.queued_revocations(), 0);
    }

    /// A queued record removed while its audited write is under way is
    /// deleted after it (by the next write), never left revoked in the
    /// store for a pod that is gone. Many removed records ahead of it
    /// (each deleted in turn) hold the write open.
    #[test]
    fn a_record_removed_while_its_audited_write_runs_is_deleted_after_it() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let _guard = rt.enter();
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let gone: Vec<String> = (0..300).map(|i| format!("g{i:03}")).collect();
        for id in gone.iter().map(String::as_str).chain(["r"]) {
            let rec = record(id, "node-b", "u1");
            st.put(Table::Volumes, id, &rec, b"").expect("put");
        }
        let pod = RevokedPod {
            volume_id: "g000".into(),
            by: Some(by()),
        };
        st.put(Table::Revocations, "u1", &pod, b"").expect("entry");
        let b = Issued::new(Arc::clone(&st), false).expect("load");
        assert_eq!(b.queued_revocations(), 301, "each found unaudited");
        for id in &gone {
            b.remove(id).expect("remove");
        }
        b.audited(gone.iter().map(String::as_str).chain(["r"]));
        let writer = b.clone();
        let writing = std::thread::spawn(move || writer.write_audited());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stored_revoked(&st, "r") != Some(true) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        b.remove("r").expect("remove r");
        writing.join().expect("join").expect("write");
        b.write_audited().expect("write again");
        assert_eq!(stored_revoked(&st, "r"), None, "deleted");
        assert_eq!(b.queued_revocations(), 0);
    }

    /// A volume the revocation queued is not handed to an audit (whose
    /// write, revoked, could land first) before the revocation's own write
    /// of it (not revoked) has landed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_queued_volume_is_handed_to_its_audit_only_after_the_revocations_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let (b, v1, known) = listed_then_recorded(&st).await;
        let writing = lock(&b.writing);
        let revoking = b.clone();
        let revocation = std::thread::spawn(move || revoking.revoke(&v1, &known, &by()).1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while b.queued_revocations() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(b.queued_revocations(), 1, "queued by the sweep");
        assert!(late_ids(&b).is_empty(), "its write has not landed");
        drop(writing);
        revocation.join().expect("join").expect("revoke");
        assert_eq!(late_ids(&b), ["v2"]);
    }

    /// A queued volume removed before its audit (its pod finished) is
    /// still audited, from the record as it was when revoked; its stored
    /// copy stays until then (a restart still finds it; a read does not
    /// take it back), and goes after.
    #[tokio::test]
    async fn a_queued_volume_removed_before_its_audit_is_still_audited() {
        let p = peers();
        let (st, b) = (Arc::clone(&p.st), p.b.clone());
        revoke_while_recording(&p, "u1", &["v1"], &["v2"], true).await;
        b.take_in_revocations().expect("sync");
        b.remove("v2").expect("remove");
        let copy = b.get("v2").expect("get").expect("stored copy");
        assert!(copy.revoked);
        assert!(b.known("v2").is_none(), "not taken back by a read");
        assert_eq!(late_ids(&b), ["v2"]);
        let restarted = Issued::new(Arc::clone(&st), true).expect("restart");
        assert_eq!(
            late_ids(&restarted),
            ["v2"],
            "kept in the store until audited"
        );
        b.audited(["v2"]);
        b.write_audited().expect("write");
        assert!(b.view.read().unaudited.is_empty());
        assert!(
            st.get::<VolumeRecord>(Table::Volumes, "v2")
                .expect("read")
                .is_none(),
            "deleted once audited"
        );
    }

    /// A store holding a revoked volume beside its pod's unrevoked others
    /// (written before revocations took the whole pod, or by a peer): the
    /// others are revoked on loading, whichever comes first, and when a
    /// revoked record arrives through a read.
    #[tokio::test]
    async fn a_revoked_record_on_loading_or_reading_takes_its_pods_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = store(dir.path());
        let revoked = |id: &str, uid: &str| VolumeRecord {
            revoked: true,
            ..record(id, "node-a", uid)
        };
        for r in [
            record("v5", "node-a", "u5"),
            revoked("v6", "u5"),
            revoked("v7", "u7"),
            record("v8", "node-a", "u7"),
            record("v9", "node-a", "u9"),
        ] {
            st.put(Table::Volumes, &r.volume_id, &r, b"").expect("put");
        }
        let loaded = Issued::new(Arc::clone(&st), false).expect("issued");
        let revoked_ids = |i: &Issued| -> Vec<String> {
            let mut v: Vec<String> = i
                .placements_on("node-a")
                .into_iter()
                .filter(|p| p.revoked)
                .map(|p| p.volume_id.to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(revoked_ids(&loaded), ["v5", "v6", "v7", "v8"]);

        // Read through (a shared store): a peer revoked v9's pod.
        let shared = Issued::new(Arc::clone(&st), true).expect("shared");
        shared.put(&record("v10", "node-a", "u9")).expect("put");
        st.put(Table::Volumes, "v9", &revoked("v9", "u9"), b"")
            .expect("a peer's revocation");
        let read = shared.get("v9").expect("get").expect("known");
        assert!(read.revoked);
        assert!(
            revoked_ids(&shared).contains(&"v10".to_string()),
            "{:?}",
            revoked_ids(&shared)
        );
    }

    /// A store write that hangs (an etcd member gone silent) holds up the
    /// removal or revocation waiting on it, never a fetch or a heartbeat,
    /// which need only the view; and a volume issued again while its
    /// removal waits keeps its record.
    #[test]
    fn a_slow_store_write_never_holds_up_fetches_or_heartbeats() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let _guard = rt.enter();
        let cluster = kcred_testetcd::EtcdCluster::start(1).expect("start etcd");
        let connect = || {
            let mut opts = crate::store::etcd::EtcdOptions::plain(cluster.endpoints(), "/kcred/");
            opts.timeout = Duration::from_secs(20);
            Arc::new(Store::with_backend(
                Arc::new(crate::store::etcd::Etcd::connect(opts).expect("connect")),
                MasterKey::from_bytes([7; 32]),
            ))
        };
        let issued = Issued::new(connect(), true).expect("issued");
        for (id, uid) in [("v1", "u1"), ("v2", "u2"), ("v3", "u3")] {
            issued.put(&record(id, "node-a", uid)).expect("put");
        }
        let flushed = |i: &Issued| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !lock(&i.pending).is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(lock(&i.pending).is_empty(), "records written");
        };
        flushed(&issued);

        cluster.freeze(0);
        let (a, b) = (issued.clone(), issued.clone());
        let removal = std::thread::spawn(move || a.remove("v1"));
        let revocation =
            std::thread::spawn(move || b.revoke(&record("v2", "node-a", "u2"), &[], &by()).1);
        std::thread::sleep(Duration::from_millis(300));
        // The view answers at once: the removal and the revocation show,
        // and a new issue (v1 again, and v4) is taken.
        let (tx, rx) = std::sync::mpsc::channel();
        let c = issued.clone();
        std::thread::spawn(move || {
            let placed: Vec<_> = c.placements_on("node-a");
            let revoked = c.put(&record("v2", "node-a", "u2"));
            c.put(&record("v1", "node-a", "u1")).expect("put v1 again");
            c.put(&record("v4", "node-a", "u4")).expect("put v4");
            let _ = tx.send((placed, revoked.is_err()));
        });
        let (placed, refused) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the view answered while the store hung");
        cluster.thaw(0);
        assert!(
            refused,
            "a revoked volume is refused before the store hears of it"
        );
        let ids: BTreeSet<&str> = placed.iter().map(|p| &*p.volume_id).collect();
        assert_eq!(ids, BTreeSet::from(["v2", "v3"]));
        removal.join().expect("join").expect("removal written");
        revocation
            .join()
            .expect("join")
            .expect("revocation written");
        flushed(&issued);

        let again = Issued::new(connect(), true).expect("reloaded");
        let mut stored: Vec<_> = again
            .on_node("node-a")
            .expect("on node")
            .into_iter()
            .map(|r| (r.volume_id, r.revoked))
            .collect();
        stored.sort();
        assert_eq!(
            stored,
            [
                ("v1".to_string(), false),
                ("v2".to_string(), true),
                ("v3".to_string(), false),
                ("v4".to_string(), false)
            ]
        );
    }
}
