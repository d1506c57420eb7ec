//! What a pod that stops for good sets off: its volumes are wiped on its
//! node at once, audited, instead of at the node's next heartbeat.
//!
//! Renewals already stop without this (admission refuses a pod the view
//! no longer holds, or holds finished), and the heartbeat tells a node
//! that missed the push. The records stay until the node no longer holds
//! the volumes ([`crate::nodes::heartbeat`] releases them, audited): the
//! controller keeps knowing what a node still holds.

use std::sync::Arc;

use kcred_audit::{Action, Actor, AuditEvent};
use kcred_proto::kcred::v1::volume_update::Action as UpdateAction;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::{GoneCause, PodGone};
use crate::state::ControllerState;

/// Acts on every pod announced on `gone` until the index is dropped.
/// `gone` is subscribed before the pod sources start, so none is missed.
pub fn spawn(state: Arc<ControllerState>, mut gone: Receiver<PodGone>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match gone.recv().await {
                Ok(pod) => retire(&state, &pod).await,
                Err(RecvError::Lagged(n)) => tracing::warn!(
                    missed = n,
                    "pod departures came faster than they were handled; \
                     the nodes learn of the missed ones at their next heartbeat"
                ),
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Audits and pushes a wipe for every volume `pod` holds on its node.
pub async fn retire(st: &ControllerState, pod: &PodGone) {
    if pod.node.is_empty() {
        return;
    }
    let records = match st.issued.on_node(&pod.node) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the node's volume records");
            return;
        }
    };
    let ids: Vec<String> = records
        .into_iter()
        .filter(|r| r.pod_uid == pod.uid && !r.revoked)
        .map(|r| r.volume_id)
        .collect();
    if ids.is_empty() {
        return;
    }
    let why = match pod.cause {
        GoneCause::Deleted => "deleted from the cluster",
        GoneCause::Finished => "finished",
    };
    let reason = format!(
        "pod {}/{} (uid {}) {why}: its volumes are wiped and renewals refused",
        pod.namespace, pod.name, pod.uid
    );
    let events = ids
        .iter()
        .map(|id| {
            AuditEvent::new(Actor::Controller, Action::Revoke)
                .with_subject(id.clone())
                .with_place(&pod.node, &pod.namespace, &pod.name)
                .with_reason(reason.clone())
        })
        .collect();
    // The wipe goes out even if the audit cannot be written: it only takes
    // away, and renewals are refused either way.
    if let Err(e) = st.record(events).await {
        tracing::error!(error = %e, "cannot audit the wipe of a departed pod's volumes");
    }
    let listening = st
        .updates
        .send(&pod.node, UpdateAction::Wipe, ids.clone(), &reason);
    tracing::info!(
        node = %pod.node,
        pod = %format!("{}/{}", pod.namespace, pod.name),
        volumes = ids.len(),
        pushed = listening,
        "pod {why}: volumes wiped"
    );
}
