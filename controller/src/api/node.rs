//! `kcred.v1.NodeCredentials`: what a node driver calls to fill a volume.
//!
//! Every decision is audited before it takes effect: a denial names the
//! rule that refused, and a bundle leaves only after its issue records are
//! on disk (if the audit cannot be written, nothing is issued).

use std::sync::Arc;

use std::pin::Pin;

use kcred_audit::{Action, AuditEvent};
use kcred_proto::kcred::v1::node_credentials_server::NodeCredentials;
use kcred_proto::kcred::v1::{
    Bundle, FetchBundleRequest, HeartbeatRequest, HeartbeatResponse, PodRef, VolumeUpdate,
    WatchUpdatesRequest,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::annotations::CredentialRequest;
use crate::bundle;
use crate::gate::Priority;
use crate::issued::VolumeRecord;
use crate::names;
use crate::nodes::leases::{LeaseState, Transition};
use crate::state::ControllerState;

/// Serves bundles to node drivers.
pub struct NodeApi {
    state: Arc<ControllerState>,
}

impl NodeApi {
    /// Builds the service over the controller's state.
    pub fn new(state: Arc<ControllerState>) -> Self {
        NodeApi { state }
    }
}

fn validate(req: &FetchBundleRequest) -> Result<&PodRef, Status> {
    let bad = |m: String| Status::invalid_argument(m);
    names::validate_dns_name("node_name", &req.node_name).map_err(|e| bad(e.to_string()))?;
    let pod = req
        .pod
        .as_ref()
        .ok_or_else(|| bad("pod is required".into()))?;
    names::validate_k8s_name("pod.namespace", &pod.namespace).map_err(|e| bad(e.to_string()))?;
    names::validate_k8s_name("pod.name", &pod.name).map_err(|e| bad(e.to_string()))?;
    if pod.uid.is_empty() || pod.uid.len() > 64 {
        return Err(bad("pod.uid must be 1 to 64 characters".into()));
    }
    // Every issue is tracked by volume (rotation pushes, revocation, list).
    if req.volume_id.is_empty()
        || req.volume_id.len() > 128
        || !req.volume_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad(
            "volume_id must be 1 to 128 printable ASCII characters".into()
        ));
    }
    Ok(pod)
}

#[tonic::async_trait]
impl NodeCredentials for NodeApi {
    type WatchUpdatesStream = Pin<Box<dyn Stream<Item = Result<VolumeUpdate, Status>> + Send>>;

