//! Issue 12, rotation fan-out: a rotation over many volumes of one role on
//! a node is fetched with one `FetchBundles` call per distinct credential,
//! each volume still checked and audited on its own. Real processes:
//! controller, node driver, kcredctl, MIT realm.

use std::path::Path;
use std::time::Duration;

use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::volume_result::Outcome;
use kcred_proto::kcred::v1::{FetchBundlesRequest, Reason, VolumeRequest};
use kcred_tests::audit::{Action, Decision};
use kcred_tests::ha::{metric, scrape};
use kcred_tests::procs::{NODE_A, OPERATOR, ProcStack};
use kcred_tests::{Kubelet, TestPod};
use tonic::Code;

const VOL: &str = "kcred";
const PRINCIPAL: &str = "HTTP/web.example.com";

/// The kvnos `klist -k` lists for `principal` in the keytab at `path`.
fn klist_kvnos(stack: &ProcStack, path: &Path, principal: &str) -> Vec<u32> {
    let out = stack
        .realm
        .command("klist")
        .arg("-k")
        .arg(path)
        .output()
        .expect("klist");
    assert!(
        out.status.success(),
        "klist -k {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut kvnos: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let kvno = words.next()?.parse().ok()?;
            words
                .next()
                .is_some_and(|p| p.starts_with(&format!("{principal}@")))
                .then_some(kvno)
        })
        .collect();
    kvnos.sort_unstable();
    kvnos.dedup();
    kvnos
}

/// A batch request as node-a, proving itself with a fresh token.
fn as_node_a(stack: &ProcStack, req: FetchBundlesRequest) -> tonic::Request<FetchBundlesRequest> {
    let token = stack.node_token(NODE_A).expect("node-a token");
    let mut req = tonic::Request::new(req);
    req.metadata_mut()
        .insert("authorization", token.parse().expect("metadata"));
    req
}

