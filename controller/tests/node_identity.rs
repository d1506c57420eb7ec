//! Issue 11, item 5: a node's host key never reaches a pod, from knowledge
//! that survives restarts (nodes ever seen) and covers nodes not seen yet
//! (configured patterns), whatever the policy grants.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Files, Running};
use kcred_proto::kcred::v1::{FetchBundleRequest, HeartbeatRequest, PodRef, Reason};
use kcred_proto::reason::reason_of;

const POLICY: &str = r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
namespaces = ["web"]
service_principals = ["host/node-1.example.test", "host/n9.nodes.example.test", "host/node-7.example.test"]
"#;

/// Pods on node-2 asking for other machines' host keys.
const PODS: &str = r#"
[[pods]]
namespace = "web"
name = "steal-node-1"
uid = "u1"
node_name = "node-2.example.test"
run_as_user = 1500
run_as_group = 1500
annotations = { "kcred.io/keytabs" = "host/node-1.example.test" }

[[pods]]
namespace = "web"
name = "steal-pattern"
uid = "u2"
node_name = "node-2.example.test"
run_as_user = 1500
run_as_group = 1500
annotations = { "kcred.io/keytabs" = "host/n9.nodes.example.test" }
"#;

fn files() -> Files {
    let f = Files::new("[reserved]\nhost_patterns = [\"*.nodes.example.test\"]\n");
    std::fs::write(f.path("policy.toml"), POLICY).unwrap();
    std::fs::write(f.path("pods.toml"), PODS).unwrap();
    f
}

async fn fetch(c: &Running, pod: &str, uid: &str) -> Result<(), tonic::Status> {
    c.node_client()
        .await
        .fetch_bundle(FetchBundleRequest {
            node_name: "node-2.example.test".into(),
            pod: Some(PodRef {
                namespace: "web".into(),
                name: pod.into(),
                uid: uid.into(),
                service_account: "default".into(),
            }),
            volume_id: format!("vol-{uid}"),
            refresh: false,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_seen_before_a_restart_keeps_its_host_key_reserved() {
    let f = files();
    let c = Running::start(&f.config).await;
    // node-1 heartbeats once; it never runs a pod.
    c.node_client()
        .await
        .heartbeat(HeartbeatRequest {
            node_name: "node-1.example.test".into(),
            volume_ids: vec![],
        })
        .await
        .expect("heartbeat");
    c.stop().await;

    // After the restart: no lease, no pod on node-1, only the registry.
    let c = Running::start(&f.config).await;
    let err = fetch(&c, "steal-node-1", "u1").await.expect_err("reserved");
    assert_eq!(reason_of(&err), Some(Reason::ReservedIdentity), "{err:?}");
    assert!(
        err.message().contains("a node's host key"),
        "{}",
        err.message()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_never_seen_is_reserved_by_its_pattern() {
    let f = files();
    let c = Running::start(&f.config).await;
    let err = fetch(&c, "steal-pattern", "u2")
        .await
        .expect_err("reserved");
    assert_eq!(reason_of(&err), Some(Reason::ReservedIdentity), "{err:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_never_seen_nor_matched_is_up_to_the_policy() {
    // The control: without a heartbeat from node-1, the refusal is not
    // the reserved rule (the KDC is unreachable here, so it fails later).
    let f = files();
    let c = Running::start(&f.config).await;
    let err = fetch(&c, "steal-node-1", "u1").await.expect_err("no KDC");
    assert_ne!(reason_of(&err), Some(Reason::ReservedIdentity), "{err:?}");
    c.stop().await;
}
