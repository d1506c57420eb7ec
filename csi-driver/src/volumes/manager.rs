//! The volume manager: every volume on this node, the entry points that
//! trigger their lifecycle, and the one scheduler that runs it.
//!
//! Kubelet's calls run their volume's reconcile at once and answer with
//! its result; they never queue behind another operation on the same
//! volume (ABORTED, kubelet retries). The controller's triggers (pushes,
//! heartbeat verdicts) and the volumes' own deadlines go through the
//! [`Schedule`], which waits for the volume's lock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::ExponentialBackoff;
use tokio::sync::OwnedMutexGuard;

use super::error::VolumeError;
use super::freshness::Freshness;
use super::lifecycle::{Cause, PublishRequest, Trigger};
use super::reconcile::{Outcome, Step, Then};
use super::scheduler::{self, Next, Schedule};
use crate::config::DriverConfig;
use crate::controller_client::ControllerClient;
use crate::metrics::Metrics;
use crate::storage::records::Records;
use crate::storage::state::{Phase, PublishedVolume, StateDir};
use crate::storage::tmpfs_medium::TmpfsMedium;
use crate::storage::{Medium, StorageError};
use crate::support::lock::lock;
use crate::support::retry;

/// Scheduled jobs running at once (a job: one volume, or a batch of
/// volumes refreshed with one call, see [`super::batch`]). A rotation
/// pushes a refresh for every volume holding the credential at the same
/// moment; each job is a network round trip and small tmpfs rewrites, so
/// the node runs many at once, bounded so a node with thousands of volumes
/// does not open thousands of calls or hold thousands of bundles in memory.
const PARALLEL: usize = 32;

/// Idle volume locks are kept until there are at least this many.
const MIN_SWEEP: usize = 64;

/// One lock per volume being worked on.
#[derive(Default)]
struct VolumeLocks {
    map: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The map's size at which idle locks are dropped next.
    sweep_at: usize,
}

/// How long a refresh (a deadline, a pushed rotation) waits for the
/// controllers before it keeps the last good files and retries later. It
/// holds its volumes' locks meanwhile, and kubelet's unpublish of such a
/// volume is answered ABORTED (and retried) until they are free: without
/// a bound, controllers reached but not answering kept a pod from
/// terminating for the client's every round and endpoint (about 12
/// minutes with three). One whole attempt fits (the node's token, then
/// the answer), so a failed one is seen and the next is at another
/// controller.
pub const REFRESH_BUDGET: std::time::Duration = std::time::Duration::from_secs(
    crate::node_identity::TOKEN_WAIT.as_secs()
        + crate::controller_client::CALL_TIMEOUT.as_secs()
        + 30,
);

/// Drives every volume on this node.
pub struct VolumeManager {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) client: ControllerClient,
    pub(crate) state: Arc<Records>,
    pub(crate) medium: Arc<dyn Medium>,
    locks: Mutex<VolumeLocks>,
    schedule: Arc<Schedule>,
    retries: Mutex<HashMap<String, ExponentialBackoff>>,
    pub(crate) freshness: Arc<Freshness>,
    pub(crate) pod_tokens: super::pod_tokens::PodTokens,
    /// Until when volumes are fetched one by one: the controller answered
    /// that it has no batch call (see [`super::batch`]).
    pub(super) batch_off_until: Mutex<Option<std::time::Instant>>,
    /// How long a refresh waits for the controller, holding its volumes'
    /// locks ([`REFRESH_BUDGET`]; shorter in tests).
    pub(crate) refresh_budget: std::time::Duration,
    /// This process's hold on the state directory (a real node's driver).
    owner: Option<crate::storage::state::StateDirOwner>,
}

