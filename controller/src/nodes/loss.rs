//! What a node's lease changes set off: the audit of joins, losses and
//! returns, the lease sweeper, nodes deleted from the cluster, and policy
//! `leases.rotate_keytabs_on_loss`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kcred_audit::timefmt::now_unix_ms;
use kcred_audit::{Action, Actor, AuditEvent, CredentialKind};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::names;
use crate::nodes::known::NodeGone;
use crate::nodes::leases::{LeaseState, Transition};
use crate::reasons::Reasoned;
use crate::state::ControllerState;
use crate::store::StoreError;

/// Sweeps lapsed leases once a second until aborted, on the leader only
/// (with several controllers, the one elected). Each loss is handled off
/// the sweep, so a slow rotation never delays another node's loss.
pub fn spawn_sweeper(state: Arc<ControllerState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if !state.cluster.is_leader() {
                if state.cluster.is_shared() {
                    follow(&state).await;
                }
                continue;
            }
            let transitions = if state.cluster.is_shared() {
                match shared_sweep(&state).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the cluster's heartbeats; no sweep");
                        continue;
                    }
                }
            } else {
                state.leases.sweep(state.connections.last_saturated())
            };
            for t in transitions {
                let st = Arc::clone(&state);
                tokio::spawn(async move { lease_transition(&st, t).await });
            }
        }
    })
}

/// Loses every node the cluster deletes (autoscaling down) at once,
/// without waiting for its lease to lapse. `gone` is subscribed before the
/// node watch starts.
pub fn spawn_deleted_nodes(
    state: Arc<ControllerState>,
    mut gone: Receiver<NodeGone>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match gone.recv().await {
                Ok(NodeGone { name }) => {
                    // Every controller stops the node's renewals; the
                    // leader records the loss, once for the cluster.
                    let Some(t) = state.leases.lose(&name) else {
                        continue;
                    };
                    if !state.cluster.is_leader() {
                        continue;
                    }
                    if state.cluster.is_shared() {
                        match state.cluster.mark_lost(&name, now_unix_ms()).await {
                            Ok(true) => {}
                            Ok(false) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e, node = %name, "cannot record a deleted node's loss for the cluster");
                                continue;
                            }
                        }
                    }
                    let st = Arc::clone(&state);
                    tokio::spawn(async move {
                        transition_because(&st, t, "deleted from the cluster: renewals stop").await
                    });
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(
                    missed = n,
                    "node deletions came faster than they were handled; \
                     the missed nodes are lost when their leases lapse"
                ),
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// A follower's view of the leases (for status): what etcd holds,
/// without declaring anything.
async fn follow(st: &ControllerState) {
    let cluster = &st.cluster;
    if let (Ok(beats), Ok(losses)) = (cluster.heartbeats().await, cluster.losses().await) {
        for (node, at) in beats {
            let lost = losses.get(&node).is_some_and(|&m| at <= m);
            st.leases.observe(&node, at, lost);
        }
    }
}

/// The leader's sweep with several controllers: heartbeats any of them
/// received count, and a loss is declared (and audited) once for the
/// cluster, whichever leader sees it first.
async fn shared_sweep(st: &ControllerState) -> Result<Vec<Transition>, StoreError> {
    let cluster = &st.cluster;
    let (beats, losses) = (cluster.heartbeats().await?, cluster.losses().await?);
    let mut out = Vec::new();
    for (node, &at) in &beats {
        let marked = losses.get(node).copied();
        let returned = marked.is_some_and(|m| at > m);
        if returned {
            cluster.clear_lost(node).await?;
        }
        let lost = marked.is_some() && !returned;
        out.extend(st.leases.observe(node, at, lost));
    }
    for t in st.leases.sweep(st.connections.last_saturated()) {
        let Transition::Lost(node) = &t else {
            continue;
        };
        let last = beats.get(node).copied().unwrap_or_else(now_unix_ms);
        if cluster.mark_lost(node, last).await? {
            out.push(t);
        }
    }
    Ok(out)
}

/// Audits a node joining, being lost, or returning, and applies the
/// policy for lost nodes.
pub async fn lease_transition(st: &ControllerState, t: Transition) {
    transition_because(st, t, "lease lapsed: renewals stop").await
}

async fn transition_because(st: &ControllerState, t: Transition, lost_because: &str) {
    let (node, action, reason) = match &t {
        Transition::Joined(n) => (n, None, "first heartbeat"),
        Transition::Returned(n) => (n, Some(Action::NodeReturned), "heartbeats resumed"),
        Transition::Lost(n) => (n, Some(Action::NodeLost), lost_because),
    };
    tracing::info!(%node, ?t, "node lease changed");
    if let Some(action) = action {
        let event = AuditEvent::new(Actor::Controller, action)
            .with_place(node, "", "")
            .with_reason(reason);
        if let Err(e) = st.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a node lease change");
        }
    }
    if let (Transition::Lost(node), Some(grace)) = (&t, st.rotate_on_loss) {
        // Re-checked: a node back meanwhile keeps its keytabs.
        if st.leases.state(node) == Some(LeaseState::Lost) {
            rotate_keytabs_held_by(st, node, grace).await;
        }
    }
}

/// Every keytab a lost node held gets new keys (the previous kvno stays for
/// the grace period, so other holders keep working while they pick the new
/// one up).
async fn rotate_keytabs_held_by(st: &ControllerState, node: &str, grace: Duration) {
    let principals: BTreeSet<String> = match st.issued.on_node(node) {
        Ok(held) => held
            .into_iter()
            .filter(|v| !v.revoked)
            .flat_map(|v| v.keytabs)
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot list a lost node's volumes");
            return;
        }
    };
    for name in principals {
        let Ok(principal) = names::ServicePrincipal::parse(&name, &st.realm) else {
            continue;
        };
        let result = crate::rotation::rotate_keytab(st, &principal, grace).await;
        let event = AuditEvent::new(Actor::Controller, Action::Rotate)
            .with_kind(CredentialKind::Keytab)
            .with_subject(name.clone())
            .with_place(node, "", "");
        let event = match &result {
            Ok(kvno) => event.with_kvno(*kvno).with_reason(format!(
                "node {node} lost: policy rotates the keytabs it held"
            )),
            Err(e) => event.denied(
                e.reason(),
                format!("rotation after losing node {node} failed: {e}"),
            ),
        };
        if let Err(e) = st.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a rotation");
        }
    }
}
