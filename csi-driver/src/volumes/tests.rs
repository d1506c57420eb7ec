//! The volume lifecycle end to end without root: plain directories for
//! tmpfs ([`DirMedium`]), a real state directory, and a real gRPC
//! controller double on a loopback socket.

mod batch;
mod double;
mod on_tmpfs;
mod publish;
mod refresh;
mod republish;
mod triggers;

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
    .expect("manager")
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

/// Publishes as kubelet does: an ABORTED call (another operation holds the
/// volume) is retried.
async fn publish_retrying(volumes: &VolumeManager, req: &PublishRequest) -> Outcome {
    for _ in 0..200 {
        match volumes.publish(req.clone()).await {
            Err(VolumeError::Busy(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other.expect("publish"),
        }
    }
    panic!("volume busy for good");
}