impl VolumeManager {
    /// The manager of a real node: state under `cfg.state_dir`, volumes on
    /// tmpfs (read-only volumes' private views under `<state_dir>/views`),
    /// counting in `metrics` (the driver makes them first, to serve them
    /// while the node logs in).
    pub fn for_node(
        cfg: &DriverConfig,
        client: ControllerClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StorageError> {
        let state = StateDir::open(&cfg.state_dir)?;
        let owner = state.claim()?;
        let medium = TmpfsMedium::new(cfg.tmpfs_size_bytes, cfg.state_dir.join("views"));
        let mut manager = Self::with_metrics(client, state, Arc::new(medium), metrics)?;
        manager.owner = Some(owner);
        Ok(manager)
    }

    /// A manager over `state` and `medium`. Reads the state directory once
    /// and resumes at once what it records: each mounted volume's refresh
    /// deadline is scheduled again.
    pub fn new(
        client: ControllerClient,
        state: StateDir,
        medium: Arc<dyn Medium>,
    ) -> Result<Self, StorageError> {
        Self::with_metrics(client, state, medium, Metrics::new())
    }

    fn with_metrics(
        client: ControllerClient,
        state: StateDir,
        medium: Arc<dyn Medium>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StorageError> {
        let manager = VolumeManager {
            client: client.with_metrics(Arc::clone(&metrics)),
            metrics,
            state: Arc::new(Records::load(state)?),
            medium,
            locks: Mutex::new(VolumeLocks::default()),
            schedule: Arc::new(Schedule::new()),
            retries: Mutex::new(HashMap::new()),
            freshness: Arc::new(Freshness::default()),
            pod_tokens: Default::default(),
            batch_off_until: Mutex::new(None),
            refresh_budget: REFRESH_BUDGET,
            owner: None,
        };
        manager.resume();
        Ok(manager)
    }

    /// Restart recovery: the records say which volumes exist and when each
    /// is due; mounts survived the driver, so nothing is remounted here
    /// (kubelet's next republish finds and repairs what a reboot lost).
    fn resume(&self) {
        let records = self.state.all();
        self.metrics.mounted_volumes.set(records.len() as i64);
        for rec in &records {
            match &rec.phase {
                Phase::Mounted {
                    refresh_at: Some(at),
                    ..
                } => self.schedule.settle(
                    &rec.volume_id,
                    Some(Next {
                        at: *at,
                        cause: Cause::Deadline,
                    }),
                    self.schedule.mark(),
                ),
                Phase::Publishing => {
                    tracing::info!(volume = %rec.volume_id, "publish was interrupted; kubelet's retry completes it")
                }
                _ => {}
            }
        }
        if !records.is_empty() {
            tracing::info!(
                volumes = records.len(),
                "resumed volumes from the state directory"
            );
        }
    }

    pub(super) fn lock_of(&self, volume_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.locks);
        // Drop idle locks of volumes nobody is working on, once the map has
        // doubled since the last sweep: each call stays O(1) on a node with
        // thousands of volumes.
        if locks.map.len() >= locks.sweep_at {
            locks
                .map
                .retain(|_, l| Arc::strong_count(l) > 1 || l.try_lock().is_err());
            locks.sweep_at = (locks.map.len() * 2).max(MIN_SWEEP);
        }
        Arc::clone(locks.map.entry(volume_id.to_string()).or_default())
    }

    /// Takes the volume's lock, or fails at once if it is held: kubelet
    /// retries an ABORTED call, it must not queue behind a slow one.
    fn try_lock(&self, volume_id: &str) -> Result<OwnedMutexGuard<()>, VolumeError> {
        self.lock_of(volume_id)
            .try_lock_owned()
            .map_err(|_| VolumeError::Busy(volume_id.to_string()))
    }

    /// Kubelet's NodePublishVolume: mounts and fills the volume the first
    /// time, refreshes it on a republish.
    pub async fn publish(&self, req: PublishRequest) -> Result<Outcome, VolumeError> {
        self.publish_with_pod_token(req, None).await
    }

    /// [`VolumeManager::publish`] with the pod token kubelet passed, kept
    /// for this and later fetches of the pod's volume. A publish that
    /// leaves no record (refused, or failed before it recorded anything)
    /// keeps no token either: kubelet sends no unpublish after it.
    pub async fn publish_with_pod_token(
        &self,
        req: PublishRequest,
        token: Option<crate::csi::pod_token::PodToken>,
    ) -> Result<Outcome, VolumeError> {
        let guard = self.try_lock(&req.volume_id)?;
        let volume_id = req.volume_id.clone();
        if let Some(token) = token {
            self.pod_tokens.remember(&volume_id, &req.pod.uid, token);
        }
        let result = self
            .run(&volume_id, Trigger::Publish(req), guard, Cause::Deadline)
            .await;
        // Under the lock again: a publish under way now keeps its token.
        if let Ok(_guard) = self.try_lock(&volume_id)
            && self.state.get(&volume_id).is_none()
        {
            self.pod_tokens.forget(&volume_id);
        }
        result
    }

    /// Kubelet's NodeUnpublishVolume: unmounts and forgets the volume;
    /// succeeds when it is already gone.
    pub async fn unpublish(
        &self,
        volume_id: &str,
        target: PathBuf,
    ) -> Result<Outcome, VolumeError> {
        let guard = self.try_lock(volume_id)?;
        // The pod is leaving: its token is not needed any more.
        self.pod_tokens.forget(volume_id);
        self.run(
            volume_id,
            Trigger::Unpublish { target },
            guard,
            Cause::Deadline,
        )
        .await
    }

    /// Asks for a look at the volume now (a push, a heartbeat verdict);
    /// the scheduler runs it.
    pub fn trigger(&self, volume_id: &str, cause: Cause) {
        self.schedule.trigger(volume_id, cause);
    }

    /// Asks for a look at many volumes now (one push): they are due
    /// together, so the scheduler can refresh them in batches.
    pub fn trigger_all<'a>(&self, volume_ids: impl IntoIterator<Item = &'a str>, cause: Cause) {
        self.schedule.trigger_all(volume_ids, cause);
    }

