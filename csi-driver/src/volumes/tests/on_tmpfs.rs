//! The lifecycle on real tmpfs mounts: what only the kernel can show
//! (read-only binds, other drivers' mounts). Needs root.

use std::path::PathBuf;

use nix::mount::MntFlags;

use super::double::{Controller, bundle};
use super::*;
use crate::storage::tmpfs::{self, TmpfsOptions};
use crate::storage::tmpfs_medium::TmpfsMedium;

struct TmpfsNode {
    dir: tempfile::TempDir,
    controller: Controller,
    volumes: VolumeManager,
}

impl TmpfsNode {
    async fn start() -> TmpfsNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let controller = Controller::default();
        let endpoint = controller.serve().await;
        let client = ControllerClient::new(&endpoint, "node-a").expect("client");
        let state = StateDir::open(dir.path().join("state")).expect("state");
        let medium = TmpfsMedium::new(1 << 20, dir.path().join("state/views"));
        let volumes = VolumeManager::new(client, state, Arc::new(medium)).expect("manager");
        TmpfsNode {
            dir,
            controller,
            volumes,
        }
    }

    fn request(&self, pod: &str, readonly: bool) -> PublishRequest {
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
            readonly,
        }
    }

    fn mount_points(&self) -> Vec<PathBuf> {
        let mut out = vec![];
        for base in ["kubelet/pods", "state/views"] {
            let Ok(entries) = std::fs::read_dir(self.dir.path().join(base)) else {
                continue;
            };
            for e in entries.flatten() {
                out.push(e.path());
                out.push(e.path().join("volumes/kubernetes.io~csi/creds/mount"));
            }
        }
        out
    }
}

impl Drop for TmpfsNode {
    fn drop(&mut self) {
        for p in self.mount_points() {
            while nix::mount::umount2(&p, MntFlags::MNT_DETACH).is_ok() {}
        }
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_read_only_volume_is_published_read_only_and_refreshed_through_the_private_view() {
    let node = TmpfsNode::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0", true);

    node.volumes.publish(req.clone()).await.expect("publish");
    assert_eq!(secret(&req.target).as_deref(), Some("v1"));
    let refused = std::fs::write(req.target.join("planted"), b"x").expect_err("read-only");
    assert_eq!(refused.raw_os_error(), Some(nix::libc::EROFS));

    node.controller.always(Ok(bundle("v2", 0)));
    assert_eq!(
        node.volumes.publish(req.clone()).await.expect("republish"),
        Outcome::Refreshed
    );
    assert_eq!(secret(&req.target).as_deref(), Some("v2"));
    let writable = PublishRequest {
        readonly: false,
        ..req.clone()
    };
    let err = node.volumes.publish(writable).await.expect_err("changed");
    assert_eq!(csi_code(err), Code::AlreadyExists);

    node.volumes
        .unpublish(&req.volume_id, req.target.clone())
        .await
        .expect("unpublish");
    assert!(!req.target.exists());
    let views: Vec<_> = std::fs::read_dir(node.dir.path().join("state/views"))
        .expect("views dir")
        .collect();
    assert!(views.is_empty(), "private view removed");
}

#[tokio::test]
#[ignore = "needs root"]
async fn another_drivers_tmpfs_at_the_target_is_neither_written_nor_unmounted() {
    let node = TmpfsNode::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0", false);
    let theirs = TmpfsOptions {
        size_bytes: 1 << 16,
        uid: 0,
        gid: 0,
        mode: 0o755,
    };
    tmpfs::mount_tmpfs(&req.target, &theirs).expect("their mount");
    std::fs::write(req.target.join("theirs"), b"x").expect("write");

    let err = node
        .volumes
        .publish(req.clone())
        .await
        .expect_err("not ours");
    assert_eq!(csi_code(err), Code::FailedPrecondition);
    let err = node
        .volumes
        .unpublish(&req.volume_id, req.target.clone())
        .await
        .expect_err("not ours");
    assert_eq!(csi_code(err), Code::FailedPrecondition);

    assert!(
        tmpfs::is_tmpfs_mount(&req.target).expect("stat"),
        "still mounted"
    );
    assert_eq!(secret(&req.target), None);
    assert!(req.target.join("theirs").exists());
    assert!(node.controller.fetches().is_empty());
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_non_empty_target_directory_is_never_mounted_over() {
    let node = TmpfsNode::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0", false);
    std::fs::create_dir(&req.target).expect("mkdir");
    std::fs::write(req.target.join("data"), b"would be shadowed").expect("write");

    let err = node
        .volumes
        .publish(req.clone())
        .await
        .expect_err("not empty");

    assert_eq!(csi_code(err), Code::FailedPrecondition);
    assert!(!tmpfs::is_tmpfs_mount(&req.target).expect("stat"));
    assert!(req.target.join("data").exists());
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_read_only_volume_forgotten_leaves_no_private_view_mounted() {
    let node = TmpfsNode::start().await;
    node.controller.always(Ok(bundle("v1", 0)));
    let req = node.request("web-0", true);
    node.volumes.publish(req.clone()).await.expect("publish");
    // The target stops being this volume's mount: detached, and something
    // else put there.
    while nix::mount::umount2(&req.target, MntFlags::MNT_DETACH).is_ok() {}
    std::fs::write(req.target.join("theirs"), b"x").expect("write");

    node.volumes
        .unpublish(&req.volume_id, req.target.clone())
        .await
        .expect("forgotten");

    let state = StateDir::open(node.dir.path().join("state")).expect("state");
    assert!(
        state.load(&req.volume_id).expect("load").is_none(),
        "forgotten"
    );
    assert!(
        req.target.join("theirs").exists(),
        "the target is left alone"
    );
    let views: Vec<_> = std::fs::read_dir(node.dir.path().join("state/views"))
        .expect("views dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        views.is_empty(),
        "private view unmounted and removed: {views:?}"
    );
}
