//! `kcred.v1.NodeCredentials`: what a node driver calls to fill a volume.

use std::sync::Arc;

use kcred_proto::kcred::v1::node_credentials_server::NodeCredentials;
use kcred_proto::kcred::v1::{Bundle, BundleFile, FetchBundleRequest, PodRef};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::annotations::CredentialRequest;
use crate::gate::Priority;
use crate::keytab::Keytab;
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

/// Orders bundle files and digests them so equal bundles compare equal.
fn generation(files: &[BundleFile], uid: u32, gid: u32) -> String {
    let mut h = Sha256::new();
    h.update(uid.to_be_bytes());
    h.update(gid.to_be_bytes());
    for f in files {
        h.update((f.name.len() as u64).to_be_bytes());
        h.update(f.name.as_bytes());
        h.update(f.mode.to_be_bytes());
        h.update((f.content.len() as u64).to_be_bytes());
        h.update(&f.content);
    }
    hex::encode(&h.finalize()[..16])
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
    async fn fetch(&self, req: FetchBundleRequest) -> Result<Bundle, Status> {
        let pod_ref = validate(&req)?;
        let st = &self.state;
        let who = format!("{}/{}", pod_ref.namespace, pod_ref.name);

        // The controller's own view of the pod decides, not the node's word.
        let pod = st
            .pods
            .get(&pod_ref.namespace, &pod_ref.name)
            .ok_or_else(|| {
                Status::not_found(format!("pod {who} is not known to the controller"))
            })?;
        if pod.uid != pod_ref.uid {
            tracing::warn!(pod = %who, node = %req.node_name, "denied: pod uid mismatch");
            return Err(Status::permission_denied(format!(
                "pod {who} has uid {}, but the request names uid {}",
                pod.uid, pod_ref.uid
            )));
        }
        if pod.node_name != req.node_name {
            tracing::warn!(pod = %who, node = %req.node_name, bound = %pod.node_name, "denied: pod on another node");
            return Err(Status::permission_denied(format!(
                "pod {who} is bound to node {:?}, not {:?}",
                pod.node_name, req.node_name
            )));
        }
        let wants = CredentialRequest::from_annotations(&pod.annotations, &st.realm)?;

        let policy = st.policy.get();
        let mut role = None;
        for principal in &wants.keytabs {
            match policy.authorize_keytab(&pod.namespace, principal) {
                Ok(r) => role = Some(r),
                Err(denied) => {
                    tracing::warn!(pod = %who, node = %req.node_name, %principal, reason = %denied, "denied");
                    return Err(denied.into());
                }
            }
        }
        let role = match role {
            Some(r) => r.clone(),
            None => policy.role_for_namespace(&pod.namespace)?.clone(),
        };

        let priority = if req.refresh {
            Priority::Background
        } else {
            Priority::Starting
        };
        let mut keytabs = Vec::with_capacity(wants.keytabs.len());
        for principal in &wants.keytabs {
            keytabs.push(st.keytabs.keytab(principal, priority).await?);
        }
        let keytab = Keytab::merge(keytabs.iter())
            .map_err(|e| Status::internal(format!("merging keytabs: {e}")))?;

        let files = vec![
            BundleFile {
                name: "krb5.conf".into(),
                content: st.pod_krb5_conf.clone(),
                mode: 0o444,
            },
            BundleFile {
                name: "krb5.keytab".into(),
                content: keytab.bytes().to_vec(),
                mode: 0o400,
            },
        ];
        let generation = generation(&files, role.uid, role.gid);
        tracing::info!(
            pod = %who, node = %req.node_name, role = %role.login,
            principals = ?wants.keytabs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            kvnos = ?keytab.kvnos(), %generation, refresh = req.refresh,
            "issued bundle"
        );
        Ok(Bundle {
            files,
            uid: role.uid,
            gid: role.gid,
            generation,
        })
    }
}
