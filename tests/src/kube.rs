//! Test pods as Kubernetes objects on the test API server
//! (`kcred-testkube`), for stacks whose controller watches the API.

use k8s_openapi::api::core::v1::{CSIVolumeSource, Node, Pod, PodSecurityContext, Volume};
use kcred_testkube::{KubeApi, pods};

use crate::kubelet::TestPod;
use crate::{Stack, wait_until};

/// The `Pod` object for a test pod (its UID is the server's to assign),
/// with the inline CSI volume `kcred` the admission webhook adds.
pub fn pod_object(p: &TestPod) -> Pod {
    let mut pod = pods::new_pod(&p.namespace, &p.name);
    pod.metadata.annotations = Some(p.annotations.iter().cloned().collect());
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes.get_or_insert_default().push(Volume {
            name: "kcred".into(),
            csi: Some(CSIVolumeSource {
                driver: "csi.kcred.io".into(),
                read_only: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
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

/// Waits until the stack's controller sees the pod bound to its node: the
/// API creates a pod unbound and binds it after, and the watch may show
/// either.
pub async fn wait_bound(stack: &Stack, pod: &TestPod) {
    let pods = stack.pods();
    wait_until("the controller to see the pod on its node", 30, || {
        pods.get(&pod.namespace, &pod.name)
            .is_some_and(|p| p.uid == pod.uid && p.node_name == pod.node)
    })
    .await;
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

/// Runs `kubectl --kubeconfig <api's> <args>`; returns whether it
/// succeeded and what it printed (stdout, then stderr).
pub fn kubectl(api: &KubeApi, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("kubectl (scripts/install-deps.sh installs it): {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

/// `kubectl apply` of a manifest, as a person would run it (the test
/// server serves no OpenAPI documents, hence `--validate=false`).
pub fn kubectl_apply(api: &KubeApi, manifest: &str) -> anyhow::Result<(bool, String)> {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(file.path(), manifest)?;
    let path = file.path().display().to_string();
    kubectl(api, &["apply", "--validate=false", "-f", &path])
}
