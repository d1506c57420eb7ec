//! The volume lifecycle as one explicit state machine.
//!
//! ```text
//!            publish (bundle fetched)              unpublish
//!  Absent ──────────────────────────────▶ Mounted ──────────▶ Absent
//!    │  fetch/mount/write fails: nothing      │ ▲
//!    │  is left behind, error to kubelet      │ │ republish: refresh files
//!    └────────────────────────────────────    └─┘ (a failed refresh keeps the
//!                                                 last good files, answers OK)
//! ```
//! A republish never unmounts and never fails because of the controller:
//! kubelet tears down the mount directory of a volume whose republish
//! returns a final error (kubernetes/kubernetes#121271), so a refresh that
//! cannot reach the controller keeps the files the pod already has.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kcred_proto::kcred::v1::{Bundle, PodRef};
use zeroize::Zeroizing;

use crate::config::DriverConfig;
use crate::controller_client::ControllerClient;
use crate::metrics::Metrics;
use crate::storage::StorageError;
use crate::storage::atomic_writer::{AtomicWriter, FileSpec, Ownership};
use crate::storage::state::{StateDir, VolumeRecord};
use crate::storage::tmpfs::{self, TmpfsOptions};

/// Why a volume operation failed; each maps to one CSI status code.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Another operation on the same volume is running (CSI: ABORTED).
    #[error("an operation on volume {0} is already in progress")]
    Busy(String),
    /// The volume is published elsewhere (CSI: FAILED_PRECONDITION).
    #[error("{0}")]
    Conflict(String),
    /// The controller refused or failed; its status is passed on.
    #[error("controller: {}", .0.message())]
    Controller(tonic::Status),
    /// Node-side storage failed (CSI: INTERNAL).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A blocking task failed (CSI: INTERNAL).
    #[error("internal task failed: {0}")]
    Task(String),
}

/// A validated publish request.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// CSI volume id.
    pub volume_id: String,
    /// Where to mount.
    pub target: PathBuf,
    /// The pod the volume belongs to.
    pub pod: PodRef,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// A new tmpfs was mounted and filled.
    Mounted,
    /// The volume was already mounted; its files were replaced.
    Refreshed,
    /// The volume was already mounted and up to date.
    Unchanged,
    /// The refresh failed; the last good files stay (the error is logged).
    KeptLastGood,
}

