//! First publishes and unpublishes: what is written, what is refused,
//! and that nothing is left behind.

use super::*;

#[tokio::test]
async fn a_first_publish_records_mounts_and_writes_the_bundle() {
    let node = Node::start().await;
    let deadline = in_an_hour();
    node.controller.always(Ok(bundle("v1", deadline)));
    let req = node.request("web-0");

    let outcome = node.volumes.publish(req.clone()).await.expect("publish");

    assert_eq!(outcome, Outcome::Mounted);
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    let rec = node.record(&req.volume_id).expect("recorded");
    let refresh_at = Deadline::from_controller(deadline);
    assert_eq!(
        rec.phase,
        Phase::Mounted {
            generation: "v1".into(),
            refresh_at
        }
    );
    assert_eq!(
        node.volumes.pending(&req.volume_id),
        refresh_at.map(|at| (at, Cause::Deadline)),
        "the refresh deadline is scheduled"
    );
    assert_eq!(
        node.controller.fetches(),
        [Fetch {
            volume_id: req.volume_id.clone(),
            refresh: false
        }]
    );
}

#[tokio::test]
async fn a_refused_first_publish_leaves_nothing_behind_and_keeps_the_controllers_code() {
    let node = Node::start().await;
    node.controller
        .always(Err(status(Reason::PodNotOnNode, "pod is bound to node-b")));
    let req = node.request("web-0");

    let err = node
        .volumes
        .publish(req.clone())
        .await
        .expect_err("refused");

    assert_eq!(csi_code(err), Code::PermissionDenied);
    assert!(!req.target.exists(), "no mount point");
    assert_eq!(node.record(&req.volume_id), None, "no record");
}

#[tokio::test]
async fn a_refused_first_publish_keeps_no_pod_token() {
    let node = Node::start().await;
    node.controller
        .always(Err(status(Reason::PodNotOnNode, "pod is bound to node-b")));
    let req = node.request("web-0");
    let token = crate::csi::pod_token::PodToken {
        token: kcred_auth::BearerToken::new("a.b.c").expect("token"),
        expires: None,
    };

    let held = || {
        node.volumes
            .pod_tokens
            .current(&req.volume_id, &req.pod.uid, SystemTime::now())
    };

    node.volumes
        .publish_with_pod_token(req.clone(), Some(token.clone()))
        .await
        .expect_err("refused");
    // Kubelet sends no unpublish after a final error: nothing else would
    // ever drop it.
    assert!(held().is_none(), "the token is dropped");

    node.controller.always(Ok(bundle("v1", 0)));
    node.volumes
        .publish_with_pod_token(req.clone(), Some(token))
        .await
        .expect("published");
    assert!(held().is_some(), "kept for the volume's refreshes");
}

#[tokio::test]
async fn a_transient_controller_failure_on_first_publish_is_retryable() {
    let node = Node::start().await;
    node.controller
        .always(Err(status(Reason::KdcUnavailable, "the KDC is down")));
    let err = node
        .volumes
        .publish(node.request("web-0"))
        .await
        .expect_err("down");
    assert_eq!(csi_code(err), Code::Unavailable);

    // A controller that cannot be reached at all.
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = manager(dir.path(), "http://127.0.0.1:1", &node.medium);
    let err = gone
        .publish(node.request("web-1"))
        .await
        .expect_err("unreachable");
    assert!(matches!(
        err,
        VolumeError::Controller(crate::controller_client::ControllerError::Unreachable(_))
    ));
    assert_eq!(csi_code(err), Code::Unavailable);
}

