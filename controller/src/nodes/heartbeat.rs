//! A heartbeat's answer: the lease is renewed, and the node learns which of
//! the volumes it holds it must wipe.
//!
//! - **revoked**: an operator revoked the volume (a repeat of the pushed
//!   WIPE, for nodes that missed it);
//! - **stale**: the volume's pod is gone from the controller's view,
//!   finished, or bound elsewhere (a node that was lost and came back finds its pods
//!   rescheduled): the node wipes and unmounts it. While that view is
//!   behind its source (not listed yet, or its watch down), only for a
//!   pod it shows stopped: one it does not show may run. Nothing is
//!   released then.
//!
//! The node's word never removes the controller's records (a record leaves
//! when its pod is gone from the controller's own view, audited as
//! `release`), and a heartbeat
//! never tells a node anything about another node's volumes: a volume
//! recorded on another node is treated as unknown.
//!
//! A heartbeat costs what its node holds: it reads the node's own entries
//! of the in-memory issued-volume index ([`crate::issued::Issued::with_node`])
//! and one pod lookup per volume it lists, never the whole table nor the
//! store; and a heartbeat repeating a list all kept last time takes those
//! verdicts again, without the lookups, while nothing they rest on moved
//! ([`crate::nodes::held::Steady`]). The records the node does not list
//! are judged all again only when a pod stopped running on the node
//! since the last such sweep (or after
//! [`crate::nodes::held::SWEEP_EVERY_SECS`]); otherwise only those it
//! stopped listing are ([`crate::nodes::held::Held::unlisted`]).
//! (When a revocation holds the index's write lock while it sweeps every
//! record, the handler waits for it on a blocking thread; otherwise it
//! answers at once, without the hop.) Only a release
//! (rare: a pod gone) writes to the store, off the async workers.

use std::sync::Arc;

use kcred_audit::{Action, Actor, AuditEvent};
use kcred_proto::kcred::v1::{HeartbeatResponse, Reason};

use crate::issued::{Placement, PlacementRef};
use crate::nodes::held::{Steady, Unlisted, Word, list_digest};
use crate::reasons::Refusal;
use crate::state::ControllerState;

/// A heartbeat's outcome: the answer to the node, and the records the
/// controller may now forget (audited first, by [`release`]).
pub struct Answer {
    /// What the node is told.
    pub response: HeartbeatResponse,
    /// Volumes of this node whose pods are gone from the controller's own
    /// view and that the node no longer holds.
    pub releasable: Vec<Placement>,
    /// The node's recorded volumes it listed (for [`crate::nodes::held`];
    /// `None`: the same as its last heartbeat's).
    pub listed: Option<Vec<Arc<str>>>,
    /// What to remember with them: when it was judged (the list is as of
    /// then, however long the releases take), the sweep (`None`: the pod
    /// view could not tell, so the next heartbeat sweeps), and whether
    /// the next heartbeat listing the same volumes may take these verdicts
    /// as they are (see [`Steady`]).
    pub word: Word,
}

/// The verdict on the volumes `node` says it holds, waiting for the
/// issued-volume index if it is locked.
pub fn answer(st: &ControllerState, node: &str, held: &[String]) -> Result<Answer, Refusal> {
    judge(st, node, held, true).unwrap_or_else(|| unreachable_wait(node))
}

/// [`answer`] without waiting: `None` when the issued-volume index is
/// locked for writing (then call [`answer`] where blocking is fine).
pub fn try_answer(
    st: &ControllerState,
    node: &str,
    held: &[String],
) -> Option<Result<Answer, Refusal>> {
    judge(st, node, held, false)
}

/// A waiting read always gets the index; kept total rather than panic.
fn unreachable_wait(node: &str) -> Result<Answer, Refusal> {
    Err(Refusal::new(
        Reason::Internal,
        format!("the issued-volume index could not be read for node {node}"),
    ))
}