fn volume(pod: &TestPod) -> VolumeRequest {
    VolumeRequest {
        pod: Some(pod.pod_ref()),
        volume_id: Kubelet::volume_id(pod, VOL),
        refresh: true,
        pod_token: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: tmpfs mounts"]
async fn a_rotation_refreshes_every_volume_of_a_role_with_one_batch_call() {
    let mut stack = ProcStack::start_with_metrics("").await.expect("stack");
    let port = stack.metrics_port.expect("metrics port");
    let pods = TestPod::web_replicas(24, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    let mut targets = Vec::new();
    for p in &pods {
        targets.push(stack.kubelet().publish(p, VOL).await.expect("publish"));
    }
    for t in &targets {
        assert_eq!(klist_kvnos(&stack, &t.join("krb5.keytab"), PRINCIPAL), [1]);
    }
    // The driver heartbeats every second: let one list what it holds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = scrape(port).await;
    let singles = metric(&before, "kcred_fetch_bundle_seconds_count", &[]).unwrap_or(0.0);
    assert_eq!(
        metric(&before, "kcred_fetch_bundles_seconds_count", &[]).unwrap_or(0.0),
        0.0,
        "publishes are single fetches"
    );
    let audited = stack.audit_records().len();

    let out = stack.kcredctl(OPERATOR, &["rotate", "keytab", PRINCIPAL, "--wait", "60s"]);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("24 of 24"), "{report}");

    // The new kvno is in every delivered keytab (the old one stays for the
    // grace period), as the Kerberos tools read it.
    for t in &targets {
        assert_eq!(
            klist_kvnos(&stack, &t.join("krb5.keytab"), PRINCIPAL),
            [1, 2],
            "{}",
            t.display()
        );
    }
    // One distinct credential: one batch call, and no volume fetched alone.
    let after = scrape(port).await;
    assert_eq!(
        metric(
            &after,
            "kcred_fetch_bundles_seconds_count",
            &["code=\"Ok\""]
        ),
        Some(1.0),
        "one FetchBundles call for the one credential"
    );
    assert_eq!(
        metric(&after, "kcred_fetch_bundles_seconds_count", &[]),
        Some(1.0),
        "and no failed one"
    );
    assert_eq!(
        metric(&after, "kcred_fetch_bundle_seconds_count", &[]).unwrap_or(0.0),
        singles,
        "no volume was fetched on its own"
    );
    assert_eq!(
        metric(
            &after,
            "kcred_fetch_bundles_volumes_total",
            &["outcome=\"issued\""]
        ),
        Some(24.0)
    );
    // ...and every volume has its own audit record of the new kvno.
    let records = stack.audit_records();
    for p in &pods {
        let issued: Vec<_> = records[audited..]
            .iter()
            .filter(|r| {
                r.action == Action::Refresh
                    && r.decision == Decision::Allow
                    && r.node == NODE_A
                    && r.namespace == "web"
                    && r.pod == p.name
                    && r.subject.starts_with(PRINCIPAL)
                    && r.kvno == Some(2)
            })
            .collect();
        assert_eq!(issued.len(), 1, "{}: {issued:#?}", p.name);
    }
    kcred_tests::unmount_volumes(&stack.path().join("kubelet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: tmpfs mounts"]
async fn a_batch_refuses_just_the_revoked_pod_and_shares_the_others_bundle() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pods = TestPod::web_replicas(3, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    for p in &pods {
        stack.kubelet().publish(p, VOL).await.expect("publish");
    }
    let revoked = Kubelet::volume_id(&pods[1], VOL);
    let out = stack.kcredctl(OPERATOR, &["revoke", &revoked, "--reason", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audited = stack.audit_records().len();

    let mut client = NodeCredentialsClient::new(stack.channel().await.expect("channel"));
    let resp = client
        .fetch_bundles(as_node_a(
            &stack,
            FetchBundlesRequest {
                node_name: NODE_A.into(),
                volumes: pods.iter().map(volume).collect(),
            },
        ))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(resp.volumes.len(), 3);
    assert_eq!(resp.bundles.len(), 1, "equal bundles travel once");
    for (i, (p, v)) in pods.iter().zip(&resp.volumes).enumerate() {
        assert_eq!(v.volume_id, Kubelet::volume_id(p, VOL));
        match (&v.outcome, i) {
            (Some(Outcome::Refused(r)), 1) => {
                assert_eq!(r.reason, Reason::VolumeRevoked as i32, "{r:?}")
            }
            (Some(Outcome::Bundle(0)), 0 | 2) => {}
            other => panic!("volume {i}: {other:?}"),
        }
    }
    let keytab = resp.bundles[0]
        .files
        .iter()
        .find(|f| f.name == "krb5.keytab")
        .expect("a keytab in the shared bundle");
    assert!(!keytab.content.is_empty());

    let records = stack.audit_records();
    let new = &records[audited..];
    let denied: Vec<_> = new
        .iter()
        .filter(|r| r.decision == Decision::Deny)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0].pod, pods[1].name);
    assert_eq!(denied[0].reason, "volume_revoked");
    for p in [&pods[0], &pods[2]] {
        assert_eq!(
            new.iter()
                .filter(|r| r.action == Action::Refresh && r.pod == p.name)
                .count(),
            1,
            "{}: {new:#?}",
            p.name
        );
    }
    kcred_tests::unmount_volumes(&stack.path().join("kubelet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: tmpfs mounts"]
async fn bad_batches_get_invalid_argument_naming_what_is_wrong() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pods = TestPod::web_replicas(2, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    let audited = stack.audit_records().len();
    let mut client = NodeCredentialsClient::new(stack.channel().await.expect("channel"));
    let pod = &pods[0];
    let many: Vec<VolumeRequest> = (0..257)
        .map(|i| VolumeRequest {
            volume_id: format!("vol-{i}"),
            ..volume(pod)
        })
        .collect();
    let empty_id = vec![
        volume(&pods[0]),
        VolumeRequest {
            volume_id: String::new(),
            ..volume(&pods[1])
        },
    ];
    let twice = vec![volume(&pods[0]), volume(&pods[1]), volume(&pods[0])];
    for (volumes, expected) in [
        (many, "257 volumes in one call, at most 256"),
        (empty_id, "volumes[1] (volume_id \"\"): volume_id must be"),
        (twice, "volumes[2]: volume_id"),
        (vec![], "at least one volume"),
    ] {
        let err = client
            .fetch_bundles(as_node_a(
                &stack,
                FetchBundlesRequest {
                    node_name: NODE_A.into(),
                    volumes,
                },
            ))
            .await
            .expect_err(expected);
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(expected), "{expected}: {err:?}");
        assert_eq!(
            kcred_proto::reason::reason_of(&err),
            Some(Reason::RequestInvalid)
        );
    }
    assert!(
        !stack.audit_records()[audited..]
            .iter()
            .any(|r| matches!(r.action, Action::Issue | Action::Refresh)),
        "nothing issued"
    );
}