#[tokio::test]
async fn publish_conflicts_are_refused_and_touch_nothing() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");

    // Another volume id at a target recorded for this one.
    let mut other = node.request("web-1");
    other.target = req.target.clone();
    let err = node.volumes.publish(other).await.expect_err("taken");
    assert!(
        matches!(err, VolumeError::Refused(Refusal::TargetTaken { .. })),
        "{err}"
    );

    // This volume at another target.
    let mut moved = req.clone();
    moved.target = node.request("web-2").target;
    let err = node
        .volumes
        .publish(moved.clone())
        .await
        .expect_err("elsewhere");
    assert!(matches!(
        err,
        VolumeError::Refused(Refusal::PublishedElsewhere { .. })
    ));
    assert!(!moved.target.exists());

    // The same volume, now read-only: ALREADY_EXISTS.
    let readonly = PublishRequest {
        readonly: true,
        ..req.clone()
    };
    let err = node
        .volumes
        .publish(readonly)
        .await
        .expect_err("readonly changed");
    assert_eq!(csi_code(err), Code::AlreadyExists);
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    assert_eq!(node.controller.fetches().len(), 1, "no fetch for a refusal");
}

#[tokio::test]
async fn a_target_holding_another_drivers_mount_is_never_written_or_unmounted() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    node.medium
        .simulate_foreign_mount(&req.target)
        .expect("foreign mount");
    std::fs::write(req.target.join("theirs"), b"not kcred's").expect("write");

    let err = node
        .volumes
        .publish(req.clone())
        .await
        .expect_err("not ours");
    assert!(
        matches!(err, VolumeError::Refused(Refusal::NotOurs { .. })),
        "{err}"
    );
    assert_eq!(csi_code(err), Code::FailedPrecondition);
    assert_eq!(secret(&req.target), None, "nothing written into it");

    let err = node
        .volumes
        .unpublish(&req.volume_id, req.target.clone())
        .await
        .expect_err("unknown volume");
    assert!(matches!(err, VolumeError::Refused(Refusal::NotOurs { .. })));
    assert_eq!(
        std::fs::read(req.target.join("theirs")).expect("still there"),
        b"not kcred's"
    );
    assert!(node.controller.fetches().is_empty());
}

#[tokio::test]
async fn a_non_empty_target_is_refused_before_anything_is_mounted_over_it() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    std::fs::create_dir(&req.target).expect("mkdir");
    std::fs::write(req.target.join("data"), b"hidden by a mount").expect("write");

    let err = node
        .volumes
        .publish(req.clone())
        .await
        .expect_err("not empty");

    assert!(
        matches!(err, VolumeError::Refused(Refusal::NotOurs { .. })),
        "{err}"
    );
    assert_eq!(node.record(&req.volume_id), None);
    assert!(req.target.join("data").exists());
}

#[tokio::test]
async fn unpublish_removes_what_was_recorded_and_is_idempotent() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", in_an_hour())));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");

    let outcome = node
        .volumes
        .unpublish(&req.volume_id, req.target.clone())
        .await
        .expect("unpublish");
    assert_eq!(outcome, Outcome::Removed);
    assert!(!req.target.exists());
    assert_eq!(node.record(&req.volume_id), None);
    assert_eq!(
        node.volumes.pending(&req.volume_id),
        None,
        "deadline dropped"
    );
    assert_eq!(
        node.volumes
            .unpublish(&req.volume_id, req.target.clone())
            .await
            .expect("again"),
        Outcome::Nothing
    );
}

#[tokio::test]
async fn a_first_publish_whose_write_fails_is_undone() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    node.medium.fail_writes(true);
    let req = node.request("web-0");

    let err = node
        .volumes
        .publish(req.clone())
        .await
        .expect_err("write fails");

    assert_eq!(csi_code(err), Code::Internal);
    assert!(!req.target.exists(), "unmounted and removed");
    assert_eq!(node.record(&req.volume_id), None, "record removed");
    node.medium.fail_writes(false);
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("retry"),
        Outcome::Mounted
    );
}

