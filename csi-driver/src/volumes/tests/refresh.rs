//! Republishes and refreshes: new files when they changed, the last good
//! files when anything fails, a wipe only on a typed revocation.

use super::*;

#[tokio::test]
async fn a_republish_refreshes_and_moves_the_deadline() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", in_an_hour())));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Unchanged
    );

    let later = in_an_hour() + 600;
    node.controller.always(Ok(bundle("v2", later)));
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Refreshed
    );
    assert_eq!(secret(&req.target).as_deref(), Some("v2"));
    let at = Deadline::from_controller(later).expect("deadline");
    assert_eq!(
        node.volumes.pending(&req.volume_id),
        Some((at, Cause::Deadline))
    );
    assert!(node.controller.fetches()[1..].iter().all(|f| f.refresh));
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_files_answers_ok_and_retries() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");

    node.controller
        .always(Err(tonic::Status::unavailable("controller restarting")));
    let outcome = node.volumes.publish(req.clone()).await.expect("answers OK");
    assert_eq!(outcome, Outcome::KeptLastGood);
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    let (at, _) = node
        .volumes
        .pending(&req.volume_id)
        .expect("retry scheduled");
    assert!(!at.is_due(SystemTime::now() - Duration::from_secs(1)));

    // A write that fails keeps them too.
    node.controller.always(Ok(bundle("v2", 0)));
    node.medium.fail_writes(true);
    let outcome = node
        .volumes
        .reconcile_now(&req.volume_id, Cause::Deadline)
        .await
        .expect("kept");
    assert_eq!(outcome, Outcome::KeptLastGood);
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    node.medium.fail_writes(false);
    let outcome = node
        .volumes
        .reconcile_now(&req.volume_id, Cause::Deadline)
        .await
        .expect("retried");
    assert_eq!(outcome, Outcome::Refreshed);
    assert_eq!(secret(&req.target).as_deref(), Some("v2"));
    assert_eq!(
        node.volumes.pending(&req.volume_id),
        None,
        "no deadline, no retry"
    );
}

#[tokio::test]
async fn a_refresh_refused_as_revoked_wipes_the_files_and_keeps_the_mount() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");

    node.controller
        .always(Err(status(Reason::VolumeRevoked, "volume revoked")));
    let outcome = node.volumes.publish(req.clone()).await.expect("answers OK");

    assert_eq!(outcome, Outcome::Wiped);
    assert_eq!(secret(&req.target), None);
    assert!(req.target.exists(), "the mount stays while the pod runs");
    let rec = node.record(&req.volume_id).expect("record");
    assert_eq!(
        rec.phase,
        Phase::Wiped {
            reason: WipeReason::Revoked
        }
    );
    // Revoked stays revoked: the next republish asks nothing.
    let fetched = node.controller.fetches().len();
    node.controller.always(Ok(bundle("v1", 0)));
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("OK"),
        Outcome::Nothing
    );
    assert_eq!(node.controller.fetches().len(), fetched);
    assert_eq!(secret(&req.target), None);
}

#[tokio::test]
async fn a_refusal_that_only_says_revoked_in_words_is_not_a_revocation() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");
    node.controller.always(Err(tonic::Status::permission_denied(
        "volume of pod web/web-0 was revoked",
    )));

    let outcome = node.volumes.publish(req.clone()).await.expect("OK");

    assert_eq!(outcome, Outcome::KeptLastGood);
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
}

#[tokio::test]
async fn a_restarted_driver_resumes_deadlines_and_refreshes_instead_of_remounting() {
    let mut node = Node::start().await;
    let deadline = in_an_hour();
    node.controller.always(Ok(bundle("v1", deadline)));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");

    node.restart();

    let at = Deadline::from_controller(deadline).expect("deadline");
    assert_eq!(
        node.volumes.pending(&req.volume_id),
        Some((at, Cause::Deadline)),
        "deadline resumed from the record"
    );
    node.controller.always(Ok(bundle("v2", deadline)));
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Refreshed
    );
    assert_eq!(secret(&req.target).as_deref(), Some("v2"));
    assert!(node.controller.fetches().last().expect("fetch").refresh);
}

