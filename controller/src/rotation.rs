//! Rotation without outage.
//!
//! A keytab rotation gives the principal new random keys while keeping the
//! old ones (`cpw -randkey -keepold`), re-extracts it (the keytab now holds
//! both kvnos), and pushes a refresh to every volume holding it: services
//! accept tickets issued under either kvno while clients move over. When
//! the grace period ends, the old keys are purged (`purgekeys -keepkvno`),
//! the keytab re-extracted, and pushed again. Pending purges live in the
//! store, so a restarted controller still ends them.
//!
//! Across controllers, a rotation or purge of a principal holds the same
//! cluster lock as its extraction: two controllers never interleave their
//! steps on one principal (the second waits, then rotates again). Before
//! the first irreversible step (new keys in the KDC) the rotation leaves
//! its pending purge in the store marked `in_progress`; the leader finds
//! such a record once the lock is free (its controller died mid-rotation),
//! re-extracts the keys the KDC now holds and finishes the rotation.
//!
//! A key-ring rotation makes a new primary version; older versions stay
//! delivered for decryption until retired.

use std::sync::Arc;
use std::time::Duration;

use kcred_audit::{Action, Actor, AuditEvent, CredentialKind};
use kcred_proto::kcred::v1::volume_update::Action as UpdateAction;
use serde::{Deserialize, Serialize};

use crate::gate::{Lane, Priority};
use crate::issued::VolumeRecord;
use crate::issuers::IssueError;
use crate::keytab::Keytab;
use crate::names::{Principal, ServicePrincipal};
use crate::state::ControllerState;
use crate::store::{StoreError, Table};
use kcred_audit::timefmt::now_unix;

/// A rotation whose grace period has not ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPurge {
    /// The principal.
    pub principal: String,
    /// The kvno to keep.
    pub keep_kvno: u32,
    /// When to purge older keys, seconds since the epoch.
    pub purge_at_unix: i64,
    /// The rotation has not finished storing its new keys: `keep_kvno` is
    /// the newest kvno before it; whoever finds the record unlocked
    /// finishes the rotation.
    #[serde(default)]
    pub in_progress: bool,
}

/// The cluster lock a principal's extraction, rotations and purges share.
fn lock_name(principal: &Principal) -> String {
    format!("keytab/{principal}")
}

fn newest(keytab: &Keytab) -> u32 {
    keytab.kvnos().iter().max().copied().unwrap_or(0)
}

/// Extracts the principal's keys again and stores them.
async fn reextract(st: &ControllerState, principal: &Principal) -> Result<Keytab, IssueError> {
    let b = st.backends.of(principal.realm())?;
    let keytab = b
        .gate
        .run(Lane::Kadmin, Priority::Starting, "extract_keytab", || {
            b.admin.extract_keytab(principal)
        })
        .await?;
    st.keytabs.store_keytab(principal, &keytab).await?;
    Ok(keytab)
}

/// Stores the keytab a backend produced itself (AD), or extracts the keys
/// the backend now holds (MIT).
async fn stored_or_reextracted(
    st: &ControllerState,
    principal: &Principal,
    produced: Option<Keytab>,
) -> Result<Keytab, IssueError> {
    match produced {
        Some(keytab) => {
            st.keytabs.store_keytab(principal, &keytab).await?;
            Ok(keytab)
        }
        None => reextract(st, principal).await,
    }
}

/// Asks every node holding one of `volumes` to refresh them now.
pub fn push_refresh(st: &ControllerState, volumes: &[VolumeRecord], reason: &str) {
    for node in st
        .updates
        .send_by_node(UpdateAction::Refresh, volumes, reason)
    {
        tracing::info!(%node, "node not connected; it picks the change up at its next refresh");
    }
}

