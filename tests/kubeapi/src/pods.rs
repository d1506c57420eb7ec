//! Pods: what the server adds when one is created (a UID, the `default`
//! service account, phase `Pending`), and the changes kubelet and the
//! scheduler make that a test performs directly (binding, phase).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};

use crate::objects::{Params, parse_body};
use crate::server::Shared;
use crate::status::{ApiError, json_response};
use crate::store::Store;

/// Fills what the API server defaults on a new pod.
pub fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        spec.service_account_name = Some("default".into());
    }
    let status = pod.status.get_or_insert_with(PodStatus::default);
    if status.phase.is_none() {
        status.phase = Some("Pending".into());
    }
}

/// `POST /api/v1/namespaces/{ns}/pods`: defaults, then admission
/// (mutating webhooks, then validating ones), then storage.
pub async fn create_request(
    State(shared): State<Arc<Shared>>,
    Path(params): Params,
    body: Bytes,
) -> Response {
    let ns = params.get("ns").cloned().unwrap_or_default();
    match create_pod(&shared, &ns, &body).await {
        Ok(p) => json_response(StatusCode::CREATED, &p),
        Err(e) => e.into_response(),
    }
}

async fn create_pod(shared: &Shared, ns: &str, body: &[u8]) -> Result<Pod, ApiError> {
    let mut pod = parse_body::<Pod>(ns, body)?;
    default_pod(&mut pod);
    let pod = crate::admission::admit(&shared.store, pod).await?;
    shared.store.create(pod)
}

/// A pod as an application team would write it: one container, in
/// `namespace`, not yet scheduled.
pub fn new_pod(namespace: &str, name: &str) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates a pod as the API server would from a client's request
/// (defaults applied; admission webhooks are not called).
pub fn create(store: &Store, mut pod: Pod) -> Result<Pod, ApiError> {
    default_pod(&mut pod);
    store.create(pod)
}

/// Binds a pod to a node (what the scheduler's binding does).
pub fn bind(store: &Store, namespace: &str, name: &str, node: &str) -> Result<Pod, ApiError> {
    store.update::<Pod>(namespace, name, |p| {
        p.spec.get_or_insert_with(PodSpec::default).node_name = Some(node.into());
        Ok(())
    })
}

/// Sets a pod's phase (what kubelet reports: `Running`, `Succeeded`, ...).
pub fn set_phase(store: &Store, namespace: &str, name: &str, phase: &str) -> Result<Pod, ApiError> {
    store.update::<Pod>(namespace, name, |p| {
        p.status.get_or_insert_with(PodStatus::default).phase = Some(phase.into());
        Ok(())
    })
}
