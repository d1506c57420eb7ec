//! A heartbeat's answer: the lease is renewed, and the node learns which of
//! the volumes it holds it must wipe.
//!
//! - **revoked**: an operator revoked the volume (a repeat of the pushed
//!   WIPE, for nodes that missed it);
//! - **stale**: the volume's pod is gone from the controller's view,
//!   finished, or bound elsewhere (a node that was lost and came back finds its pods
//!   rescheduled): the node wipes and unmounts it.
//!
//! The node's word never removes the controller's records (a record leaves
//! when its pod is gone from the controller's own view, audited as
//! `release`), and a heartbeat
//! never tells a node anything about another node's volumes: a volume
//! recorded on another node is treated as unknown.

use kcred_audit::{Action, Actor, AuditEvent};
use kcred_proto::kcred::v1::{HeartbeatResponse, Reason};

use crate::issued::VolumeRecord;
use crate::reasons::Refusal;
use crate::state::ControllerState;

/// Most volume ids one heartbeat may list (far above what a node mounts).
pub const MAX_HELD: usize = 10_000;

/// A heartbeat's outcome: the answer to the node, and the records the
/// controller may now forget (audited first, by [`release`]).
pub struct Answer {
    /// What the node is told.
    pub response: HeartbeatResponse,
    /// Volumes of this node whose pods are gone from the controller's own
    /// view and that the node no longer holds.
    pub releasable: Vec<VolumeRecord>,
}

/// The verdict on the volumes `node` says it holds.
pub fn answer(st: &ControllerState, node: &str, held: &[String]) -> Result<Answer, Refusal> {
    if held.len() > MAX_HELD {
        return Err(Refusal::new(
            Reason::RequestInvalid,
            format!(
                "volume_ids lists {} volumes; at most {MAX_HELD} are allowed",
                held.len()
            ),
        ));
    }
    let mut stale = Vec::new();
    let mut revoked = Vec::new();
    for id in held {
        // This controller's view: a heartbeat costs what the node holds,
        // never a store read per volume.
        let rec = st.issued.known(id);
        // No record here: nothing known against the volume, so it stays (a
        // record lost to a crash must not cut a running pod off).
        let Some(r) = rec.filter(|r| r.node == node) else {
            continue;
        };
        match verdict(st, node, &r) {
            Verdict::Keep => {}
            Verdict::Revoked => revoked.push(id.clone()),
            Verdict::Stale => stale.push(id.clone()),
        }
    }
    Ok(Answer {
        response: HeartbeatResponse {
            lease_ttl_secs: st.leases.ttl().as_secs(),
            stale_volume_ids: stale,
            revoked_volume_ids: revoked,
        },
        releasable: releasable(st, node, held),
    })
}

enum Verdict {
    Keep,
    Revoked,
    Stale,
}

/// Revoked volumes stay mounted, emptied, until their pod goes.
fn verdict(st: &ControllerState, node: &str, r: &VolumeRecord) -> Verdict {
    if r.revoked {
        return Verdict::Revoked;
    }
    let bound_here = st
        .pods
        .get(&r.namespace, &r.pod)
        .is_some_and(|p| p.uid == r.pod_uid && p.node_name == node && !p.finished);
    if bound_here {
        Verdict::Keep
    } else {
        Verdict::Stale
    }
}

/// Records of volumes the node no longer holds whose pods are gone from
/// the controller's own view (or rebound): records leave on the
/// controller's knowledge, never on the node's word alone. An empty list
/// from the node removes nothing whose pod still runs there.
fn releasable(st: &ControllerState, node: &str, held: &[String]) -> Vec<VolumeRecord> {
    let records = match st.issued.on_node(node) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the node's volume records");
            return Vec::new();
        }
    };
    records
        .into_iter()
        .filter(|r| !r.revoked && !held.contains(&r.volume_id))
        .filter(|r| matches!(verdict(st, node, r), Verdict::Stale))
        .collect()
}

/// Forgets released volumes, each audited first (`release`): no record,
/// no release.
pub async fn release(st: &ControllerState, node: &str, records: Vec<VolumeRecord>) {
    for r in records {
        let event = AuditEvent::new(Actor::Controller, Action::Release)
            .with_subject(r.volume_id.clone())
            .with_place(node, &r.namespace, &r.pod)
            .with_reason(format!(
                "pod {}/{} (uid {}) is gone from the controller's view and node {node} no longer holds the volume",
                r.namespace, r.pod, r.pod_uid
            ));
        if let Err(e) = st.record(vec![event]).await {
            tracing::error!(error = %e, volume = %r.volume_id, "cannot audit a release; the record stays");
            return;
        }
        match st.issued.remove(&r.volume_id) {
            Ok(()) => {
                tracing::info!(volume = %r.volume_id, %node, "volume released: its pod is gone")
            }
            Err(e) => {
                tracing::warn!(error = %e, volume = %r.volume_id, "cannot release a volume record")
            }
        }
    }
}
