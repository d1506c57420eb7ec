//! The controller's triggers and the scheduler: deadlines, pushes and
//! heartbeat verdicts.

use super::*;

#[tokio::test]
async fn controller_triggers_wipe_revoked_and_remove_stale_volumes() {
    let node = Node::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let revoked = node.request("web-0");
    let stale = node.request("web-1");
    node.volumes
        .publish(revoked.clone())
        .await
        .expect("publish");
    node.volumes.publish(stale.clone()).await.expect("publish");

    let outcome = node
        .volumes
        .reconcile_now(&revoked.volume_id, Cause::Revoked)
        .await
        .expect("wipe");
    assert_eq!(outcome, Outcome::Wiped);
    assert_eq!(secret(&revoked.target), None);
    assert!(revoked.target.exists());

    let outcome = node
        .volumes
        .reconcile_now(&stale.volume_id, Cause::Stale)
        .await
        .expect("remove");
    assert_eq!(outcome, Outcome::Removed);
    assert!(!stale.target.exists());
    assert_eq!(node.record(&stale.volume_id), None);
}

#[tokio::test]
async fn the_scheduler_refreshes_on_deadlines_and_pushes_and_follows_verdicts() {
    let node = Node::start().await;
    // Due at once: the controller's deadline has passed.
    node.controller.always(Ok(bundle("v1", 1)));
    let a = node.request("web-0");
    let b = node.request("web-1");
    node.volumes.publish(a.clone()).await.expect("publish");
    node.volumes.publish(b.clone()).await.expect("publish");
    node.controller.always(Ok(bundle("v2", 0)));
    let background =
        tokio::spawn(Arc::clone(&node.volumes).run_background(Duration::from_millis(100)));

    eventually("deadline refresh of a", || {
        secret(&a.target).as_deref() == Some("v2")
    })
    .await;

    node.controller.always(Ok(bundle("v3", 0)));
    eventually("the update stream is followed", || {
        node.controller.push(VolumeUpdate {
            action: Action::Refresh as i32,
            volume_ids: vec![a.volume_id.clone()],
            reason: "rotated".into(),
        }) > 0
    })
    .await;
    eventually("pushed refresh of a", || {
        secret(&a.target).as_deref() == Some("v3")
    })
    .await;

    node.controller.heartbeat_answers(HeartbeatResponse {
        lease_ttl_secs: 0,
        stale_volume_ids: vec![b.volume_id.clone()],
        revoked_volume_ids: vec![a.volume_id.clone()],
    });
    eventually("stale b removed", || !b.target.exists()).await;
    eventually("revoked a wiped", || secret(&a.target).is_none()).await;
    assert!(a.target.exists());
    background.abort();
}