#[tokio::test]
async fn a_publish_interrupted_by_a_crash_is_completed_by_kubelets_retry() {
    let mut node = Node::start().await;
    let req = node.request("web-0");
    // The crash: recorded and mounted, never filled.
    let state = StateDir::open(node.dir.path().join("state")).expect("state");
    let mut rec = crate::storage::state::PublishedVolume {
        volume_id: req.volume_id.clone(),
        target: req.target.clone(),
        pod_namespace: "web".into(),
        pod_name: "web-0".into(),
        pod_uid: req.pod.uid.clone(),
        service_account: "default".into(),
        readonly: false,
        uid: 1500,
        gid: 1500,
        published_at: Deadline::now(),
        phase: Phase::Publishing,
    };
    state.save(&rec).expect("save");
    use crate::storage::Medium;
    node.medium.mount(&rec).expect("mount");
    node.restart();

    node.controller.always(Ok(bundle("v1", 0)));
    let outcome = node.volumes.publish(req.clone()).await.expect("retry");

    assert_eq!(outcome, Outcome::Mounted);
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    rec.phase = Phase::Mounted {
        generation: "v1".into(),
        refresh_at: None,
    };
    let saved = node.record(&req.volume_id).expect("record");
    assert_eq!(saved.phase, rec.phase);
}

#[tokio::test]
async fn each_attempt_at_a_controller_is_timed_and_a_failover_counted() {
    let mut node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    // Port 1, where nothing listens, named before the double.
    node.endpoint = format!("http://127.0.0.1:1,{}", node.endpoint);
    node.restart();
    let req = node.request("web-0");

    node.volumes.publish(req.clone()).await.expect("publish");

    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    let m = node.volumes.metrics();
    assert_eq!(m.controller_failovers.get(), 1);
    let count = |code: &str| {
        m.controller_call_seconds
            .with_label_values(&["FetchBundle", code])
            .get_sample_count()
    };
    assert_eq!((count("Unavailable"), count("Ok")), (1, 1));
    let text = m.render();
    assert!(
        text.contains(
            "kcred_csi_controller_call_seconds_count{code=\"Ok\",method=\"FetchBundle\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_call_no_controller_answers_counts_each_move_between_them() {
    let mut node = Node::start().await;
    node.endpoint = "http://127.0.0.1:1,http://127.0.0.1:2".into();
    node.restart();
    let req = node.request("web-0");

    let err = node.volumes.publish(req).await.expect_err("unreachable");

    assert_eq!(csi_code(err), Code::Unavailable);
    let m = node.volumes.metrics();
    let attempts = crate::controller_client::ROUNDS as u64 * 2;
    assert_eq!(
        m.controller_call_seconds
            .with_label_values(&["FetchBundle", "Unavailable"])
            .get_sample_count(),
        attempts
    );
    // Every attempt after the first went to the other controller.
    assert_eq!(m.controller_failovers.get(), attempts - 1);
}

#[tokio::test]
async fn an_attempt_that_never_left_the_node_is_not_timed() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    // The node's token file is gone: no call can carry the node's proof.
    let path = node.dir.path().join("token");
    std::fs::write(&path, "header.payload.signature").expect("write token");
    let file = Arc::new(crate::psat::TokenFile::open(&path).expect("token file"));
    std::fs::remove_file(&path).expect("remove token");
    let client = ControllerClient::with_identity(
        &node.endpoint,
        "node-a",
        crate::controller_client::NodeIdentity::psat(file),
    )
    .expect("client");
    let volumes = VolumeManager::new(
        client,
        StateDir::open(node.dir.path().join("state-psat")).expect("state"),
        Arc::clone(&node.medium) as Arc<dyn crate::storage::Medium>,
    )
    .expect("manager");

    let err = volumes
        .publish(node.request("web-0"))
        .await
        .expect_err("no proof");

    assert_eq!(csi_code(err), Code::Unavailable);
    assert!(node.controller.fetches().is_empty(), "nothing reached it");
    let text = volumes.metrics().render();
    assert!(
        !text.contains("kcred_csi_controller_call_seconds_count{"),
        "{text}"
    );
}
