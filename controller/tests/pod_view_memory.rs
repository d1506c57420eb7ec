//! The pod view keeps little of each pod: 100,000 pods as the API server
//! sends them (labels, the last-applied annotation kubectl adds, two
//! containers with environment) take under 1 KiB each once cut down and
//! indexed, even when every one of them asks for credentials (their
//! `kcred.io/*` annotations are kept). About 460 bytes a pod: the index's
//! table entry, the pod's name and UID; the namespace, node, service
//! account, annotation and container names are shared (interned), not
//! copied per pod.
//!
//! Measured with a counting allocator: what stays allocated after every
//! full `Pod` object is dropped is what the view costs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSecurityContext, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kcred_controller::pods::kube_source::pod_info;
use kcred_controller::pods::{PodIndex, PodList};

mod counting;

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(format!("registry.example.com/team/{name}:1.2.3")),
        env: Some(
            (0..10)
                .map(|i| EnvVar {
                    name: format!("SETTING_{i}"),
                    value: Some(format!("value-{i}-for-{name}")),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn api_pod(i: usize) -> Pod {
    let name = format!("orders-api-7d9f8b6c5d-{i:05}");
    let last_applied = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{{\"name\":\"{name}\"}},{}}}",
        "x".repeat(1500)
    );
    Pod {
        metadata: ObjectMeta {
            namespace: Some(format!("team-{}", i % 200)),
            name: Some(name),
            uid: Some(format!("8c3b1f7e-2a4d-4c9b-9e1f-{i:012}")),
            labels: Some(
                [
                    ("app", "orders-api"),
                    ("pod-template-hash", "7d9f8b6c5d"),
                    ("tier", "backend"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            annotations: Some(
                [
                    ("kcred.io/keytabs", "HTTP/orders.example.com".to_string()),
                    (
                        "kubectl.kubernetes.io/last-applied-configuration",
                        last_applied,
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node-{:04}.example.com", i % 5000)),
            service_account_name: Some("orders".into()),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(1500),
                run_as_group: Some(1500),
                fs_group: Some(1500),
                ..Default::default()
            }),
            containers: vec![container("app"), container("sidecar")],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.1.2.3".into()),
            ..Default::default()
        }),
    }
}

#[test]
fn a_hundred_thousand_pods_asking_for_credentials_take_under_1_kib_each() {
    const PODS: usize = 100_000;
    let before = counting::live();
    let index = PodIndex::default();
    // Pages of 500 full objects, each cut down and kept as it arrives, as
    // the watch lists them.
    let mut list = PodList::default();
    for page in 0..PODS / 500 {
        let full: Vec<Pod> = (page * 500..(page + 1) * 500).map(api_pod).collect();
        list.extend(full.into_iter().filter_map(pod_info));
    }
    index.replace_all(list);
    assert_eq!(index.len(), PODS);
    let kept = counting::live() - before;
    let per_pod = kept as usize / PODS;
    eprintln!("pod view: {kept} bytes for {PODS} pods ({per_pod} bytes each)");
    assert!(per_pod < 1024, "{per_pod} bytes a pod");
}