fn judge(
    st: &ControllerState,
    node: &str,
    held: &[String],
    wait: bool,
) -> Option<Result<Answer, Refusal>> {
    if let Some(why) = kcred_proto::limits::heartbeat_too_large(held.len()) {
        return Some(Err(Refusal::new(Reason::RequestInvalid, why)));
    }
    let mut sorted: Vec<&str> = held.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let listed_by_node = |id: &str| sorted.binary_search(&id).is_ok();
    let digest = list_digest(&sorted);
    // Read before the pod view is: a departure after this is judged
    // again at the next heartbeat.
    let departures = st.pods.departures_from(node);
    let view_behind = st.pods.is_stale();
    let now = kcred_audit::timefmt::now_unix();
    let last = (!view_behind)
        .then(|| st.held.steady(node, &digest, departures, now))
        .flatten();
    st.issued.with_node(node, wait, |records| {
        let marks = Steady {
            records: records.changed(),
        };
        let word = |swept, steady| Word {
            at_unix: now,
            swept,
            steady,
            digest,
        };
        // The same list, and nothing its verdicts rest on moved: kept
        // again, with nothing new to release, and without reading a name
        // or a pod per volume (most heartbeats).
        if let Some((steady, sweep)) = last
            && steady == marks
        {
            return Ok(Answer {
                response: HeartbeatResponse {
                    lease_ttl_secs: st.leases.ttl().as_secs(),
                    stale_volume_ids: Vec::new(),
                    revoked_volume_ids: Vec::new(),
                },
                releasable: Vec::new(),
                listed: None,
                word: word(Some(sweep), Some(marks)),
            });
        }
        let unlisted = st.held.unlisted(node, &sorted, departures, now);
        // This node's records only: a volume recorded on another node, or
        // on none (a record lost to a crash must not cut a running pod
        // off), is unknown here and stays.
        let mut stale = Vec::new();
        let mut revoked = Vec::new();
        let mut listed = Vec::new();
        for id in held {
            let Some(p) = records.get(id) else {
                continue;
            };
            listed.push(Arc::clone(p.volume_id));
            match verdict(st, node, &p, view_behind) {
                Verdict::Keep => {}
                Verdict::Revoked => revoked.push(id.clone()),
                Verdict::Stale => stale.push(id.clone()),
            }
        }
        let steady =
            (!view_behind && listed.len() == held.len() && stale.is_empty() && revoked.is_empty())
                .then_some(marks);
        // Records of volumes the node no longer holds whose pods are gone
        // from the controller's own view (or rebound): records leave on
        // the controller's knowledge, never on the node's word alone. An
        // empty list from the node removes nothing whose pod still runs
        // there.
        let may_release = |p: &PlacementRef<'_>| {
            !p.revoked()
                && !listed_by_node(p.volume_id)
                && matches!(verdict(st, node, p, view_behind), Verdict::Stale)
        };
        let releasable = match &unlisted {
            // Nothing is released on a view that cannot tell.
            _ if view_behind => Vec::new(),
            Unlisted::All(_) => records
                .all()
                .filter(may_release)
                .map(|p| p.to_placement())
                .collect(),
            Unlisted::Dropped(ids, _) => ids
                .iter()
                .filter_map(|id| records.get(id))
                .filter(may_release)
                .map(|p| p.to_placement())
                .collect(),
        };
        Ok(Answer {
            response: HeartbeatResponse {
                lease_ttl_secs: st.leases.ttl().as_secs(),
                stale_volume_ids: stale,
                revoked_volume_ids: revoked,
            },
            releasable,
            listed: Some(listed),
            word: word((!view_behind).then(|| unlisted.sweep()), steady),
        })
    })
}

enum Verdict {
    Keep,
    Revoked,
    Stale,
}

/// Revoked volumes stay mounted, emptied, until their pod goes. While the
/// pod view is behind its source (not listed yet after a start, or its
/// watch down), only a pod it shows stopped (finished, or bound
/// elsewhere) is known not to run: one it does not show, or shows under
/// another UID, may run.
fn verdict(st: &ControllerState, node: &str, p: &PlacementRef<'_>, view_behind: bool) -> Verdict {
    let (namespace, pod, uid) = (p.namespace(), p.pod(), p.pod_uid());
    let runs = || st.pods.runs_on(namespace, pod, uid, node);
    let may_run = || view_behind && !st.pods.stopped_on(namespace, pod, uid, node);
    if p.revoked() {
        Verdict::Revoked
    } else if runs() || may_run() {
        Verdict::Keep
    } else {
        Verdict::Stale
    }
}

/// Forgets released volumes, each audited first (`release`): no record,
/// no release. The store's deletes run off the async workers. Whatever
/// stays for a failure is judged again at the node's next heartbeat. A
/// volume another heartbeat is releasing, or has released since this one
/// judged it, is left alone: each release is audited once.
pub async fn release(st: &Arc<ControllerState>, node: &str, released: Vec<Placement>) {
    for p in released {
        let Some(_releasing) = st.held.releasing(&p.volume_id) else {
            continue;
        };
        // Off the async workers: a revocation holds the index's lock
        // while it sweeps every record.
        let (state, id) = (Arc::clone(st), Arc::clone(&p.volume_id));
        match tokio::task::spawn_blocking(move || state.issued.holds(&id)).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, volume = %p.volume_id, "cannot look a volume record up");
                st.held.release_failed(node);
                continue;
            }
        }
        let event = AuditEvent::new(Actor::Controller, Action::Release)
            .with_subject(p.volume_id.to_string())
            .with_place(node, &*p.namespace, &*p.pod)
            .with_reason(format!(
                "pod {}/{} (uid {}) is gone from the controller's view and node {node} no longer holds the volume",
                p.namespace, p.pod, p.pod_uid
            ));
        if let Err(e) = st.record(vec![event]).await {
            tracing::error!(error = %e, volume = %p.volume_id, "cannot audit a release; the record stays");
            st.held.release_failed(node);
            return;
        }
        let state = Arc::clone(st);
        let id = Arc::clone(&p.volume_id);
        let removed = match tokio::task::spawn_blocking(move || state.issued.remove(&id)).await {
            Ok(removed) => removed.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match removed {
            Ok(()) => {
                tracing::info!(volume = %p.volume_id, %node, "volume released: its pod is gone")
            }
            Err(e) => {
                tracing::warn!(error = %e, volume = %p.volume_id, "cannot release a volume record");
                st.held.release_failed(node);
            }
        }
    }
}
