//! The volume lifecycle end to end without root: plain directories for
//! tmpfs ([`DirMedium`]), a real state directory, and a real gRPC
//! controller double on a loopback socket.

mod double;
mod on_tmpfs;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kcred_proto::kcred::v1::volume_update::Action;
use kcred_proto::kcred::v1::{HeartbeatResponse, PodRef, Reason, VolumeUpdate};
use kcred_proto::reason::status;
use tonic::Code;

use self::double::{Controller, Fetch, bundle};
use super::*;
use crate::controller_client::ControllerClient;
use crate::csi::request::inline_volume_id;
use crate::storage::dir::DirMedium;
use crate::storage::state::{Phase, StateDir, WipeReason};
use crate::support::time::{Deadline, unix_secs};

struct Node {
    dir: tempfile::TempDir,
    medium: Arc<DirMedium>,
    controller: Controller,
    endpoint: String,
    volumes: Arc<VolumeManager>,
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("kubelet/pods")).expect("mkdir");
        let controller = Controller::default();
        let endpoint = controller.serve().await;
        let medium = Arc::new(DirMedium::new());
        let volumes = Arc::new(manager(dir.path(), &endpoint, &medium));
        Node {
            dir,
            medium,
            controller,
            endpoint,
            volumes,
        }
    }

    /// The driver restarted: a new manager over the same state directory
    /// and the same mounts (they survive the driver).
    fn restart(&mut self) {
        self.volumes = Arc::new(manager(self.dir.path(), &self.endpoint, &self.medium));
    }

    /// Kubelet's request for volume `creds` of pod `pod` (creating the
    /// parent of the target, as kubelet does).
    fn request(&self, pod: &str) -> PublishRequest {
        let uid = format!("uid-{pod}");
        let target = self
            .dir
            .path()
            .join("kubelet/pods")
            .join(&uid)
            .join("volumes/kubernetes.io~csi/creds/mount");
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        PublishRequest {
            volume_id: inline_volume_id(&uid, "creds"),
            target,
            pod: PodRef {
                namespace: "web".into(),
                name: pod.into(),
                uid,
                service_account: "default".into(),
            },
            readonly: false,
        }
    }

    fn record(&self, volume_id: &str) -> Option<crate::storage::state::PublishedVolume> {
        StateDir::open(self.dir.path().join("state"))
            .expect("state")
            .load(volume_id)
            .expect("load")
    }
}

fn manager(root: &Path, endpoint: &str, medium: &Arc<DirMedium>) -> VolumeManager {
    let client = ControllerClient::new(endpoint, "node-a").expect("client");
    let state = StateDir::open(root.join("state")).expect("state");
    VolumeManager::new(
        client,
        state,
        Arc::clone(medium) as Arc<dyn crate::storage::Medium>,
    )
}

fn secret(target: &Path) -> Option<String> {
    std::fs::read_to_string(target.join("secret")).ok()
}

fn in_an_hour() -> i64 {
    unix_secs(SystemTime::now()) + 3600
}

fn csi_code(e: VolumeError) -> Code {
    tonic::Status::from(e).code()
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

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
async fn a_publish_interrupted_by_a_crash_is_completed_by_kubelets_retry() {
    let mut node = Node::start().await;
    let req = node.request("web-0");
    // The crash: recorded and mounted, never filled.
    node.controller.then(Ok(bundle("v1", 0)));
    node.medium.fail_writes(true);
    let _ = node.volumes.publish(req.clone()).await;
    assert_eq!(
        node.record(&req.volume_id),
        None,
        "a failed publish is undone"
    );
    node.medium.fail_writes(false);
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