    async fn fetch_bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<Response<Bundle>, Status> {
        let started = std::time::Instant::now();
        let result = match self
            .authenticate(&request, &request.get_ref().node_name)
            .await
        {
            Ok(()) => self.fetch(request.into_inner()).await,
            Err(s) => Err(s),
        };
        let code = match &result {
            Ok(_) => "Ok".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.state
            .metrics
            .fetch_seconds
            .with_label_values(&[&code])
            .observe(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let node = request.get_ref().node_name.clone();
        names::validate_dns_name("node_name", &node)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.authenticate(&request, &node).await?;
        let st = &self.state;
        if let Some(t) = st.leases.heartbeat(&node) {
            self.lease_transition(t).await;
        }
        // Records of volumes the node no longer holds (unpublished) go.
        if let Err(e) = st
            .issued
            .prune_node(&node, &request.get_ref().volume_ids, 120)
        {
            tracing::warn!(error = %e, "cannot prune volume records");
        }
        // Volumes the node holds whose pods are gone or rebound (revoked
        // volumes stay mounted, emptied, until their pod goes).
        let mut stale = Vec::new();
        let mut revoked = Vec::new();
        for id in &request.get_ref().volume_ids {
            let rec = st
                .issued
                .get(id)
                .map_err(|e| Status::internal(e.to_string()))?;
            // No record: nothing known against the volume, so it stays
            // (a record lost to a crash must not cut a running pod off).
            let Some(r) = rec else { continue };
            if r.revoked {
                revoked.push(id.clone());
                continue;
            }
            let bound_here = r.node == node
                && st
                    .pods
                    .get(&r.namespace, &r.pod)
                    .is_some_and(|p| p.uid == r.pod_uid && p.node_name == node);
            if !bound_here {
                stale.push(id.clone());
            }
        }
        Ok(Response::new(HeartbeatResponse {
            lease_ttl_secs: st.leases.ttl().as_secs(),
            stale_volume_ids: stale,
            revoked_volume_ids: revoked,
        }))
    }

    async fn watch_updates(
        &self,
        request: Request<WatchUpdatesRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        let node = request.get_ref().node_name.clone();
        names::validate_dns_name("node_name", &node)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.authenticate(&request, &node).await?;
        let mut rx = self.state.updates.subscribe(&node);
        let mut closing = self.state.closing.subscribe();
        tracing::info!(%node, "node subscribed to updates");
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => return,
                    update = rx.recv() => match update {
                        Ok(u) => {
                            if tx.send(Ok(u)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "a node fell behind its updates; its renewals catch up");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}

impl NodeApi {
    /// Authenticates a node call; refusals are audited.
    async fn authenticate<T>(&self, request: &Request<T>, node: &str) -> Result<(), Status> {
        match self.state.auth.node(request, node) {
            Ok(()) => Ok(()),
            Err(refusal) => {
                tracing::warn!(who = %refusal.who, claimed = %node, error = %refusal.status.message(), "node call refused");
                let event = AuditEvent::new(refusal.who.clone(), Action::Deny)
                    .with_place(node, "", "")
                    .denied(format!("authentication: {}", refusal.status.message()));
                if let Err(e) = self.state.record(vec![event]).await {
                    tracing::error!(error = %e, "cannot audit a refused call");
                }
                Err(refusal.status)
            }
        }
    }

    /// Audits a lease change.
    pub async fn lease_transition(&self, t: Transition) {
        lease_transition(&self.state, t).await
    }

    /// Records a refusal, then returns it.
    async fn deny(&self, node: &str, pod: &PodRef, rule: String, status: Status) -> Status {
        tracing::warn!(node, pod = %format!("{}/{}", pod.namespace, pod.name), reason = %rule, "denied");
        let event = AuditEvent::new(format!("node/{node}"), Action::Deny)
            .with_place(node, &pod.namespace, &pod.name)
            .denied(rule);
        if let Err(e) = self.state.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a denial");
        }
        status
    }

    async fn fetch(&self, req: FetchBundleRequest) -> Result<Bundle, Status> {
        let pod_ref = validate(&req)?;
        let st = &self.state;
        let node = req.node_name.as_str();
        let who = format!("{}/{}", pod_ref.namespace, pod_ref.name);

        // The controller's own view of the pod decides, not the node's word.
        let Some(pod) = st.pods.get(&pod_ref.namespace, &pod_ref.name) else {
            let msg = format!("pod {who} is not known to the controller");
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::not_found(msg))
                .await);
        };
        if pod.uid != pod_ref.uid {
            let msg = format!(
                "pod {who} has uid {}, but the request names uid {}",
                pod.uid, pod_ref.uid
            );
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                .await);
        }
        if pod.node_name != node {
            let msg = format!(
                "pod {who} is bound to node {:?}, not {node:?}",
                pod.node_name
            );
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                .await);
        }
        let wants = match CredentialRequest::from_annotations(&pod.annotations, &st.realm) {
            Ok(w) => w,
            Err(e) => {
                let msg = e.to_string();
                return Err(self
                    .deny(node, pod_ref, msg.clone(), Status::invalid_argument(msg))
                    .await);
            }
        };
        // Identities kcred itself relies on are never handed to pods, whatever
        // the policy says: the KDC's and kadmind's own, the controller's, and
        // a node's host key (a pod holding it could act as that node).
        if let Some(p) = wants.keytabs.iter().find(|p| {
            matches!(p.service(), "krbtgt" | "kadmin" | "kcred")
                || (p.service() == "host"
                    && (st.leases.state(p.host()).is_some() || st.pods.any_on_node(p.host())))
        }) {
            let msg = format!(
                "rule service_principals: {p} is an identity of kcred's own or of a node and is never issued to pods"
            );
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                .await);
        }
        if let Some(name) = wants
            .certs
            .iter()
            .find(|n| st.reserved_cert_names.contains(*n))
        {
            let msg = format!(
                "rule certificates: {name:?} is the controller's own TLS name and is never issued to pods"
            );
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                .await);
        }
        let policy = st.policy.get();
        let role = match policy.authorize(&pod.namespace, &wants) {
            Ok(r) => r.clone(),
            Err(denied) => {
                let msg = denied.to_string();
                return Err(self.deny(node, pod_ref, msg, denied.into()).await);
            }
        };
        let previous = st
            .issued
            .get(&req.volume_id)
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some(p) = &previous
            && (p.node != node || p.pod_uid != pod.uid)
        {
            // A volume id belongs to one pod on one node (kubelet derives it
            // from the pod UID): reusing another's would hijack its record.
            let msg = format!(
                "volume {} belongs to pod uid {} on node {:?}",
                req.volume_id, p.pod_uid, p.node
            );
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                .await);
        }
        if previous.as_ref().is_some_and(|p| p.revoked) || st.issued.pod_revoked(&pod.uid) {
            let msg = format!("volume {} of pod {who} was revoked", req.volume_id);
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                .await);
        }
        if req.refresh && st.leases.state(node) == Some(LeaseState::Lost) {
            let msg = format!("node {node} lost its lease: no renewals until it heartbeats again");
            return Err(self
                .deny(node, pod_ref, msg.clone(), Status::failed_precondition(msg))
                .await);
        }
        let priority = if req.refresh {
            Priority::Background
        } else {
            Priority::Starting
        };
        let issued = bundle::assemble(st, node, &pod, &role, &wants, priority).await?;
        // Fail closed: no record, no credential.
        let mut versions = std::collections::BTreeMap::new();
        for e in &issued.events {
            if let Some(v) = e.kvno.or(e.key_version) {
                versions.insert(e.subject.clone(), v);
            }
        }
        st.record(issued.events).await.map_err(|e| {
            tracing::error!(error = %e, "audit log unavailable; nothing issued");
            Status::unavailable(format!("audit log unavailable, nothing issued: {e}"))
        })?;
        let record = VolumeRecord {
            volume_id: req.volume_id.clone(),
            node: node.to_string(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            keytabs: wants.keytabs.iter().map(|p| p.to_string()).collect(),
            ticket: wants.ticket.clone(),
            certs: wants.certs.clone(),
            keys: wants.keys.clone(),
            versions,
            issued_unix: crate::store::now_unix(),
            generation: issued.bundle.generation.clone(),
            revoked: false,
        };
        match st.issued.put(&record) {
            Ok(()) => {}
            Err(crate::issued::PutError::Revoked(_)) => {
                // Revoked while this fetch was in flight: nothing leaves.
                let msg = format!("volume {} of pod {who} was revoked", req.volume_id);
                return Err(self
                    .deny(node, pod_ref, msg.clone(), Status::permission_denied(msg))
                    .await);
            }
            Err(e) => {
                tracing::error!(error = %e, volume = %req.volume_id, "cannot record the issued volume")
            }
        }
        tracing::info!(
            pod = %who, node, role = %role.login, generation = %issued.bundle.generation,
            refresh_after = issued.bundle.refresh_after_unix, refresh = req.refresh, "issued bundle"
        );
        Ok(issued.bundle)
    }
}

