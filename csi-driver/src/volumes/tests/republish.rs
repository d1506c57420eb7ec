//! Kubelet's republish of an unchanged volume is answered from what the
//! node holds, without the controller and without a write, only while
//! the files are known current; a pending revocation or files gone stale
//! take the long way.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::*;

/// Every file under `dir` with its inode and modification time: a write
/// (a new record is a new file renamed into place) changes it.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, meta.ino(), meta.mtime(), meta.mtime_nsec()));
        }
    }
    out.sort();
    out
}

/// A node following the controller's update stream (what `run_updates`
/// records when the stream opens), with one volume published.
async fn following_with_one_volume(deadline: i64) -> (Node, PublishRequest) {
    let node = Node::start().await;
    node.volumes.freshness.stream_up();
    node.controller.always(Ok(bundle("v1", deadline)));
    let req = node.request("web-0");
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("publish"),
        Outcome::Mounted
    );
    (node, req)
}

#[tokio::test]
async fn a_republish_of_current_files_needs_neither_the_controller_nor_a_write() {
    let (node, req) = following_with_one_volume(in_an_hour()).await;
    // From now on the controller cannot answer: asking it would show.
    node.controller
        .always(Err(tonic::Status::unavailable("controller down")));
    let state = node.dir.path().join("state");
    let (state_before, files_before) = (snapshot(&state), snapshot(&req.target));

    for _ in 0..3 {
        assert_eq!(
            node.volumes.publish(req.clone()).await.expect("republish"),
            Outcome::Nothing
        );
    }

    assert_eq!(node.controller.fetches().len(), 1, "only the first publish");
    assert_eq!(snapshot(&state), state_before, "no record written");
    assert_eq!(snapshot(&req.target), files_before, "no file written");
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
}

#[tokio::test]
async fn a_republish_with_a_revocation_pending_wipes_instead_of_answering_from_memory() {
    let (node, req) = following_with_one_volume(in_an_hour()).await;
    // The push arrived; the scheduler has not run it yet.
    node.volumes.trigger(&req.volume_id, Cause::Revoked);
    node.controller
        .always(Err(status(Reason::VolumeRevoked, "revoked by alice")));

    let outcome = node.volumes.publish(req.clone()).await.expect("republish");

    assert_eq!(outcome, Outcome::Wiped);
    assert_eq!(secret(&req.target), None, "the files are gone");
    assert_eq!(
        node.controller.fetches().len(),
        2,
        "the controller was asked"
    );
    assert!(
        node.record(&req.volume_id).expect("record").is_wiped(),
        "recorded as wiped"
    );
}

#[tokio::test]
async fn a_republish_of_files_gone_stale_asks_the_controller() {
    // The refresh deadline came.
    let due = unix_secs(SystemTime::now()) - 1;
    let (node, req) = following_with_one_volume(due).await;
    node.controller.always(Ok(bundle("v2", in_an_hour())));
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Refreshed
    );
    assert_eq!(secret(&req.target).as_deref(), Some("v2"));
    assert_eq!(node.controller.fetches().len(), 2);
    // Current again: answered from memory.
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Nothing
    );
    assert_eq!(node.controller.fetches().len(), 2);

    // The update stream broke: a push may have been missed.
    node.volumes.freshness.stream_down();
    node.controller.always(Ok(bundle("v3", in_an_hour())));
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Refreshed
    );
    assert_eq!(secret(&req.target).as_deref(), Some("v3"));
    assert_eq!(node.controller.fetches().len(), 3);
}

#[tokio::test]
async fn the_heartbeat_reports_held_volumes_without_rereading_the_state_directory() {
    let (node, req) = following_with_one_volume(in_an_hour()).await;
    let other = node.request("web-1");
    node.volumes.publish(other.clone()).await.expect("publish");
    // Records gone from disk behind the driver's back: a rescan would
    // drop them from the heartbeat.
    for entry in std::fs::read_dir(node.dir.path().join("state")).expect("list") {
        std::fs::remove_file(entry.expect("entry").path()).expect("rm");
    }
    let background =
        tokio::spawn(Arc::clone(&node.volumes).run_background(Duration::from_secs(3600)));

    eventually("a heartbeat", || !node.controller.heartbeats().is_empty()).await;

    let mut want = vec![req.volume_id.clone(), other.volume_id.clone()];
    want.sort();
    assert_eq!(node.controller.heartbeats()[0], want);
    background.abort();
}

