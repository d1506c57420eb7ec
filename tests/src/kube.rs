//! Test pods as Kubernetes objects on the test API server
//! (`kcred-testkube`), for stacks whose controller watches the API.

use k8s_openapi::api::core::v1::{Node, Pod, PodSecurityContext};
use kcred_testkube::{KubeApi, pods};

use crate::kubelet::TestPod;

/// The `Pod` object for a test pod (its UID is the server's to assign).
pub fn pod_object(p: &TestPod) -> Pod {
    let mut pod = pods::new_pod(&p.namespace, &p.name);
    pod.metadata.annotations = Some(p.annotations.iter().cloned().collect());
    if let Some(spec) = pod.spec.as_mut() {
        spec.security_context = Some(PodSecurityContext {
            fs_group: p.fs_group.map(i64::from),
            run_as_user: p.run_as.map(|(u, _)| i64::from(u)),
            run_as_group: p.run_as.map(|(_, g)| i64::from(g)),
            ..Default::default()
        });
    }
    pod
}

/// Creates the pod, binds it to its node and marks it running, as the
/// API server, scheduler and kubelet would; returns the pod with the UID
/// the server gave it.
pub fn run_pod(api: &KubeApi, p: &TestPod) -> anyhow::Result<TestPod> {
    let created = pods::create(api.store(), pod_object(p))?;
    pods::bind(api.store(), &p.namespace, &p.name, &p.node)?;
    pods::set_phase(api.store(), &p.namespace, &p.name, "Running")?;
    let mut p = p.clone();
    p.uid = created.metadata.uid.unwrap_or_default();
    Ok(p)
}

/// Deletes a pod from the API server.
pub fn delete_pod(api: &KubeApi, p: &TestPod) -> anyhow::Result<()> {
    api.store().delete::<Pod>(&p.namespace, &p.name)?;
    Ok(())
}

/// Registers a node (what kubelet does when it joins).
pub fn add_node(api: &KubeApi, name: &str) -> anyhow::Result<()> {
    let mut node = Node::default();
    node.metadata.name = Some(name.into());
    api.store().create(node)?;
    Ok(())
}
