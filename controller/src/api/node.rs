//! `kcred.v1.NodeCredentials`: what a node driver calls to fill a volume.
//!
//! Every decision is audited before it takes effect: a denial names the
//! rule that refused, and a bundle leaves only after its issue records are
//! on disk (if the audit cannot be written, nothing is issued).

use std::sync::Arc;

use kcred_proto::kcred::v1::node_credentials_server::NodeCredentials;
use kcred_proto::kcred::v1::{Bundle, FetchBundleRequest, PodRef};
use tonic::{Request, Response, Status};

use crate::annotations::CredentialRequest;
use crate::audit::{Action, AuditEvent};
use crate::bundle;
use crate::gate::Priority;
use crate::names;
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
    Ok(pod)
}

#[tonic::async_trait]
impl NodeCredentials for NodeApi {
    async fn fetch_bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<Response<Bundle>, Status> {
        let started = std::time::Instant::now();
        let result = self.fetch(request.into_inner()).await;
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
}

impl NodeApi {
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
        let policy = st.policy.get();
        let role = match policy.authorize(&pod.namespace, &wants) {
            Ok(r) => r.clone(),
            Err(denied) => {
                let msg = denied.to_string();
                return Err(self.deny(node, pod_ref, msg, denied.into()).await);
            }
        };
        let priority = if req.refresh {
            Priority::Background
        } else {
            Priority::Starting
        };
        let issued = bundle::assemble(st, node, &pod, &role, &wants, priority).await?;
        // Fail closed: no record, no credential.
        st.record(issued.events).await.map_err(|e| {
            tracing::error!(error = %e, "audit log unavailable; nothing issued");
            Status::unavailable(format!("audit log unavailable, nothing issued: {e}"))
        })?;
        tracing::info!(
            pod = %who, node, role = %role.login, generation = %issued.bundle.generation,
            refresh_after = issued.bundle.refresh_after_unix, refresh = req.refresh, "issued bundle"
        );
        Ok(issued.bundle)
    }
}