/// Drives every volume on this node.
pub struct VolumeManager {
    metrics: Arc<Metrics>,
    cfg: DriverConfig,
    client: ControllerClient,
    state: Arc<StateDir>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn files_of(bundle: &mut Bundle) -> Vec<FileSpec> {
    bundle
        .files
        .iter_mut()
        .map(|f| FileSpec {
            name: f.name.clone(),
            content: Zeroizing::new(std::mem::take(&mut f.content)),
            mode: f.mode,
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VolumeError::Task(e.to_string()))?
}

/// Mounts a fresh tmpfs at `target` and writes the bundle; on any failure
/// unmounts and removes what it created, so no mount is left behind.
fn mount_and_fill(
    target: &Path,
    size: u64,
    files: &[FileSpec],
    owner: Ownership,
) -> Result<(), VolumeError> {
    // mount_tmpfs creates the `mount` directory itself when it is missing.
    let created_dir = !target.exists();
    // The root is root's, readable by the role account's group: a pod that
    // owned it could chmod it and tamper with `..data`.
    let opts = TmpfsOptions {
        size_bytes: size,
        uid: 0,
        gid: owner.gid,
        mode: 0o550,
    };
    let result = tmpfs::mount_tmpfs(target, &opts)
        .and_then(|()| AtomicWriter::new(target).write(files, owner).map(|_| ()));
    if let Err(e) = result {
        if let Err(u) = tmpfs::unmount(target) {
            tracing::error!(target = %target.display(), error = %u, "cleanup unmount failed");
        }
        if created_dir {
            let _ = std::fs::remove_dir(target);
        }
        return Err(e.into());
    }
    Ok(())
}

impl VolumeManager {
    /// Builds the manager; `state` is the node's state directory.
    pub fn new(cfg: DriverConfig, client: ControllerClient, state: StateDir) -> Self {
        let metrics = Metrics::new();
        metrics
            .mounted_volumes
            .set(state.list().map(|v| v.len() as i64).unwrap_or(0));
        VolumeManager {
            metrics,
            cfg,
            client,
            state: Arc::new(state),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for the volume's lock: for work that must happen (a wipe),
    /// not for kubelet's calls, which must not queue.
    async fn lock_wait(&self, volume_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = match self.locks.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            Arc::clone(map.entry(volume_id.to_string()).or_default())
        };
        lock.lock_owned().await
    }

    /// Takes the volume's lock, or fails at once if it is held: kubelet
    /// retries an ABORTED call, it must not queue behind a slow one.
    fn try_lock(&self, volume_id: &str) -> Result<tokio::sync::OwnedMutexGuard<()>, VolumeError> {
        let lock = {
            let mut map = match self.locks.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.retain(|_, l| Arc::strong_count(l) > 1 || l.try_lock().is_err());
            Arc::clone(map.entry(volume_id.to_string()).or_default())
        };
        lock.try_lock_owned()
            .map_err(|_| VolumeError::Busy(volume_id.to_string()))
    }

    /// Publishes a volume: mounts and fills it the first time, refreshes it
    /// on a republish.
    pub async fn publish(&self, req: PublishRequest) -> Result<PublishOutcome, VolumeError> {
        let guard = self.try_lock(&req.volume_id)?;
        let state = Arc::clone(&self.state);
        let (vid, target) = (req.volume_id.clone(), req.target.clone());
        let (record, mounted) = blocking(move || {
            let record = state.load(&vid)?;
            let mounted = tmpfs::is_tmpfs_mount(&target)?;
            Ok((record, mounted))
        })
        .await?;

        if let Some(rec) = &record
            && rec.target_path != req.target
        {
            return Err(VolumeError::Conflict(format!(
                "volume {} is already published at {}, not {}",
                req.volume_id,
                rec.target_path.display(),
                req.target.display()
            )));
        }

        if mounted && record.is_some() {
            return Ok(self.refresh(req, guard).await);
        }

        // First publish (or a mount whose state was lost): fetch before
        // touching anything, so a refusal leaves nothing behind.
        let mut bundle = self
            .client
            .fetch_bundle(req.pod.clone(), &req.volume_id, false)
            .await
            .map_err(VolumeError::Controller)?;
        let files = files_of(&mut bundle);
        let owner = Ownership {
            uid: bundle.uid,
            gid: bundle.gid,
        };
        let size = self.cfg.tmpfs_size_bytes;
        let target = req.target.clone();
        let rec = self.record(&req, &bundle);
        let state = Arc::clone(&self.state);
        blocking(move || {
            // The lock goes with the work: a cancelled call cannot let a
            // retry run beside a mount still in progress.
            let _guard = guard;
            if mounted {
                AtomicWriter::new(&target).write(&files, owner)?;
            } else {
                mount_and_fill(&target, size, &files, owner)?;
            }
            if let Err(e) = state.save(&rec) {
                // Without state the driver could not resume this volume.
                if !mounted {
                    let _ = tmpfs::unmount(&target);
                    let _ = std::fs::remove_dir(&target);
                }
                return Err(e.into());
            }
            Ok(())
        })
        .await?;
        self.metrics.mounted_volumes.inc();
        tracing::info!(volume = %req.volume_id, pod = %format!("{}/{}", req.pod.namespace, req.pod.name),
            generation = %bundle.generation, "volume published");
        Ok(PublishOutcome::Mounted)
    }

    fn record(&self, req: &PublishRequest, bundle: &Bundle) -> VolumeRecord {
        VolumeRecord {
            volume_id: req.volume_id.clone(),
            target_path: req.target.clone(),
            pod_namespace: req.pod.namespace.clone(),
            pod_name: req.pod.name.clone(),
            pod_uid: req.pod.uid.clone(),
            service_account: req.pod.service_account.clone(),
            uid: bundle.uid,
            gid: bundle.gid,
            generation: bundle.generation.clone(),
            published_at_unix: now_unix(),
            refresh_after_unix: bundle.refresh_after_unix,
        }
    }

    /// Refreshes a volume whose refresh deadline has come (the renewal
    /// loop); skips it when another operation holds it or it is gone.
    pub async fn renew(&self, rec: &VolumeRecord) -> Option<PublishOutcome> {
        let guard = self.try_lock(&rec.volume_id).ok()?;
        let target = rec.target_path.clone();
        let mounted = blocking(move || Ok(tmpfs::is_tmpfs_mount(&target)?))
            .await
            .ok()?;
        if !mounted {
            return None;
        }
        let req = PublishRequest {
            volume_id: rec.volume_id.clone(),
            target: rec.target_path.clone(),
            pod: PodRef {
                namespace: rec.pod_namespace.clone(),
                name: rec.pod_name.clone(),
                uid: rec.pod_uid.clone(),
                service_account: rec.service_account.clone(),
            },
        };
        Some(self.refresh(req, guard).await)
    }

    /// Removes a revoked volume's credentials but keeps the mount (the pod
    /// still runs; kubelet tears the volume down when the pod goes).
    pub async fn wipe(&self, volume_id: &str) -> Result<(), VolumeError> {
        let guard = self.lock_wait(volume_id).await;
        self.wipe_locked(volume_id, guard).await
    }

    /// Wipes with the volume's lock held (moved in: held until the blocking
    /// work is done, even if the caller goes away).
    async fn wipe_locked(
        &self,
        volume_id: &str,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<(), VolumeError> {
        let state = Arc::clone(&self.state);
        let vid = volume_id.to_string();
        blocking(move || {
            let _guard = guard;
            let Some(mut rec) = state.load(&vid)? else {
                return Ok(());
            };
            if tmpfs::is_tmpfs_mount(&rec.target_path)? {
                AtomicWriter::new(&rec.target_path).write(
                    &[],
                    Ownership {
                        uid: rec.uid,
                        gid: rec.gid,
                    },
                )?;
            }
            rec.refresh_after_unix = 0;
            rec.generation = "wiped".into();
            state.save(&rec)?;
            Ok(())
        })
        .await?;
        tracing::warn!(volume = %volume_id, "credentials wiped");
        Ok(())
    }

    /// Every volume this node holds (non-secret state).
    pub async fn volumes(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let state = Arc::clone(&self.state);
        blocking(move || Ok(state.list()?)).await
    }

    /// Refreshes a mounted volume; never fails the caller.
    async fn refresh(
        &self,
        req: PublishRequest,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> PublishOutcome {
        let pod = format!("{}/{}", req.pod.namespace, req.pod.name);
        let mut bundle = match self
            .client
            .fetch_bundle(req.pod.clone(), &req.volume_id, true)
            .await
        {
            Ok(b) => b,
            Err(status)
                if status.code() == tonic::Code::PermissionDenied
                    && status.message().contains("was revoked") =>
            {
                // Revoked: the files go, not just the renewals.
                if let Err(e) = self.wipe_locked(&req.volume_id, guard).await {
                    tracing::error!(volume = %req.volume_id, error = %e, "cannot wipe a revoked volume");
                }
                return PublishOutcome::KeptLastGood;
            }
            Err(status) => {
                self.metrics
                    .refresh_failures
                    .with_label_values(&["controller"])
                    .inc();
                tracing::warn!(volume = %req.volume_id, %pod, code = ?status.code(), error = %status.message(),
                    "refresh failed; keeping the last good files");
                return PublishOutcome::KeptLastGood;
            }
        };
        let files = files_of(&mut bundle);
        let owner = Ownership {
            uid: bundle.uid,
            gid: bundle.gid,
        };
        let target = req.target.clone();
        let rec = self.record(&req, &bundle);
        let state = Arc::clone(&self.state);
        let written = blocking(move || {
            let _guard = guard;
            let changed = AtomicWriter::new(&target).write(&files, owner)?;
            // Saved even when unchanged: the refresh deadline moves on.
            state.save(&rec)?;
            Ok(changed)
        })
        .await;
        match written {
            Ok(true) => {
                tracing::info!(volume = %req.volume_id, %pod, generation = %bundle.generation, "volume refreshed");
                PublishOutcome::Refreshed
            }
            Ok(false) => PublishOutcome::Unchanged,
            Err(e) => {
                self.metrics
                    .refresh_failures
                    .with_label_values(&["write"])
                    .inc();
                tracing::warn!(volume = %req.volume_id, %pod, error = %e, "refresh write failed; keeping the last good files");
                PublishOutcome::KeptLastGood
            }
        }
    }

    /// Unmounts and removes a volume; succeeds when it is already gone.
    pub async fn unpublish(&self, volume_id: &str, target: PathBuf) -> Result<(), VolumeError> {
        let guard = self.try_lock(volume_id)?;
        let state = Arc::clone(&self.state);
        let vid = volume_id.to_string();
        let was_mounted = blocking(move || {
            let _guard = guard;
            // Only the volume this driver published there: never another
            // plugin's mount below the pods directory.
            if let Some(rec) = state.load(&vid)?
                && rec.target_path != target
            {
                return Err(VolumeError::Conflict(format!(
                    "volume {vid} is published at {}, not {}",
                    rec.target_path.display(),
                    target.display()
                )));
            }
            let was_mounted = tmpfs::is_tmpfs_mount(&target)?;
            if was_mounted {
                tmpfs::unmount(&target)?;
            }
            match std::fs::remove_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StorageError::Io {
                        op: "remove target directory",
                        path: target.clone(),
                        source,
                    }
                    .into());
                }
            }
            state.remove(&vid)?;
            Ok(was_mounted)
        })
        .await?;
        if was_mounted {
            self.metrics.mounted_volumes.dec();
        }
        tracing::info!(volume = %volume_id, "volume unpublished");
        Ok(())
    }

    /// This node's controller client.
    pub fn client(&self) -> &ControllerClient {
        &self.client
    }

    /// The driver's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Whether the state directory is usable (for CSI Probe).
    pub fn ready(&self) -> bool {
        self.state.list().is_ok()
    }
}