/// Rotations and purges run one at a time in a controller: an operator's
/// rotation, the node-loss policy and a grace period ending must not
/// interleave their randomize / re-extract / store steps (the cluster lock
/// does the same across controllers).
static ROTATIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Rotates a service principal's keys; returns the new kvno. The caller
/// has audited the request.
pub async fn rotate_keytab(
    st: &ControllerState,
    principal: &ServicePrincipal,
    grace: Duration,
) -> Result<u32, IssueError> {
    let _one_at_a_time = ROTATIONS.lock().await;
    let p = Principal::Service(principal.clone());
    let _one_in_cluster = st.cluster.lock(&lock_name(&p)).await?;
    let current = st.keytabs.stored_keytab(&p).await?;
    let purge_at_unix =
        now_unix().saturating_add(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
    // Left before the KDC changes: a controller dying past this point
    // leaves the leader something to finish.
    let started = PendingPurge {
        principal: principal.to_string(),
        keep_kvno: current.as_ref().map(newest).unwrap_or(0),
        purge_at_unix,
        in_progress: true,
    };
    remember(st, started).await?;
    let b = st.backends.of(p.realm())?;
    let rotated = b
        .gate
        .run(Lane::Kadmin, Priority::Starting, "randomize_key", || {
            b.admin.randomize_keep_old(&p, current.as_ref())
        })
        .await?;
    let keytab = stored_or_reextracted(st, &p, rotated).await?;
    let new_kvno = newest(&keytab);
    let purge = PendingPurge {
        principal: principal.to_string(),
        keep_kvno: new_kvno,
        purge_at_unix,
        in_progress: false,
    };
    remember(st, purge).await?;
    let holders = st.issued.holding_principal(&principal.to_string())?;
    push_refresh(
        st,
        &holders,
        &format!("{principal} rotated to kvno {new_kvno}"),
    );
    Ok(new_kvno)
}

/// Records a rotation's pending purge (a durable write, off the workers).
async fn remember(st: &ControllerState, purge: PendingPurge) -> Result<(), StoreError> {
    st.store
        .blocking(move |store| store.put(Table::Rotations, &purge.principal, &purge, b""))
        .await
}

/// Drops a principal's pending purge (a durable write, off the workers).
async fn forget(st: &ControllerState, principal: &str) -> Result<(), StoreError> {
    let name = principal.to_string();
    st.store
        .blocking(move |store| store.delete(Table::Rotations, &name))
        .await
}

/// Ends every grace period that is over. Runs periodically.
pub async fn purge_due(st: &ControllerState) {
    let pending: Vec<(String, PendingPurge, i64)> = match st
        .store
        .blocking(|store| store.list(Table::Rotations))
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read pending purges");
            return;
        }
    };
    for (_, purge, _) in pending
        .into_iter()
        .filter(|(_, p, _)| p.in_progress || p.purge_at_unix <= now_unix())
    {
        let Ok(sp) = ServicePrincipal::parse(&purge.principal, &st.realm) else {
            continue;
        };
        let p = Principal::Service(sp);
        let _one_at_a_time = ROTATIONS.lock().await;
        let _one_in_cluster = match st.cluster.lock(&lock_name(&p)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(principal = %purge.principal, error = %e, "cannot lock for a purge; will retry");
                continue;
            }
        };
        // A rotation may have replaced this purge while we waited.
        let name = purge.principal.clone();
        let now = match st
            .store
            .blocking(move |store| store.get::<PendingPurge>(Table::Rotations, &name))
            .await
        {
            Ok(Some(r)) => r.meta,
            _ => continue,
        };
        if now.in_progress {
            // Nobody holds the lock: the rotating controller died.
            resume(st, &p, &now).await;
            continue;
        }
        if now.keep_kvno != purge.keep_kvno || now.purge_at_unix > now_unix() {
            continue;
        }
        let result = async {
            let current = st.keytabs.stored_keytab(&p).await?;
            let b = st.backends.of(p.realm())?;
            let purged = b
                .gate
                .run(Lane::Kadmin, Priority::Background, "purge_keys", || {
                    b.admin.purge_keys(&p, purge.keep_kvno, current.as_ref())
                })
                .await?;
            stored_or_reextracted(st, &p, purged).await
        }
        .await;
        match result {
            Ok(keytab) => {
                let event = AuditEvent::new(Actor::Controller, Action::Rotate)
                    .with_kind(CredentialKind::Keytab)
                    .with_subject(purge.principal.clone())
                    .with_kvno(purge.keep_kvno)
                    .with_reason(format!("grace period over: kvnos now {:?}", keytab.kvnos()));
                if let Err(e) = st.record(vec![event]).await {
                    tracing::error!(error = %e, "cannot audit the end of a grace period");
                }
                if let Err(e) = forget(st, &purge.principal).await {
                    tracing::error!(error = %e, "cannot clear a finished purge");
                }
                match st.issued.holding_principal(&purge.principal) {
                    Ok(holders) => push_refresh(st, &holders, "old kvno purged"),
                    Err(e) => tracing::error!(error = %e, "cannot list holders"),
                }
                tracing::info!(principal = %purge.principal, keep = purge.keep_kvno, "grace period ended; old keys purged");
            }
            Err(e) => {
                tracing::warn!(principal = %purge.principal, error = %e, "purge failed; will retry")
            }
        }
    }
}

