//! Revoked volumes nobody audited: taken in from a shared store with the
//! revocations other controllers made (for heartbeats' answers too), then
//! audited here and wiped on their nodes.
//!
//! A revocation lists its pod's volumes (the store's too, with several
//! controllers), audits each, then writes those records revoked and the
//! pod's entry. A volume recorded between that listing and that entry (a
//! fetch that asked the store before the entry existed) is revoked with
//! its pod but was audited by nobody. Its record in the store says so:
//! only audited records are written revoked, before the pod's entry, so a
//! stored copy not revoked beside the entry marks a volume nobody audited,
//! across restarts and controllers. On the revoking controller the
//! revocation itself audits such a volume right after; on another, the one
//! holding it does when it takes the entry in, as the entry's revoker and
//! for their reason. Either then writes it revoked, so nobody audits it
//! again. Whatever fails is tried again here, every [`REVOCATION_SYNC`].

use std::sync::Arc;

use kcred_audit::{Action, Actor, AuditError, AuditEvent};
use kcred_proto::kcred::v1::volume_update::Action as UpdateAction;
use tokio::task::JoinHandle;

use crate::issued::{LateRevocation, REVOCATION_SYNC, RevokedPod, Revoker};
use crate::state::ControllerState;

/// Runs [`sync`] every [`REVOCATION_SYNC`] until the task is aborted.
pub fn spawn(state: Arc<ControllerState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_SYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sync(&state).await;
            state
                .metrics
                .revocations_unaudited
                .set(i64::try_from(state.issued.queued_revocations()).unwrap_or(i64::MAX));
        }
    })
}

/// Takes in the store's revocations, then audits, writes and wipes the
/// revoked volumes nobody audited. Returns how many it audited.
/// What fails is logged and tried again at the next sync: a volume stays
/// queued (and revoked) until its audit and its store write are done.
pub async fn sync(st: &ControllerState) -> usize {
    let issued = st.issued.clone();
    let late = tokio::task::spawn_blocking(move || {
        if let Err(e) = issued.take_in_revocations() {
            tracing::warn!(error = %e, "cannot take in the store's revocations; trying again");
        }
        // Audited earlier, but not written then.
        if let Err(e) = issued.write_audited() {
            tracing::warn!(error = %e, "audited revocations not written yet; trying again");
        }
        issued.unaudited_revocations(None)
    })
    .await;
    let late = match late {
        Ok(Ok(late)) if !late.is_empty() => late,
        Ok(Ok(_)) => return 0,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot look for unaudited revocations; trying again");
            return 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "revocation sync failed");
            return 0;
        }
    };
    if audit_late(st, &late).await.is_err() {
        return 0;
    }
    for l in &late {
        let (_, reason) = event(l);
        st.updates
            .send_by_node(UpdateAction::Wipe, std::slice::from_ref(&l.record), &reason);
    }
    late.len()
}

/// Audits volumes [`crate::issued::Issued::unaudited_revocations`] handed
/// over, then has them written revoked; hands them back if the audit
/// fails (the next sync tries again), and says why.
pub async fn audit_late(st: &ControllerState, late: &[LateRevocation]) -> Result<(), AuditError> {
    if late.is_empty() {
        return Ok(());
    }
    let ids = || late.iter().map(|l| l.record.volume_id.as_str());
    if let Err(e) = st.record(late.iter().map(|l| event(l).0).collect()).await {
        tracing::error!(
            error = %e,
            volumes = late.len(),
            "cannot audit volumes revoked with their pod; trying again"
        );
        st.issued.audit_failed(ids());
        return Err(e);
    }
    st.issued.audited(ids());
    let issued = st.issued.clone();
    match tokio::task::spawn_blocking(move || issued.write_audited()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "audited revocations not written yet; trying again")
        }
        Err(e) => tracing::error!(error = %e, "writing audited revocations failed"),
    }
    Ok(())
}

/// The reason audited for a volume revoked because its pod's volume
/// `named` was: the revocation's own siblings and the late ones alike.
pub fn with_pod(reason: &str, named: &str) -> String {
    format!("{reason} (revoked with its pod's volume {named})")
}

/// As a revocation audits a volume of the pod it did not name, as the
/// pod's (first) revoker; with the reason (also the wipe's).
fn event(late: &LateRevocation) -> (AuditEvent, String) {
    let v = &late.record;
    let (actor, reason) = match &late.pod {
        Some(RevokedPod {
            volume_id,
            by: Some(Revoker { admin, reason }),
        }) => (Actor::Admin(admin.clone()), with_pod(reason, volume_id)),
        Some(RevokedPod { volume_id, .. }) => {
            (Actor::Controller, with_pod("reason not kept", volume_id))
        }
        None => (
            Actor::Controller,
            "revoked with its pod (reason not kept)".to_string(),
        ),
    };
    let reason = format!("{reason}; audited late");
    let event = AuditEvent::new(actor, Action::Revoke)
        .with_subject(v.volume_id.clone())
        .with_place(&v.node, &v.namespace, &v.pod)
        .with_reason(reason.clone());
    (event, reason)
}