#[tokio::test]
async fn a_republish_of_current_files_is_answered_without_asking_the_controller() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let background =
        tokio::spawn(Arc::clone(&node.volumes).run_background(Duration::from_secs(3600)));
    eventually("the update stream is followed", || {
        node.volumes.following_updates()
    })
    .await;
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");

    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Nothing
    );
    assert_eq!(node.controller.fetches().len(), 1, "no round trip");

    // A push is what changes files: it is fetched at once.
    node.controller.always(Ok(bundle("v2", 0)));
    node.controller.push(VolumeUpdate {
        action: Action::Refresh as i32,
        volume_ids: vec![req.volume_id.clone()],
        reason: "rotated".into(),
    });
    eventually("pushed refresh", || {
        secret(&req.target).as_deref() == Some("v2")
    })
    .await;
    assert_eq!(
        publish_retrying(&node.volumes, &req).await,
        Outcome::Nothing
    );
    assert_eq!(node.controller.fetches().len(), 2);
    background.abort();
}

#[tokio::test]
async fn a_revoked_volume_lost_to_a_reboot_comes_back_empty() {
    let mut node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");
    node.volumes
        .reconcile_now(&req.volume_id, Cause::Revoked)
        .await
        .expect("wipe");
    // The reboot: mounts gone, the state directory kept.
    use crate::storage::Medium;
    let rec = node.record(&req.volume_id).expect("record");
    node.medium.unmount(&rec).expect("unmount");
    node.restart();
    let fetched = node.controller.fetches().len();

    let outcome = node.volumes.publish(req.clone()).await.expect("publish");

    assert_eq!(outcome, Outcome::Wiped);
    assert!(req.target.exists(), "mounted again");
    assert_eq!(secret(&req.target), None, "and empty");
    assert_eq!(node.controller.fetches().len(), fetched, "nothing fetched");
}

#[tokio::test]
async fn a_deadline_that_finds_the_mount_gone_leaves_the_volume_to_kubelet() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", in_an_hour())));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");
    // The mount is lost (a reboot), the record kept.
    use crate::storage::Medium;
    let rec = node.record(&req.volume_id).expect("record");
    node.medium.unmount(&rec).expect("unmount");
    let fetched = node.controller.fetches().len();

    let outcome = node
        .volumes
        .reconcile_now(&req.volume_id, Cause::Deadline)
        .await
        .expect("looked");

    assert_eq!(outcome, Outcome::Nothing);
    assert_eq!(node.controller.fetches().len(), fetched, "nothing fetched");
    // Kept, the deadline that came due would come due again at once.
    assert_eq!(node.volumes.pending(&req.volume_id), None);
    assert!(node.record(&req.volume_id).is_some(), "the record is kept");
}

#[tokio::test]
async fn a_refresh_the_controller_does_not_answer_lets_unpublish_in_within_its_budget() {
    let mut node = Node::start().await;
    let mut volumes = manager(node.dir.path(), &node.endpoint, &node.medium);
    volumes.refresh_budget = Duration::from_millis(500);
    node.volumes = Arc::new(volumes);
    node.controller.always(Ok(bundle("v1", in_an_hour())));
    let req = node.request("web-0");
    node.volumes.publish(req.clone()).await.expect("publish");
    // Reached, never answering: the client's own timeout is a minute.
    node.controller.stall(Duration::from_secs(3600));

    let refresh = node.volumes.reconcile_now(&req.volume_id, Cause::Pushed);
    let unpublish = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match node
                .volumes
                .unpublish(&req.volume_id, req.target.clone())
                .await
            {
                Err(VolumeError::Busy(_)) => continue,
                done => return done,
            }
        }
    };
    let (refreshed, unpublished) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(refresh, unpublish)
    })
    .await
    .expect("the volume is let go within the budget");

    assert_eq!(refreshed.expect("kept"), Outcome::KeptLastGood);
    assert_eq!(unpublished.expect("unpublished"), Outcome::Removed);
}