/// The keys to store after a rotation stopped midway. MIT's kadmind kept
/// whatever the rotation made: extract them again, no new keys. AD never
/// shows a key it set, so a lost one is replaced, keeping the stored older
/// versions.
async fn keys_after_interruption(
    st: &ControllerState,
    p: &Principal,
) -> Result<Keytab, IssueError> {
    let b = st.backends.of(p.realm())?;
    if !matches!(*b.admin, crate::kadmin::KeyAdmin::Ad(_)) {
        return reextract(st, p).await;
    }
    let current = st.keytabs.stored_keytab(p).await?;
    let rotated = b
        .gate
        .run(Lane::Kadmin, Priority::Background, "randomize_key", || {
            b.admin.randomize_keep_old(p, current.as_ref())
        })
        .await?;
    stored_or_reextracted(st, p, rotated).await
}

/// Finishes a rotation its controller left half done: stores the keys the
/// KDC holds now and leaves the purge of the older ones pending (or, if
/// the KDC never changed, drops the record).
async fn resume(st: &ControllerState, p: &Principal, started: &PendingPurge) {
    let keytab = match keys_after_interruption(st, p).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(principal = %started.principal, error = %e, "cannot resume a rotation; will retry");
            return;
        }
    };
    let kvno = newest(&keytab);
    if kvno <= started.keep_kvno {
        // The KDC never changed (the rotation failed before its new keys).
        if let Err(e) = forget(st, &started.principal).await {
            tracing::error!(error = %e, "cannot clear a rotation that never started");
        }
        return;
    }
    let purge = PendingPurge {
        keep_kvno: kvno,
        in_progress: false,
        ..started.clone()
    };
    if let Err(e) = remember(st, purge).await {
        tracing::error!(error = %e, "cannot record a resumed rotation");
        return;
    }
    let event = AuditEvent::new(Actor::Controller, Action::Rotate)
        .with_kind(CredentialKind::Keytab)
        .with_subject(started.principal.clone())
        .with_kvno(kvno)
        .with_reason("rotation resumed after its controller stopped".to_string());
    if let Err(e) = st.record(vec![event]).await {
        tracing::error!(error = %e, "cannot audit a resumed rotation");
    }
    match st.issued.holding_principal(&started.principal) {
        Ok(holders) => push_refresh(st, &holders, "rotation resumed"),
        Err(e) => tracing::error!(error = %e, "cannot list holders"),
    }
    tracing::info!(principal = %started.principal, kvno, "resumed a rotation left half done");
}

/// Runs [`purge_due`] every `every` while this controller leads, until
/// the task is aborted.
pub async fn run_purges(st: Arc<ControllerState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // On the leader only; a new leader finds the purges its
        // predecessor left in the store, and ends them.
        if st.cluster.is_leader() {
            purge_due(&st).await;
        }
    }
}