#[tokio::test]
async fn a_refresh_that_changes_nothing_writes_nothing() {
    let deadline = in_an_hour();
    let (node, req) = following_with_one_volume(deadline).await;
    // Not known current: the republish asks, and gets the same answer.
    node.volumes.freshness.stream_down();
    let state = node.dir.path().join("state");
    let (state_before, files_before) = (snapshot(&state), snapshot(&req.target));

    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Unchanged
    );

    assert_eq!(
        node.controller.fetches().len(),
        2,
        "the controller was asked"
    );
    assert_eq!(
        snapshot(&state),
        state_before,
        "the same record is not saved again"
    );
    assert_eq!(
        snapshot(&req.target),
        files_before,
        "the same files are not written"
    );
}

#[tokio::test]
async fn heartbeats_travel_on_one_stream_where_the_controller_serves_it() {
    let (node, req) = following_with_one_volume(in_an_hour()).await;
    node.controller.serve_heartbeat_streams();
    three_beats_of_the_loop(&node).await;

    assert_eq!(node.controller.heartbeat_streams_opened(), 1);
    assert!(
        node.controller
            .heartbeats()
            .iter()
            .all(|held| held == &vec![req.volume_id.clone()]),
        "every beat on the stream reports what the node holds"
    );
}

#[tokio::test]
async fn a_controller_without_the_stream_gets_unary_heartbeats() {
    let (node, _req) = following_with_one_volume(in_an_hour()).await;
    three_beats_of_the_loop(&node).await;

    // Asked once; the next beats went by unary calls without asking again.
    assert_eq!(node.controller.heartbeat_stream_attempts(), 1);
    assert_eq!(node.controller.heartbeat_streams_opened(), 0);
}

#[tokio::test]
async fn a_refused_or_broken_stream_does_not_cost_a_beat() {
    for refusal in [
        kcred_proto::reason::status(Reason::TooManyStreams, "one must end first"),
        // What a proxy without streams or a reset stream answers.
        tonic::Status::unavailable("stream reset"),
    ] {
        let (node, req) = following_with_one_volume(in_an_hour()).await;
        node.controller.refuse_heartbeat_streams(refusal.clone());

        beat_ok(&node, &req, 3).await;

        // Each beat reached the controller by a unary call; the stream was
        // asked for once, then left alone for a while.
        assert_eq!(node.controller.heartbeats().len(), 3, "{refusal:?}");
        assert_eq!(
            node.controller.heartbeat_stream_attempts(),
            1,
            "{refusal:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_refused_for_the_nodes_proof_is_not_retried_as_a_call() {
    let (node, req) = following_with_one_volume(in_an_hour()).await;
    node.controller
        .refuse_heartbeat_streams(kcred_proto::reason::status(Reason::Unauthenticated, "no"));
    let mut beats = crate::volumes::sync::Beats::default();

    let answer = beats
        .beat(node.volumes.client(), vec![req.volume_id.clone()])
        .await;

    let err = answer.expect_err("refused");
    assert_eq!(err.reason(), Some(Reason::Unauthenticated));
    assert!(
        node.controller.heartbeats().is_empty(),
        "the same proof is not sent again as a unary call"
    );
}

#[tokio::test]
async fn a_heartbeat_stream_the_controller_ends_is_opened_again_without_a_failed_beat() {
    let (node, req) = following_with_one_volume(in_an_hour()).await;
    node.controller.serve_heartbeat_streams();
    node.controller.end_heartbeat_streams_after(2);
    beat_ok(&node, &req, 6).await;

    assert_eq!(node.controller.heartbeats().len(), 6);
    assert_eq!(node.controller.heartbeat_streams_opened(), 3);
    // Timed once per answered heartbeat; a stream's end answered none.
    let timed = node
        .volumes
        .metrics()
        .controller_call_seconds
        .with_label_values(&["Heartbeats", "Ok"])
        .get_sample_count();
    assert_eq!(timed, 6);
}

/// `n` heartbeats through one `Beats`, as the driver's loop sends them;
/// each must be answered.
async fn beat_ok(node: &Node, req: &PublishRequest, n: usize) {
    let mut beats = crate::volumes::sync::Beats::default();
    for i in 0..n {
        let answer = beats
            .beat(node.volumes.client(), vec![req.volume_id.clone()])
            .await;
        assert!(answer.is_ok(), "beat {i}: {answer:?}");
    }
}

/// Runs the driver's heartbeat loop (every 20 ms) until the controller
/// has heard three heartbeats.
async fn three_beats_of_the_loop(node: &Node) {
    let beats = tokio::spawn(crate::volumes::sync::run_heartbeats(
        Arc::clone(&node.volumes),
        Duration::from_millis(20),
    ));
    eventually("three heartbeats", || {
        node.controller.heartbeats().len() >= 3
    })
    .await;
    beats.abort();
}
