//! Issue 12: the fast path keeps its guarantees. A node proves itself once
//! per TLS connection and never more than itself; a rotation reaches every
//! volume a node holds, and `kcredctl rotate --wait` waits only for volumes
//! still mounted. Real processes: controller, node driver, kcredctl, MIT
//! realm.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcred_proto::kcred::v1::HeartbeatRequest;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_tests::TestPod;
use kcred_tests::procs::{NODE_A, NODE_B, OPERATOR, ProcStack};
use tonic::Code;

const VOL: &str = "kcred";

fn heartbeat(node: &str, token: Option<&str>) -> tonic::Request<HeartbeatRequest> {
    let mut req = tonic::Request::new(HeartbeatRequest {
        node_name: node.into(),
        volume_ids: vec![],
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", t.parse().expect("metadata"));
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_node_proves_itself_once_per_tls_connection_and_only_as_itself() {
    let stack = ProcStack::start("").await.expect("stack");
    let token = stack.node_token(NODE_A).expect("node-a token");

    let mut proven = NodeCredentialsClient::new(stack.channel().await.expect("tls channel"));
    proven
        .heartbeat(heartbeat(NODE_A, Some(&token)))
        .await
        .expect("a valid token is accepted");
    // The same connection: its identity is already proven.
    proven
        .heartbeat(heartbeat(NODE_A, None))
        .await
        .expect("later calls on the proven connection need no new token");
    // ...but only for the node it proved.
    let err = proven
        .heartbeat(heartbeat(NODE_B, None))
        .await
        .expect_err("node-a's connection speaking for node-b");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("may not speak for"),
        "{}",
        err.message()
    );

    // Another connection proves nothing yet.
    let mut fresh = NodeCredentialsClient::new(stack.channel().await.expect("tls channel"));
    let err = fresh
        .heartbeat(heartbeat(NODE_A, None))
        .await
        .expect_err("a new connection without a token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // A token is single-use on any connection: the replay cache still
    // refuses the one the first connection presented.
    let err = fresh
        .heartbeat(heartbeat(NODE_A, Some(&token)))
        .await
        .expect_err("a replayed token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_heartbeat_stream_proves_its_node_once_and_speaks_only_for_it() {
    let stack = ProcStack::start_with_metrics("").await.expect("stack");
    let port = stack.metrics_port.expect("metrics port");
    // The real driver beats on a stream of its own.
    assert_eq!(
        streams_reach(port, 1.0).await,
        1.0,
        "the driver's heartbeat stream"
    );

    // Opened with a token: the first message names the node it proves.
    let token = stack.node_token(NODE_A).expect("node-a token");
    let mut client = NodeCredentialsClient::new(stack.channel().await.expect("tls channel"));
    let (out, rx) = tokio::sync::mpsc::channel(4);
    out.send(HeartbeatRequest {
        node_name: NODE_A.into(),
        volume_ids: vec![],
    })
    .await
    .expect("queue");
    let mut open = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    open.metadata_mut()
        .insert("authorization", token.parse().expect("metadata"));
    let mut answers = client
        .heartbeats(open)
        .await
        .expect("the stream opens")
        .into_inner();
    let first = answers.message().await.expect("answer").expect("first");
    assert!(first.lease_ttl_secs > 0, "{first:?}");
    // Later beats carry no token: the stream was proven when it opened.
    for _ in 0..3 {
        out.send(HeartbeatRequest {
            node_name: NODE_A.into(),
            volume_ids: vec![],
        })
        .await
        .expect("send");
        let answer = answers.message().await.expect("answer").expect("beat");
        assert!(answer.lease_ttl_secs > 0, "{answer:?}");
    }
    assert_eq!(
        streams_reach(port, 2.0).await,
        2.0,
        "the driver's and this one"
    );
    // The proven connection may open more, up to the node's cap of 4 (the
    // driver's stream included); the next one is refused.
    // A stream of node-a: its first beat queued, open until its sender
    // is dropped (as the driver's is).
    let beat_a = || {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let first = HeartbeatRequest {
            node_name: NODE_A.into(),
            volume_ids: vec![],
        };
        tx.try_send(first).expect("queue");
        (tx, tokio_stream::wrappers::ReceiverStream::new(rx))
    };
    let mut held_open = Vec::new();
    for _ in 0..2 {
        let (tx, beats) = beat_a();
        let answers = client.heartbeats(beats).await.expect("within the cap");
        held_open.push((tx, answers));
    }
    let err = client
        .heartbeats(beat_a().1)
        .await
        .expect_err("a fifth stream of node-a");
    assert_eq!(
        kcred_proto::reason::reason_of(&err),
        Some(kcred_proto::kcred::v1::Reason::TooManyStreams),
        "{err:?}"
    );
    drop(held_open);
    assert_eq!(
        streams_reach(port, 2.0).await,
        2.0,
        "the streams given up are gone"
    );
    // A beat for another node ends the stream with the node's refusal.
    out.send(HeartbeatRequest {
        node_name: NODE_B.into(),
        volume_ids: vec![],
    })
    .await
    .expect("send");
    let err = answers
        .message()
        .await
        .expect_err("node-a's stream speaking for node-b");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        kcred_proto::reason::reason_of(&err),
        Some(kcred_proto::kcred::v1::Reason::NodeMismatch),
        "{err:?}"
    );
    // Audited as the unary call's refusal is: who spoke, for whom.
    let mut audited = false;
    for _ in 0..50 {
        audited = stack.audit_records().iter().any(|r| {
            r.reason == "node_mismatch" && r.actor == format!("node/{NODE_A}") && r.node == NODE_B
        });
        if audited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(audited, "the refusal is audited");
    // The stream's end reaches the gauge once its task has dropped it.
    assert_eq!(
        streams_reach(port, 1.0).await,
        1.0,
        "the refused stream is gone"
    );

    // A beat listing more volume ids than allowed, refused as it is
    // decoded, ends the stream with the refusal, not quietly.
    let (tx, beats) = beat_a();
    let mut answers = client
        .heartbeats(beats)
        .await
        .expect("a stream")
        .into_inner();
    answers.message().await.expect("the first beat answered");
    tx.send(HeartbeatRequest {
        node_name: NODE_A.into(),
        volume_ids: vec![String::new(); 10_001],
    })
    .await
    .expect("send");
    let err = answers.message().await.expect_err("too many ids");
    assert_eq!(
        kcred_proto::reason::reason_of(&err),
        Some(kcred_proto::kcred::v1::Reason::RequestInvalid),
        "{err:?}"
    );
    drop(tx);

    // Without a token on a new connection, the stream does not open.
    let mut fresh = NodeCredentialsClient::new(stack.channel().await.expect("tls channel"));
    let err = fresh
        .heartbeats(tokio_stream::iter([HeartbeatRequest {
            node_name: NODE_A.into(),
            volume_ids: vec![],
        }]))
        .await
        .expect_err("an unproven stream");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

/// The node tokens the controller verified, the tokens it found unneeded
/// (the connection was proven), and the fetches it answered.
async fn tokens_and_fetches(metrics_port: u16) -> (f64, f64, f64) {
    let body = kcred_tests::ha::scrape(metrics_port).await;
    let count =
        |name: &str, label: &str| kcred_tests::ha::metric(&body, name, &[label]).unwrap_or(0.0);
    (
        count("kcred_node_tokens_total", "use=\"verified\""),
        count("kcred_node_tokens_total", "use=\"unneeded\""),
        count("kcred_fetch_bundle_seconds_count", "code=\"Ok\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn the_driver_sends_a_token_once_per_connection_and_proves_the_next_one_after_a_crash() {
    let mut stack = ProcStack::start_with_metrics("").await.expect("stack");
    let metrics = stack.metrics_port.expect("metrics port");
    let pods = TestPod::web_replicas(24, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    let (before, after) = pods.split_at(12);

    for p in before {
        stack.kubelet().publish(p, VOL).await.expect("publish");
    }
    // The driver's first calls (its heartbeat and update streams, the first
    // fetch) carry tokens until an answer vouches for the connection; with
    // a token per call, a dozen fetches would bring a dozen.
    let (verified, unneeded, fetches) = tokens_and_fetches(metrics).await;
    assert!(fetches >= 12.0, "{fetches} fetches");
    assert!(
        verified >= 1.0 && verified + unneeded <= 4.0,
        "tokens for {fetches} fetches and the driver's streams: {verified} verified, {unneeded} unneeded"
    );

    // A crash: the driver's connection ends, and what it proved with it.
    stack.controller.as_mut().expect("controller").kill9();
    stack.start_controller().await.expect("restart controller");
    for p in after {
        stack
            .kubelet()
            .publish(p, VOL)
            .await
            .expect("publish after the restart");
    }
    let (verified, unneeded, fetches) = tokens_and_fetches(metrics).await;
    assert!(fetches >= 12.0, "{fetches} fetches since the restart");
    assert!(
        verified >= 1.0 && verified + unneeded <= 4.0,
        "tokens since the restart for {fetches} fetches: {verified} verified, {unneeded} unneeded"
    );
}

/// `kcred_heartbeat_streams` once it reads `want` (polled for at most
/// 10 s), or its last reading.
async fn streams_reach(metrics_port: u16, want: f64) -> f64 {
    let mut seen = -1.0;
    for _ in 0..100 {
        let body = kcred_tests::ha::scrape(metrics_port).await;
        seen = kcred_tests::ha::metric(&body, "kcred_heartbeat_streams", &[]).unwrap_or(-1.0);
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

fn data_version(target: &Path) -> Option<PathBuf> {
    std::fs::read_link(target.join("..data")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn rotation_reaches_every_mounted_volume_and_wait_ignores_unmounted_ones() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pods = TestPod::web_replicas(20, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    let mut targets = Vec::new();
    for p in &pods {
        targets.push(stack.kubelet().publish(p, VOL).await.expect("publish"));
    }
    // Two volumes are unmounted; their pods (and so their records) stay.
    for p in &pods[..2] {
        stack.kubelet().unpublish(p, VOL).await.expect("unpublish");
    }
    let mounted = &targets[2..];
    let before: Vec<_> = mounted.iter().map(|t| data_version(t)).collect();
    // The driver heartbeats every second: let one list what it holds.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let out = stack.kcredctl(
        OPERATOR,
        &["rotate", "keytab", "HTTP/web.example.com", "--wait", "60s"],
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("18 of 18") && !report.contains("of 20"),
        "waits for the 18 mounted volumes only: {report}"
    );
    for (t, b) in mounted.iter().zip(&before) {
        assert_ne!(&data_version(t), b, "{} was not rewritten", t.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_republish_of_an_unchanged_volume_is_answered_by_the_driver_alone_until_a_revocation() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let following = |stack: &ProcStack| {
        stack
            .driver
            .as_ref()
            .is_some_and(|d| d.log_text().contains("following the controller's updates"))
    };
    kcred_tests::wait_until("the driver follows updates", 30, || following(&stack)).await;
    let target = stack.kubelet().publish(&pod, VOL).await.expect("publish");
    assert!(target.join("krb5.keytab").exists());
    let version = data_version(&target);
    let audited = stack.audit_records().len();

    for _ in 0..5 {
        stack.kubelet().publish(&pod, VOL).await.expect("republish");
    }

    let records = stack.audit_records();
    assert_eq!(
        records.len(),
        audited,
        "no fetch reached the controller: {:#?}",
        &records[audited..]
    );
    assert_eq!(
        data_version(&target),
        version,
        "the files were not rewritten"
    );

    // A revocation still arrives by push and takes effect; republishes
    // after it do not bring the files back.
    let volume = kcred_tests::Kubelet::volume_id(&pod, VOL);
    let out = stack.kcredctl(OPERATOR, &["revoke", &volume, "--reason", "test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kcred_tests::wait_until("the pushed wipe", 30, || {
        !target.join("krb5.keytab").exists()
    })
    .await;
    // Kubelet retries a call that finds the wipe still finishing (ABORTED).
    let mut republished = stack.kubelet().publish(&pod, VOL).await;
    for _ in 0..50 {
        match &republished {
            Err(s) if s.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                republished = stack.kubelet().publish(&pod, VOL).await;
            }
            _ => break,
        }
    }
    republished.expect("republish");
    assert!(!target.join("krb5.keytab").exists(), "still wiped");
}