    /// Runs what the scheduler would for `cause` now, waiting for the
    /// volume's lock.
    pub async fn reconcile_now(
        &self,
        volume_id: &str,
        cause: Cause,
    ) -> Result<Outcome, VolumeError> {
        let guard = self.lock_of(volume_id).lock_owned().await;
        self.run(volume_id, cause.trigger(), guard, cause).await
    }

    /// One reconcile, then the volume's next look: its deadline, a retry
    /// with backoff (same cause), or none.
    async fn run(
        &self,
        volume_id: &str,
        trigger: Trigger,
        guard: OwnedMutexGuard<()>,
        retry_cause: Cause,
    ) -> Result<Outcome, VolumeError> {
        let mark = self.schedule.mark();
        let scheduled = !matches!(trigger, Trigger::Publish(_) | Trigger::Unpublish { .. });
        let result = self.reconcile(volume_id, trigger, guard).await;
        self.settle(volume_id, &result, scheduled, retry_cause, mark);
        result.map(|step| step.outcome)
    }

    /// Sets the volume's next look after a run that began at `mark`.
    pub(super) fn settle(
        &self,
        volume_id: &str,
        result: &Result<Step, VolumeError>,
        scheduled: bool,
        retry_cause: Cause,
        mark: u64,
    ) {
        let then = match result {
            Ok(Step { then, .. }) => Some(*then),
            // A scheduled look that failed (storage) is retried; kubelet
            // retries its own calls.
            Err(_) if scheduled => Some(Then::Retry),
            Err(_) => None,
        };
        if let Some(then) = then {
            let next = match then {
                Then::At(at) => {
                    lock(&self.retries).remove(volume_id);
                    Some(Next {
                        at,
                        cause: Cause::Deadline,
                    })
                }
                Then::Retry => {
                    let delay = lock(&self.retries)
                        .entry(volume_id.to_string())
                        .or_insert_with(retry::refresh)
                        .next()
                        .unwrap_or(Duration::from_secs(300));
                    tracing::debug!(volume = %volume_id, retry_in = ?delay, "retry scheduled");
                    Some(Next {
                        at: crate::support::time::Deadline::after(delay),
                        cause: retry_cause,
                    })
                }
                Then::Idle => {
                    lock(&self.retries).remove(volume_id);
                    None
                }
            };
            self.schedule.settle(volume_id, next, mark);
        }
    }

    /// A mark to settle scheduled runs that start now with.
    pub(super) fn mark(&self) -> u64 {
        self.schedule.mark()
    }

    /// Runs the driver's background work until the task is aborted: the
    /// scheduler, the heartbeat (every `heartbeat_every` until the
    /// controller says otherwise) and the controller's update stream.
    pub async fn run_background(self: Arc<Self>, heartbeat_every: Duration) {
        let (me, grouper) = (Arc::clone(&self), Arc::clone(&self));
        let scheduled = scheduler::run(
            Arc::clone(&self.schedule),
            PARALLEL,
            move |due| grouper.group(due),
            move |due| {
                let me = Arc::clone(&me);
                async move { me.run_due(due).await }
            },
            // A burst (a rotation refreshing every volume holding the
            // credential, renewals come due together) is over and the node
            // idles: what it allocated is free again, and its pages go back
            // to the kernel. Rotating 100 volumes grows the driver's RSS by
            // 0.7-0.8 MiB with this, 1.2-1.5 without (the README's
            // "Measured").
            || {
                tokio::task::spawn_blocking(kcred_runtime::malloc::release_free_memory);
            },
        );
        tokio::join!(
            scheduled,
            super::sync::run_heartbeats(Arc::clone(&self), heartbeat_every),
            super::sync::run_updates(Arc::clone(&self)),
        );
    }

    /// Whether a trigger for the volume is due or stronger than a plain
    /// future deadline: its files are then not known current.
    pub(crate) fn trigger_pending(&self, volume_id: &str) -> bool {
        self.schedule.pending(volume_id).is_some_and(|(at, cause)| {
            cause > Cause::Deadline || at.is_due(std::time::SystemTime::now())
        })
    }

    /// Whether the controller's update stream is followed now.
    pub fn following_updates(&self) -> bool {
        self.freshness.following()
    }

    /// What is pending for a volume in the schedule.
    pub fn pending(&self, volume_id: &str) -> Option<(crate::support::time::Deadline, Cause)> {
        self.schedule.pending(volume_id)
    }

    /// Every volume this node holds (non-secret state).
    pub fn volumes(&self) -> Vec<PublishedVolume> {
        self.state.all()
    }

    /// The ids of every volume this node holds, as the heartbeat reports
    /// them: from memory, the state directory is not read again.
    pub fn held_ids(&self) -> Vec<String> {
        self.state.ids()
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
        self.state.usable()
    }
}
