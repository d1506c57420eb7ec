//! A push for many volumes that hold the same bundle: one batch call, each
//! volume answered and handled on its own; an older controller gets one
//! fetch per volume.

use super::*;

async fn published(node: &Node, n: usize) -> Vec<PublishRequest> {
    node.controller.always(Ok(bundle("v1", 0)));
    let mut reqs = Vec::new();
    for i in 0..n {
        let req = node.request(&format!("web-{i}"));
        node.volumes.publish(req.clone()).await.expect("publish");
        reqs.push(req);
    }
    reqs
}

async fn push_refresh(node: &Node, reqs: &[PublishRequest]) {
    eventually("the update stream is followed", || {
        node.controller.push(VolumeUpdate {
            action: Action::Refresh as i32,
            volume_ids: reqs.iter().map(|r| r.volume_id.clone()).collect(),
            reason: "rotated".into(),
        }) > 0
    })
    .await;
}

#[tokio::test]
async fn a_push_refreshes_volumes_holding_the_same_bundle_with_one_call() {
    let node = Node::start().await;
    node.controller.serve_batches();
    let reqs = published(&node, 6).await;
    let singles = node.controller.fetches().len();
    // One volume was revoked meanwhile: the batch refuses just that one.
    let revoked = &reqs[2];
    node.controller
        .refuse_in_batches(&revoked.volume_id, Reason::VolumeRevoked);
    node.controller.always(Ok(bundle("v2", 0)));
    let background =
        tokio::spawn(Arc::clone(&node.volumes).run_background(Duration::from_millis(100)));
    push_refresh(&node, &reqs).await;

    eventually("every other volume refreshed", || {
        reqs.iter()
            .filter(|r| r.volume_id != revoked.volume_id)
            .all(|r| secret(&r.target).as_deref() == Some("v2"))
    })
    .await;
    // Read from the driver's memory: reading the state directory while
    // the driver writes would sweep its temp files.
    let phase_of = |id: &str| {
        node.volumes
            .volumes()
            .into_iter()
            .find(|v| v.volume_id == id)
            .map(|v| v.phase)
    };
    eventually("the revoked volume wiped and recorded so", || {
        secret(&revoked.target).is_none()
            && matches!(phase_of(&revoked.volume_id), Some(Phase::Wiped { .. }))
    })
    .await;
    assert!(revoked.target.exists(), "a revoked volume keeps its mount");
    let calls = node.controller.batch_calls();
    assert_eq!(calls.len(), 1, "one call for the push: {calls:?}");
    assert_eq!(calls[0].len(), 6);
    assert!(calls[0].iter().all(|f| f.refresh));
    assert_eq!(
        node.controller.fetches().len(),
        singles,
        "no volume fetched on its own"
    );
    assert_eq!(node.volumes.metrics().batch_fetches.get(), 1);
    background.abort();
}

#[tokio::test]
async fn an_older_controller_without_the_batch_call_gets_one_fetch_per_volume() {
    let node = Node::start().await;
    let reqs = published(&node, 4).await;
    let singles = node.controller.fetches().len();
    node.controller.always(Ok(bundle("v2", 0)));
    let background =
        tokio::spawn(Arc::clone(&node.volumes).run_background(Duration::from_millis(100)));
    push_refresh(&node, &reqs).await;

    eventually("every volume refreshed", || {
        reqs.iter()
            .all(|r| secret(&r.target).as_deref() == Some("v2"))
    })
    .await;
    assert!(node.controller.batch_calls().is_empty());
    assert_eq!(node.controller.fetches().len(), singles + 4);
    assert_eq!(node.volumes.metrics().batch_fetches.get(), 0);
    background.abort();
}