/// Audits a node joining, being lost, or returning.
pub async fn lease_transition(st: &ControllerState, t: Transition) {
    let (node, action, reason) = match &t {
        Transition::Joined(n) => (n, None, "first heartbeat"),
        Transition::Returned(n) => (n, Some(Action::NodeReturned), "heartbeats resumed"),
        Transition::Lost(n) => (n, Some(Action::NodeLost), "lease lapsed: renewals stop"),
    };
    tracing::info!(%node, ?t, "node lease changed");
    if let Some(action) = action {
        let event = AuditEvent::new("controller", action)
            .with_place(node, "", "")
            .with_reason(reason);
        if let Err(e) = st.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a node lease change");
        }
    }
    if let (Transition::Lost(node), Some(grace)) = (&t, st.rotate_on_loss) {
        // Re-checked after the rotation lock: a node back meanwhile keeps
        // its keytabs.
        if st.leases.state(node) == Some(LeaseState::Lost) {
            rotate_lost_nodes_keytabs(st, node, grace).await;
        }
    }
}

/// Policy `leases.rotate_keytabs_on_loss`: every keytab a lost node held
/// gets new keys (the previous kvno stays for the grace period, so other
/// holders keep working while they pick the new one up).
async fn rotate_lost_nodes_keytabs(st: &ControllerState, node: &str, grace: std::time::Duration) {
    let principals: std::collections::BTreeSet<String> = match st.issued.all() {
        Ok(all) => all
            .into_iter()
            .filter(|v| v.node == node && !v.revoked)
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
        let event = AuditEvent::new("controller", Action::Rotate)
            .with_kind("keytab")
            .with_subject(name.clone())
            .with_place(node, "", "");
        let event = match &result {
            Ok(kvno) => event.with_kvno(*kvno).with_reason(format!(
                "node {node} lost: policy rotates the keytabs it held"
            )),
            Err(e) => event.denied(format!("rotation after losing node {node} failed: {e}")),
        };
        if let Err(e) = st.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a rotation");
        }
    }
}
