//! Issue 14, correct across controllers: real controller processes on a
//! real three-member etcd cluster elect one leader for the cluster's
//! singleton work, share one KDC budget and one single-flight, and see each
//! other's revocations at once.

use std::time::Duration;

use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{Bundle, HeartbeatRequest};
use kcred_testetcd::EtcdCluster;
use kcred_tests::audit::Action;
use kcred_tests::ha::{fetch_volume_as_node_a, kadmind_budget, leader_gauge, records_with};
use kcred_tests::procs::{AUDITOR, NODE_A, OPERATOR, PeerController, ProcStack};
use kcred_tests::{TestPod, wait_until};
use tonic::transport::Channel;

fn etcd_store(etcd: &EtcdCluster) -> String {
    format!(
        "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {:?}\ntimeout_ms = 2000\nleader_lease_secs = 3\n",
        etcd.endpoints()
    )
}

fn elections(log: &str) -> usize {
    log.matches("elected leader").count()
}

/// Two controllers on `config`'s etcd, the first one leading, and web-0's
/// keytab issued through the peer: the start of every leader hand-over
/// test. Returns the stack, the peer, the pod and a channel to the peer.
async fn led_pair_with_web0(config: &str) -> (ProcStack, PeerController, TestPod, Channel) {
    let mut stack = ProcStack::start(config).await.expect("stack");
    let first_log = stack.path().join("controller.log");
    wait_until("the first controller leads", 30, || {
        elections(&std::fs::read_to_string(&first_log).unwrap_or_default()) == 1
    })
    .await;
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let to_peer = stack.channel_to(peer.port).await.expect("channel");
    let token = stack.node_token(NODE_A).expect("token");
    fetch(to_peer.clone(), token, pod.clone())
        .await
        .expect("issued");
    (stack, peer, pod, to_peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_another_takes_over_the_sweeper_and_a_loss_is_recorded_once() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let first_log = stack.path().join("controller.log");
    let first_log_text = || std::fs::read_to_string(&first_log).unwrap_or_default();
    // The first controller is alone at first: it leads.
    wait_until("the first controller leads", 30, || {
        elections(&first_log_text()) == 1
    })
    .await;
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    // node-a heartbeats to the first controller; the leader sees it.
    stack.wait_node_alive(NODE_A).await;
    assert_eq!(
        leader_gauge(peer.metrics_port).await,
        Some(0.0),
        "two leaders"
    );

    // The leader dies, and so does node-a's driver: its lease will lapse
    // with no controller that ever saw its heartbeats alive.
    stack.controller.as_mut().expect("controller").kill9();
    stack.driver.as_mut().expect("driver").kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while leader_gauge(peer.metrics_port).await != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the peer never took over:\n{}",
            peer.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = [
        stack.path().join("audit.log"),
        stack.path().join("audit-2.log"),
    ];
    let logs = [logs[0].as_path(), logs[1].as_path()];
    wait_until("the new leader records node-a's loss", 30, || {
        !records_with(&logs, Action::NodeLost).is_empty()
    })
    .await;

    // The first controller comes back as a follower; then the second dies
    // too, and the first leads again: it finds the loss on record and
    // does not declare it a second time.
    stack.start_controller().await.expect("restart");
    drop(peer);
    wait_until("the restarted controller leads", 30, || {
        elections(&first_log_text()) == 2
    })
    .await;
    wait_until("the leader sees node-a lost", 30, || {
        let out = stack.kcredctl(OPERATOR, &["status", "--output", "json"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains(NODE_A) && text.contains("\"lost\"")
    })
    .await;
    // Several sweeps (one a second, the lease 3 s) after taking over.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let losses = records_with(&logs, Action::NodeLost);
    assert_eq!(
        losses.len(),
        1,
        "node-a's loss recorded once for the cluster: {losses:?}"
    );
    assert_eq!(losses[0].node, NODE_A);
}

/// FetchBundle as node-a with `token` over `channel`.
async fn fetch(
    channel: tonic::transport::Channel,
    token: String,
    pod: TestPod,
) -> Result<Bundle, tonic::Status> {
    kcred_tests::ha::fetch_as_node_a(channel, token, &pod).await
}

const STORM_PRINCIPALS: usize = 8;
const STORM_PODS: usize = 40;
const RATE: u32 = 1;
const BURST: u32 = 1;

fn storm_principal(i: usize) -> String {
    format!("HTTP/storm{i}.example.com")
}

/// Adds the storm's principals to the realm and a role account owning
/// them to the policy (both controllers reload it), and returns the
/// storm's pods, spread over the principals.
async fn storm_pods(stack: &mut ProcStack) -> Vec<TestPod> {
    let principals: Vec<String> = (0..STORM_PRINCIPALS).map(storm_principal).collect();
    for p in &principals {
        stack.realm.add_principal(p).expect("principal");
    }
    let owned = principals
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let policy = format!(
        "{}\n[[role_accounts]]\nlogin = \"storm\"\nuid = 2000\ngid = 2000\nnamespaces = [\"storm\"]\nservice_principals = [{owned}]\n",
        kcred_tests::stack::DEFAULT_POLICY
    );
    std::fs::write(stack.path().join("policy.toml"), policy).expect("policy");
    let pods: Vec<TestPod> = (0..STORM_PODS)
        .map(|j| {
            TestPod::with_keytabs(
                "storm",
                &format!("p{j}"),
                NODE_A,
                &principals[j % STORM_PRINCIPALS],
            )
        })
        .collect();
    stack
        .set_pods(&pods.iter().collect::<Vec<_>>())
        .await
        .expect("pods");
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_over_two_controllers_extracts_each_keytab_once_within_one_cluster_budget() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let config = format!(
        "{}\n[gate.kadmin]\nrate_per_sec = {RATE}\nburst = {BURST}\n",
        etcd_store(&etcd)
    );
    let mut stack = ProcStack::start(&config).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pods = storm_pods(&mut stack).await;
    let channels = [
        stack.channel_to(stack.port).await.expect("channel"),
        stack.channel_to(peer.port).await.expect("channel"),
    ];
    // Tokens are single-use: one each, made before the storm.
    let tokens: Vec<String> = pods
        .iter()
        .map(|_| stack.node_token(NODE_A).expect("token"))
        .collect();

    let mut storm = tokio::task::JoinSet::new();
    for (j, (pod, token)) in pods.iter().cloned().zip(tokens).enumerate() {
        // Most of a principal's pods go to its "home" controller (so both
        // spend budget at once), the last round to the other one (so each
        // principal is asked of both).
        let home = j % STORM_PRINCIPALS % 2;
        let other_round = j >= STORM_PODS - STORM_PRINCIPALS;
        let channel = channels[(home + usize::from(other_round)) % 2].clone();
        storm.spawn(async move { (pod.name.clone(), fetch(channel, token, pod).await) });
    }
    let mut keytabs: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    while let Some(done) = storm.join_next().await {
        let (name, result) = done.expect("task");
        let bundle = result.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let j: usize = name[1..].parse().expect("pod number");
        let keytab = bundle
            .files
            .iter()
            .find(|f| f.name == "krb5.keytab")
            .map(|f| f.content.clone())
            .expect("a keytab");
        let principal = storm_principal(j % STORM_PRINCIPALS);
        let first = keytabs.entry(principal.clone()).or_insert(keytab.clone());
        assert_eq!(*first, keytab, "two keytabs for {principal}");
    }

    let principals: Vec<String> = (0..STORM_PRINCIPALS).map(storm_principal).collect();
    let lines = stack.realm.kadmind_extractions(None).expect("kadmind log");
    let (extractions, violations) = kadmind_budget(&lines, &principals, RATE, BURST);
    assert_eq!(
        extractions.len(),
        STORM_PRINCIPALS,
        "every principal extracted: {extractions:?}"
    );
    assert!(
        extractions.values().all(|&n| n == 1),
        "each principal extracted once for the cluster: {extractions:?}"
    );
    assert!(
        violations.is_empty(),
        "the cluster-wide budget was exceeded: {violations:?}"
    );
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_on_one_controller_is_refused_by_the_other_at_once() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let to_peer = stack.channel_to(peer.port).await.expect("channel");
    let token = || stack.node_token(NODE_A).expect("token");
    // A second volume of the pod, issued through the peer only.
    let sibling = "csi-a-second-volume-of-web-0".to_string();
    fetch_volume_as_node_a(to_peer.clone(), token(), &pod, &sibling, false)
        .await
        .expect("the second volume issued through the peer");
    fetch(to_peer.clone(), token(), pod.clone())
        .await
        .expect("issued through the peer");

    // Revoked through the first controller (kcredctl talks to it), which
    // finds the peer's records in the store.
    let volume = kcred_tests::Kubelet::volume_id(&pod, "kcred");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = stack.kcredctl(
            OPERATOR,
            &["revoke", &volume, "--reason", "key leaked in a log"],
        );
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("and its pod's other volumes ({sibling})")),
                "{text}"
            );
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        // The peer writes its records behind (within ~50 ms).
        assert!(
            err.contains("no volume") && std::time::Instant::now() < deadline,
            "revoke: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The peer refuses the renewal at once, and another volume id of the
    // same pod too.
    let err = fetch_volume_as_node_a(to_peer.clone(), token(), &pod, &volume, true)
        .await
        .expect_err("the peer renewed a revoked volume");
    assert_eq!(
        kcred_proto::reason::reason_of(&err),
        Some(kcred_proto::kcred::v1::Reason::VolumeRevoked),
        "{err:?}"
    );
    let other = "csi-another-volume-of-the-same-pod";
    let err = fetch_volume_as_node_a(to_peer.clone(), token(), &pod, other, false)
        .await
        .expect_err("the peer issued to a revoked pod");
    assert_eq!(
        kcred_proto::reason::reason_of(&err),
        Some(kcred_proto::kcred::v1::Reason::VolumeRevoked),
        "{err:?}"
    );

    // Both controllers answer the node's heartbeat alike: both volumes
    // revoked (the peer once its sync takes the revocation in).
    let mut both = vec![volume.clone(), sibling.clone()];
    both.sort();
    let revoked_in_heartbeat = |channel: Channel| {
        let mut req = tonic::Request::new(HeartbeatRequest {
            node_name: NODE_A.into(),
            volume_ids: both.clone(),
        });
        req.metadata_mut()
            .insert("authorization", token().parse().expect("metadata"));
        async move {
            let mut ids = NodeCredentialsClient::new(channel)
                .heartbeat(req)
                .await
                .expect("heartbeat")
                .into_inner()
                .revoked_volume_ids;
            ids.sort();
            ids
        }
    };
    let first = stack.channel().await.expect("channel");
    assert_eq!(revoked_in_heartbeat(first).await, both);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = revoked_in_heartbeat(to_peer.clone()).await;
        if seen == both {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the peer answers {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = stack.audit_records();
    assert!(
        records.iter().any(|r| r.action == Action::Revoke
            && r.subject == sibling
            && r.reason
                .starts_with("key leaked in a log (revoked with its pod's volume")),
        "the second volume's revocation audited: {records:#?}"
    );
    drop(peer);
}

/// Publishes `pod` as kubelet does: a failure is retried (a bounded number
/// of times) until the volume is mounted.
async fn publish_until_mounted(
    kubelet: &kcred_tests::Kubelet,
    pod: &TestPod,
) -> std::path::PathBuf {
    let mut last = None;
    for _ in 0..20 {
        match kubelet.publish(pod, "kcred").await {
            Ok(target) => return target,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("{} never mounted: {last:?}", pod.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn the_driver_fails_over_when_its_controller_is_killed_mid_storm() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    // node-a's driver knows both controllers, the first one first.
    stack.driver_controller_ports = vec![stack.port, peer.port];
    stack.driver.as_mut().expect("driver").kill9();
    stack
        .start_driver()
        .await
        .expect("driver with two controllers");
    let pods = storm_pods(&mut stack).await;
    let (socket, root) = (
        stack.path().join("csi/csi.sock"),
        stack.path().join("kubelet"),
    );

    // The first round extracts every principal; the next rounds are in
    // flight when the first controller dies.
    let (first, rest) = pods.split_at(STORM_PRINCIPALS);
    let mut round = tokio::task::JoinSet::new();
    for pod in first {
        let (socket, root, pod) = (socket.clone(), root.clone(), pod.clone());
        round.spawn(async move {
            let kubelet = kcred_tests::Kubelet::connect(&socket, &root)
                .await
                .expect("csi");
            publish_until_mounted(&kubelet, &pod).await
        });
    }
    while let Some(done) = round.join_next().await {
        done.expect("publish");
    }
    let mut storm = tokio::task::JoinSet::new();
    for chunk in rest.chunks(STORM_PRINCIPALS) {
        let (socket, root, chunk) = (socket.clone(), root.clone(), chunk.to_vec());
        storm.spawn(async move {
            let kubelet = kcred_tests::Kubelet::connect(&socket, &root)
                .await
                .expect("csi");
            for pod in &chunk {
                publish_until_mounted(&kubelet, pod).await;
            }
        });
    }
    // Killed once the storm is under way (its first volume mounted), not
    // after a fixed pause: a fast machine can finish the storm in one.
    let storm_targets: Vec<_> = rest
        .iter()
        .map(|p| stack.kubelet().target_path(p, "kcred").join("krb5.keytab"))
        .collect();
    wait_until("the storm under way", 30, || {
        storm_targets.iter().any(|t| t.exists())
    })
    .await;
    stack.controller.as_mut().expect("controller").kill9();
    while let Some(done) = storm.join_next().await {
        done.expect("publish");
    }

    for pod in &pods {
        let keytab = stack
            .kubelet()
            .target_path(pod, "kcred")
            .join("krb5.keytab");
        assert!(keytab.exists(), "{} not mounted", pod.name);
    }
    let principals: Vec<String> = (0..STORM_PRINCIPALS).map(storm_principal).collect();
    let lines = stack.realm.kadmind_extractions(None).expect("kadmind log");
    let (extractions, _) = kadmind_budget(&lines, &principals, RATE, BURST);
    assert!(
        extractions.len() == STORM_PRINCIPALS && extractions.values().all(|&n| n == 1),
        "each principal extracted once: {extractions:?}"
    );
    // Whatever was still in flight, the driver's next call (a publish or
    // its heartbeat, every second) finds the first controller dead.
    let driver_log =
        || std::fs::read_to_string(stack.path().join("driver.log")).unwrap_or_default();
    wait_until("the driver failing over", 30, || {
        driver_log().contains("trying the next one")
    })
    .await;
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_accepted_by_one_controller_is_refused_by_the_other() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let token = stack.node_token(NODE_A).expect("token");
    let first = stack.channel_to(stack.port).await.expect("channel");
    fetch(first, token.clone(), pod.clone())
        .await
        .expect("the first use is accepted");
    let replayed = fetch(
        stack.channel_to(peer.port).await.expect("channel"),
        token,
        pod.clone(),
    )
    .await
    .expect_err("the peer accepted a replayed token");
    assert_eq!(
        kcred_proto::reason::reason_of(&replayed),
        Some(kcred_proto::kcred::v1::Reason::Unauthenticated),
        "{replayed:?}"
    );
    assert!(replayed.message().contains("replay"), "{replayed:?}");
    // A fresh token is served by the peer.
    let fresh = stack.node_token(NODE_A).expect("token");
    fetch(
        stack.channel_to(peer.port).await.expect("channel"),
        fresh,
        pod,
    )
    .await
    .expect("a fresh token works on the peer");
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_etcd_snapshot_serves_what_was_issued() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let keytab = |b: &Bundle| {
        b.files
            .iter()
            .find(|f| f.name == "krb5.keytab")
            .map(|f| f.content.clone())
            .expect("a keytab")
    };
    let channel = stack.channel_to(stack.port).await.expect("channel");
    let token = stack.node_token(NODE_A).expect("token");
    let issued = keytab(&fetch(channel, token, pod.clone()).await.expect("issued"));

    // Backed up with `etcdctl snapshot save`, then everything is lost.
    let snapshot = stack.path().join("etcd.snapshot");
    etcd.snapshot(&snapshot).expect("snapshot");
    stack.controller.as_mut().expect("controller").kill9();
    drop(etcd);

    // Restored (`etcdctl snapshot restore`) into a new cluster, a controller
    // on it serves the same keys without going back to kadmind.
    let restored = EtcdCluster::restore(&snapshot, 3).expect("restore");
    let peer = stack
        .start_peer_controller_with("-restored", &etcd_store(&restored))
        .await
        .expect("controller on the restored store");
    let channel = stack.channel_to(peer.port).await.expect("channel");
    let token = stack.node_token(NODE_A).expect("token");
    let served = keytab(&fetch(channel, token, pod).await.expect("served"));
    assert_eq!(served, issued, "the restored store lost the keytab");
    let r = kcred_testrealm::DEFAULT_REALM;
    let extractions = stack
        .realm
        .kadmind_extractions(Some("HTTP/web.example.com"))
        .expect("kadmind log");
    assert_eq!(
        extractions.len(),
        1,
        "extracted again after the restore: {extractions:?} ({r})"
    );
    drop(peer);
}

/// `audit verify --every-controller` over both controllers: its lines and
/// the merged records (JSON lines) and its exit status.
fn verify_every(stack: &ProcStack, urls: &str, merged: &std::path::Path) -> (bool, String, String) {
    let out = stack.kcredctl(
        AUDITOR,
        &[
            "--controller",
            urls,
            "audit",
            "verify",
            "--every-controller",
            "--merged",
            "-o",
            merged.to_str().expect("utf-8 path"),
        ],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_controllers_chain_is_verified_and_merged_by_time_and_an_edited_one_is_named() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let first_pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    let peer_pod = TestPod::with_keytabs("web", "web-1", NODE_A, "HTTP/web.example.com");
    stack
        .set_pods(&[&first_pod, &peer_pod])
        .await
        .expect("pods");
    let token = || stack.node_token(NODE_A).expect("token");
    fetch(
        stack.channel_to(stack.port()).await.expect("channel"),
        token(),
        first_pod,
    )
    .await
    .expect("issued by the first controller");
    fetch(
        stack.channel_to(peer.port).await.expect("channel"),
        token(),
        peer_pod,
    )
    .await
    .expect("issued by the peer");

    let first_url = format!("https://127.0.0.1:{}", stack.port());
    let peer_url = format!("https://127.0.0.1:{}", peer.port);
    let urls = format!("{first_url},{peer_url}");
    let merged = stack.path().join("timeline.jsonl");
    // Each controller writes its records behind (within ~50 ms): wait for
    // both issues to be in the chains.
    let mut attempt = 0;
    let records = loop {
        let (ok, out, err) = verify_every(&stack, &urls, &merged);
        assert!(ok, "both chains verify:\n{out}{err}");
        let text = std::fs::read_to_string(&merged).expect("merged file");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let issuers: std::collections::BTreeSet<&str> = records
            .iter()
            .filter(|r| r["action"] == "issue")
            .filter_map(|r| r["key_id"].as_str())
            .collect();
        if issuers.len() == 2 {
            assert_eq!(
                out.matches("OK ").count(),
                2,
                "one OK line per chain:\n{out}"
            );
            assert!(out.contains(&first_url) && out.contains(&peer_url), "{out}");
            assert!(out.contains("2 of 2 chains verify"), "{out}");
            assert!(
                out.contains("2 chains in the store, 0 not verified"),
                "{out}"
            );
            break records;
        }
        attempt += 1;
        assert!(attempt < 50, "the issues never reached the chains:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let keys: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["key_id"].as_str())
        .collect();
    assert_eq!(keys.len(), 2, "records of both chains: {keys:?}");
    let order: Vec<(i64, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["unix_ms"].as_i64().expect("unix_ms"),
                r["key_id"].as_str().expect("key_id").to_string(),
                r["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "merged by time, then key id, then seq");

    // A controller left out of the list: its chain, in the store, is
    // named as not verified.
    let (ok, out, err) = verify_every(&stack, &first_url, &merged);
    assert!(
        !ok,
        "a verification leaving out the peer passed:\n{out}{err}"
    );
    let peer_key = records
        .iter()
        .filter_map(|r| r["key_id"].as_str())
        .find(|k| !out.contains(&format!("key {k} ")))
        .expect("the peer's key id");
    assert!(
        out.lines().any(|l| l.starts_with("FAILED")
            && l.contains(peer_key)
            && l.contains("no controller")),
        "{out}"
    );

    // An edited record in the peer's log: its chain fails, by name.
    let peer_log = stack.path().join("audit-2.log");
    let text = std::fs::read_to_string(&peer_log).expect("peer log");
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("\"action\":\"issue\"") {
                l.replacen("HTTP/web.example.com", "HTTP/wex.example.com", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_ne!(edited.join("\n") + "\n", text, "no issue record to edit");
    std::fs::write(&peer_log, edited.join("\n") + "\n").expect("tamper");
    let (ok, out, err) = verify_every(&stack, &urls, &merged);
    assert!(!ok, "an edited chain verified:\n{out}{err}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(failed[0].contains(&peer_url), "the peer is named: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("OK") && l.contains(&first_url)),
        "the first chain still verifies: {out}"
    );
    assert!(out.contains("1 of 2 chains verify"), "{out}");
    drop(peer);
}

/// `kcredctl rotate keytab PRINCIPAL` through the controller on `port`.
fn rotate_through(stack: &ProcStack, port: u16, principal: &str, grace: &str) -> String {
    let url = format!("https://127.0.0.1:{port}");
    let out = stack.kcredctl(
        OPERATOR,
        &[
            "--controller",
            &url,
            "rotate",
            "keytab",
            principal,
            "--grace",
            grace,
            "--wait",
            "0",
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rotate through {port}: {text}");
    text
}

/// The kvnos of the keytab a fetch from `channel` delivers.
async fn delivered_kvnos(
    channel: tonic::transport::Channel,
    token: String,
    pod: TestPod,
) -> Vec<u32> {
    let bundle = fetch(channel, token, pod).await.expect("fetch");
    let bytes = bundle
        .files
        .iter()
        .find(|f| f.name == "krb5.keytab")
        .map(|f| f.content.clone())
        .expect("a keytab");
    let keytab =
        kcred_controller::keytab::Keytab::parse(zeroize::Zeroizing::new(bytes)).expect("keytab");
    keytab.kvnos().iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_rotating_one_principal_at_once_make_one_kvno_each() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let channel = stack.channel_to(stack.port).await.expect("channel");
    let token = stack.node_token(NODE_A).expect("token");
    fetch(channel, token, pod.clone()).await.expect("issued");

    let principal = "HTTP/web.example.com";
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| rotate_through(&stack, stack.port, principal, "1h"));
        let b = s.spawn(|| rotate_through(&stack, peer.port, principal, "1h"));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let created = |t: &str| {
        t.split_once("is at kvno ")
            .and_then(|(_, rest)| rest.split(';').next()?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no kvno reported: {t}"))
    };
    let mut kvnos = vec![created(&a), created(&b)];
    kvnos.sort();
    // Interleaved, both would randomize before either extracts, and both
    // would report the last kvno.
    assert_eq!(kvnos, vec![2, 3], "one kvno per rotation:\n{a}\n{b}");
    assert_eq!(stack.realm.kvno(principal).expect("kvno"), 3);
    let channel = stack.channel_to(peer.port).await.expect("channel");
    let token = stack.node_token(NODE_A).expect("token");
    assert_eq!(
        delivered_kvnos(channel, token, pod).await,
        vec![1, 2, 3],
        "every kvno of the grace period stored"
    );
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_left_by_a_killed_leader_is_done_by_the_new_leader() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let (mut stack, peer, pod, to_peer) = led_pair_with_web0(&etcd_store(&etcd)).await;

    // Rotated on the leader with a short grace; it dies before the purge.
    let principal = "HTTP/web.example.com";
    rotate_through(&stack, stack.port, principal, "6s");
    stack.controller.as_mut().expect("controller").kill9();
    let token = || stack.node_token(NODE_A).expect("token");
    assert_eq!(
        delivered_kvnos(to_peer.clone(), token(), pod.clone()).await,
        vec![1, 2],
        "both kvnos during the grace period"
    );

    // The peer takes over and ends the grace period.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered_kvnos(to_peer.clone(), token(), pod.clone()).await != vec![2] {
        assert!(
            std::time::Instant::now() < deadline,
            "the new leader never purged kvno 1:\n{}",
            peer.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(leader_gauge(peer.metrics_port).await, Some(1.0));
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_controller_dies_midway_is_finished_by_the_new_leader() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    // One kadmind call a second: the rotation's extraction waits about a
    // second after its new keys, long enough to kill its controller there.
    let config = format!(
        "{}\n[gate.kadmin]\nrate_per_sec = 1\nburst = 1\n",
        etcd_store(&etcd)
    );
    let (mut stack, peer, pod, to_peer) = led_pair_with_web0(&config).await;

    // The leader gives the principal new keys, and dies before storing them.
    let principal = "HTTP/web.example.com";
    let dir = stack.path().to_path_buf();
    let mut rotate = stack
        .kcredctl_command()
        .env(
            "KRB5CCNAME",
            format!("FILE:{}/cc-{OPERATOR}", dir.display()),
        )
        .arg("--keytab")
        .arg(dir.join(format!("{OPERATOR}.keytab")))
        .args([
            "--principal",
            &format!("{OPERATOR}@{}", kcred_testrealm::DEFAULT_REALM),
        ])
        .args([
            "rotate", "keytab", principal, "--grace", "1h", "--wait", "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kcredctl");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stack.realm.kvno(principal).expect("kvno") != 2 {
        assert!(std::time::Instant::now() < deadline, "never rotated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.controller.as_mut().expect("controller").kill9();
    let _ = rotate.wait();

    // The new leader finishes it: the KDC's new kvno is stored and
    // delivered, the previous one kept for the grace period.
    let token = || stack.node_token(NODE_A).expect("token");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while delivered_kvnos(to_peer.clone(), token(), pod.clone()).await != vec![1, 2] {
        assert!(
            std::time::Instant::now() < deadline,
            "the KDC's kvno 2 never reached the store:\n{}",
            peer.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Whether the kill landed between the new keys and their storing (the
    // usual case) or after it, nothing else is left to do.
    eprintln!(
        "resumed by the new leader: {}",
        peer.proc.log_text().contains("resumed a rotation")
    );
    drop(peer);
}

/// A key ring's first use lands on both controllers at once: one ring is
/// created for the cluster (its cluster lock), so every pod gets the same
/// keys; without it each controller would create its own and pods would
/// encrypt with different keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rings_first_use_on_two_controllers_at_once_creates_one_ring() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let mut stack = ProcStack::start(&etcd_store(&etcd)).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pods: Vec<TestPod> = (0..8)
        .map(|i| {
            TestPod::new("web", &format!("keys-{i}"), NODE_A).annotate("kcred.io/keys", "orders-db")
        })
        .collect();
    stack
        .set_pods(&pods.iter().collect::<Vec<_>>())
        .await
        .expect("pods");
    // Connections and tokens first, so the calls go out together.
    let mut ready = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let port = if i % 2 == 0 { stack.port() } else { peer.port };
        let channel = stack.channel_to(port).await.expect("channel");
        let token = stack.node_token(NODE_A).expect("token");
        ready.push((channel, token, pod.clone()));
    }
    let calls: Vec<_> = ready
        .into_iter()
        .map(|(channel, token, pod)| tokio::spawn(fetch(channel, token, pod)))
        .collect();
    let mut files = std::collections::BTreeSet::new();
    for call in calls {
        let bundle = call.await.expect("task").expect("key file delivered");
        let file = bundle
            .files
            .iter()
            .find(|f| f.name == "orders-db.keys.json")
            .expect("the key file")
            .content
            .clone();
        files.insert(file);
    }
    assert_eq!(
        files.len(),
        1,
        "every pod, whichever controller, got one ring"
    );
    drop(peer);
}
