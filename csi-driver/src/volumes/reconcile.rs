//! Carrying out the lifecycle's [`Plan`] for one volume: the only code
//! that talks to the controller and the storage on a volume's behalf.
//!
//! Each plan does at most one controller call, then all its node-side work
//! in one blocking task that owns the volume's lock: a kubelet call that
//! is cancelled midway cannot let a retry run beside a mount in progress.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use kcred_proto::kcred::v1::Bundle;
use tokio::sync::OwnedMutexGuard;
use zeroize::Zeroizing;

use super::error::VolumeError;
use super::lifecycle::{Observed, Plan, PublishRequest, Trigger, decide};
use super::manager::VolumeManager;
use crate::controller_client::ControllerError;
use crate::storage::atomic_writer::FileSpec;
use crate::storage::state::{Phase, PublishedVolume, WipeReason};
use crate::storage::{Target, remove_mount_point};
use crate::support::time::Deadline;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A volume was mounted and filled.
    Mounted,
    /// New files were written.
    Refreshed,
    /// The files were already current.
    Unchanged,
    /// The refresh failed; the pod keeps the last good files.
    KeptLastGood,
    /// The files were removed, the mount kept.
    Wiped,
    /// The volume was unmounted and forgotten.
    Removed,
    /// Nothing needed doing.
    Nothing,
}

/// When to look at the volume again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// At the controller's refresh deadline.
    At(Deadline),
    /// After a backoff: the refresh failed.
    Retry,
    /// Only when kubelet or the controller says so.
    Idle,
}

/// A run's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// What was done.
    pub outcome: Outcome,
    /// When to look again.
    pub then: Then,
}

impl Step {
    fn new(outcome: Outcome, then: Then) -> Self {
        Step { outcome, then }
    }
}

/// The next look a record calls for by itself.
fn then_of(record: Option<&PublishedVolume>) -> Then {
    match record.map(|r| &r.phase) {
        Some(Phase::Mounted {
            refresh_at: Some(at),
            ..
        }) => Then::At(*at),
        _ => Then::Idle,
    }
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

impl VolumeManager {
    /// Looks at the volume, decides, and does it. `guard` is the volume's
    /// lock, held until the work is done.
    pub(crate) async fn reconcile(
        &self,
        volume_id: &str,
        trigger: Trigger,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Step, VolumeError> {
        let (record, plan) = self.plan(volume_id, &trigger).await?;
        self.execute(volume_id, record, plan, guard).await
    }

    /// Looks at the volume and decides (its lock is held by the caller).
    pub(crate) async fn plan(
        &self,
        volume_id: &str,
        trigger: &Trigger,
    ) -> Result<(Option<PublishedVolume>, Plan), VolumeError> {
        let record = self.state.get(volume_id);
        let fresh = record.as_ref().is_some_and(|rec| self.is_fresh(rec));
        let (target, holder) = self.observe(volume_id, trigger, record.as_ref()).await?;
        let plan = decide(
            trigger,
            Observed {
                record: record.as_ref(),
                target,
                holder: holder.as_deref(),
                fresh,
            },
        );
        tracing::debug!(volume = %volume_id, ?trigger, ?target, ?plan, "reconcile");
        Ok((record, plan))
    }

    /// Does what was decided. `guard` is the volume's lock, held until the
    /// work is done.
    pub(crate) async fn execute(
        &self,
        volume_id: &str,
        record: Option<PublishedVolume>,
        plan: Plan,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Step, VolumeError> {
        match plan {
            Plan::Refuse(refusal) => Err(refusal.into()),
            Plan::Nothing => Ok(Step::new(Outcome::Nothing, then_of(record.as_ref()))),
            Plan::Wait => Ok(Step::new(Outcome::Nothing, Then::Idle)),
            Plan::Issue { request, mount } => self.issue(request, record, mount, guard).await,
            Plan::Refresh => match record {
                Some(rec) => Ok(self.refresh(rec, guard).await),
                None => Ok(Step::new(Outcome::Nothing, Then::Idle)),
            },
            Plan::MountEmpty => match record {
                Some(rec) => self.mount_empty(rec, guard).await,
                None => Ok(Step::new(Outcome::Nothing, Then::Idle)),
            },
            Plan::Wipe { mounted } => match record {
                Some(rec) => self.wipe(rec, mounted, guard).await,
                None => Ok(Step::new(Outcome::Nothing, Then::Idle)),
            },
            Plan::Remove { wipe } => match record {
                Some(rec) => self.remove(rec, wipe, guard).await,
                None => Ok(Step::new(Outcome::Nothing, Then::Idle)),
            },
            Plan::RemoveMountPoint(target) => {
                blocking(move || {
                    let _guard = guard;
                    Ok(remove_mount_point(&target)?)
                })
                .await?;
                Ok(Step::new(Outcome::Removed, Then::Idle))
            }
            Plan::Forget => {
                let (state, id) = (Arc::clone(&self.state), volume_id.to_string());
                let medium = Arc::clone(&self.medium);
                blocking(move || {
                    let _guard = guard;
                    if let Some(rec) = &record {
                        medium.forget(rec)?;
                    }
                    Ok(state.remove(&id)?)
                })
                .await?;
                self.metrics.mounted_volumes.dec();
                self.freshness.forget(volume_id);
                self.pod_tokens.forget(volume_id);
                tracing::warn!(volume = %volume_id, "forgotten; its target holds what this driver did not put there");
                Ok(Step::new(Outcome::Removed, Then::Idle))
            }
        }
    }

    /// Whether the volume's files are known current (see
    /// [`super::freshness`]).
    fn is_fresh(&self, rec: &PublishedVolume) -> bool {
        let deadline_due = match &rec.phase {
            Phase::Mounted {
                refresh_at: Some(at),
                ..
            } => at.is_due(SystemTime::now()),
            _ => false,
        };
        self.freshness
            .evidence(
                &rec.volume_id,
                deadline_due,
                self.trigger_pending(&rec.volume_id),
            )
            .is_fresh(Instant::now())
    }

    /// What the relevant target holds, and another volume recorded at a
    /// publish's target. Records are in memory; only the target is looked
    /// at on disk.
    async fn observe(
        &self,
        volume_id: &str,
        trigger: &Trigger,
        record: Option<&PublishedVolume>,
    ) -> Result<(Target, Option<String>), VolumeError> {
        let target: Option<PathBuf> = match trigger {
            Trigger::Publish(req) => Some(req.target.clone()),
            Trigger::Unpublish { target } => Some(target.clone()),
            _ => record.map(|r| r.target.clone()),
        };
        let holder = match (trigger, record) {
            (Trigger::Publish(req), r) if r.is_none_or(|r| r.target != req.target) => {
                self.state.holder_of(&req.target, volume_id)
            }
            _ => None,
        };
        let seen = match target {
            None => Target::Missing,
            // Kubelet's publish: what its target is (an lstat, a stat of its
            // parent, then a statfs of a mount or a listing of an empty
            // directory, on kubelet's own local directory) is cheaper looked
            // at here than with a hand-off to a blocking thread and back.
            // For a republish of files known current, that is all there is
            // to do.
            Some(t) if matches!(trigger, Trigger::Publish(_)) => self.medium.inspect(&t)?,
            Some(t) => {
                let medium = Arc::clone(&self.medium);
                blocking(move || Ok(medium.inspect(&t)?)).await?
            }
        };
        Ok((seen, holder))
    }

    /// A first issue: fetch (a refusal leaves nothing behind), record,
    /// mount, write, record as mounted. A failure after the record undoes
    /// everything this call did.
    async fn issue(
        &self,
        req: PublishRequest,
        before: Option<PublishedVolume>,
        mount: bool,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Step, VolumeError> {
        let token =
            self.pod_tokens
                .current(&req.volume_id, &req.pod.uid, std::time::SystemTime::now());
        let asked = Instant::now();
        let mut bundle = self
            .client
            .fetch_bundle_with_token(req.pod.clone(), &req.volume_id, false, token.as_ref())
            .await?;
        let files = files_of(&mut bundle);
        let refresh_at = Deadline::from_controller(bundle.refresh_after_unix);
        let mut rec = PublishedVolume {
            volume_id: req.volume_id.clone(),
            target: req.target.clone(),
            pod_namespace: req.pod.namespace.clone(),
            pod_name: req.pod.name.clone(),
            pod_uid: req.pod.uid.clone(),
            service_account: req.pod.service_account.clone(),
            readonly: req.readonly,
            uid: bundle.uid,
            gid: bundle.gid,
            published_at: before
                .as_ref()
                .map_or_else(Deadline::now, |b| b.published_at),
            phase: Phase::Publishing,
        };
        let (state, medium) = (Arc::clone(&self.state), Arc::clone(&self.medium));
        let is_new = before.is_none();
        let generation = bundle.generation.clone();
        let freshness = Arc::clone(&self.freshness);
        blocking(move || {
            let _guard = guard;
            // Record before writing: every mount this driver makes has one.
            state.save(&rec)?;
            let filled = (|| {
                if mount {
                    medium.mount(&rec)?;
                }
                medium.write(&rec, &files)
            })();
            if let Err(e) = filled {
                match before {
                    // A mount that vanished and could not be made again:
                    // the record stays as it was.
                    Some(b @ PublishedVolume { phase: Phase::Mounted { .. }, .. }) => {
                        if mount {
                            let _ = medium.unmount(&rec);
                        }
                        state.save(&b)?;
                    }
                    _ => {
                        if let Err(u) = medium.unmount(&rec) {
                            tracing::error!(volume = %rec.volume_id, error = %u, "cleanup unmount failed");
                        } else {
                            state.remove(&rec.volume_id)?;
                        }
                    }
                }
                return Err(e.into());
            }
            rec.phase = Phase::Mounted {
                generation,
                refresh_at,
            };
            state.save(&rec)?;
            freshness.confirm(&rec.volume_id, asked);
            Ok(())
        })
        .await?;
        if is_new {
            self.metrics.mounted_volumes.inc();
        }
        tracing::info!(volume = %req.volume_id, pod = %format!("{}/{}", req.pod.namespace, req.pod.name),
            generation = %bundle.generation, readonly = req.readonly, "volume published");
        Ok(Step::new(
            Outcome::Mounted,
            refresh_at.map_or(Then::Idle, Then::At),
        ))
    }

    /// A refresh of a mounted volume. Never fails the caller: the pod keeps
    /// its last good files and a retry is scheduled; a revoked volume is
    /// wiped.
    async fn refresh(&self, rec: PublishedVolume, guard: OwnedMutexGuard<()>) -> Step {
        // Until this refresh succeeds, the files are not known current.
        self.freshness.forget(&rec.volume_id);
        let token =
            self.pod_tokens
                .current(&rec.volume_id, &rec.pod_uid, std::time::SystemTime::now());
        let asked = Instant::now();
        let fetched = self
            .within_budget(self.client.fetch_bundle_with_token(
                rec.pod(),
                &rec.volume_id,
                true,
                token.as_ref(),
            ))
            .await;
        self.apply_refresh(rec, guard, asked, fetched).await
    }

    /// `fetch`, given up after the refresh budget (the volumes' locks are
    /// held meanwhile: see [`super::manager::REFRESH_BUDGET`]) as a
    /// transient failure: the last good files stay, a retry comes.
    pub(super) async fn within_budget<T>(
        &self,
        fetch: impl std::future::Future<Output = Result<T, ControllerError>>,
    ) -> Result<T, ControllerError> {
        tokio::time::timeout(self.refresh_budget, fetch)
            .await
            .unwrap_or_else(|_| {
                Err(ControllerError::Unreachable(
                    tonic::Status::deadline_exceeded(format!(
                        "no controller answered the refresh within {} s",
                        self.refresh_budget.as_secs_f64()
                    )),
                ))
            })
    }

    /// A refresh's second half: writes what the controller answered (to
    /// the question asked at `asked`), or keeps the last good files (a
    /// retry is scheduled), or wipes a revoked volume. The caller forgot
    /// the volume's freshness before it asked.
    pub(crate) async fn apply_refresh(
        &self,
        mut rec: PublishedVolume,
        guard: OwnedMutexGuard<()>,
        asked: Instant,
        fetched: Result<Bundle, ControllerError>,
    ) -> Step {
        let pod = format!("{}/{}", rec.pod_namespace, rec.pod_name);
        let mut bundle = match fetched {
            Ok(b) => b,
            Err(e) if e.is_revoked() => {
                tracing::warn!(volume = %rec.volume_id, %pod, "revoked: removing its files");
                return match self.wipe(rec.clone(), true, guard).await {
                    Ok(step) => step,
                    Err(e) => {
                        tracing::error!(volume = %rec.volume_id, error = %e, "cannot wipe a revoked volume");
                        Step::new(Outcome::KeptLastGood, Then::Retry)
                    }
                };
            }
            Err(e) => {
                self.metrics
                    .refresh_failures
                    .with_label_values(&["controller"])
                    .inc();
                tracing::warn!(volume = %rec.volume_id, %pod, code = ?e.status().code(), reason = ?e.reason(),
                    error = %e.status().message(), "refresh failed; keeping the last good files");
                return Step::new(Outcome::KeptLastGood, Then::Retry);
            }
        };
        let files = files_of(&mut bundle);
        let refresh_at = Deadline::from_controller(bundle.refresh_after_unix);
        rec.uid = bundle.uid;
        rec.gid = bundle.gid;
        rec.phase = Phase::Mounted {
            generation: bundle.generation.clone(),
            refresh_at,
        };
        let (state, medium) = (Arc::clone(&self.state), Arc::clone(&self.medium));
        let volume_id = rec.volume_id.clone();
        let freshness = Arc::clone(&self.freshness);
        let written = blocking(move || {
            let _guard = guard;
            let changed = medium.write(&rec, &files)?;
            // Saved when the generation or the refresh deadline moved on
            // or the owner changed; an unchanged record is not written.
            state.save(&rec)?;
            // Before the lock goes: a republish right after finds it current.
            freshness.confirm(&rec.volume_id, asked);
            Ok(changed)
        })
        .await;
        let then = refresh_at.map_or(Then::Idle, Then::At);
        match written {
            Ok(true) => {
                tracing::info!(volume = %volume_id, %pod, generation = %bundle.generation, "volume refreshed");
                Step::new(Outcome::Refreshed, then)
            }
            Ok(false) => Step::new(Outcome::Unchanged, then),
            Err(e) => {
                self.metrics
                    .refresh_failures
                    .with_label_values(&["write"])
                    .inc();
                tracing::warn!(volume = %volume_id, %pod, error = %e, "refresh write failed; keeping the last good files");
                Step::new(Outcome::KeptLastGood, Then::Retry)
            }
        }
    }

    /// Mounts a wiped volume again, empty: its mount was lost (a node
    /// reboot) and kubelet publishes it for the pod once more.
    async fn mount_empty(
        &self,
        rec: PublishedVolume,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Step, VolumeError> {
        let medium = Arc::clone(&self.medium);
        blocking(move || {
            let _guard = guard;
            medium.mount(&rec)?;
            if let Err(e) = medium.write(&rec, &[]) {
                let _ = medium.unmount(&rec);
                return Err(e.into());
            }
            Ok(())
        })
        .await?;
        Ok(Step::new(Outcome::Wiped, Then::Idle))
    }

    /// Removes a revoked volume's files; the mount stays while the pod runs.
    async fn wipe(
        &self,
        mut rec: PublishedVolume,
        mounted: bool,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Step, VolumeError> {
        let (state, medium) = (Arc::clone(&self.state), Arc::clone(&self.medium));
        let volume_id = rec.volume_id.clone();
        blocking(move || {
            let _guard = guard;
            if mounted {
                medium.write(&rec, &[])?;
            }
            rec.phase = Phase::Wiped {
                reason: WipeReason::Revoked,
            };
            state.save(&rec)?;
            Ok(())
        })
        .await?;
        tracing::warn!(volume = %volume_id, "credentials wiped");
        Ok(Step::new(Outcome::Wiped, Then::Idle))
    }

    /// Unmounts (wiping first if asked), removes the mount point, forgets.
    async fn remove(
        &self,
        rec: PublishedVolume,
        wipe: bool,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Step, VolumeError> {
        let (state, medium) = (Arc::clone(&self.state), Arc::clone(&self.medium));
        let volume_id = rec.volume_id.clone();
        blocking(move || {
            let _guard = guard;
            if wipe && let Err(e) = medium.write(&rec, &[]) {
                tracing::warn!(volume = %rec.volume_id, error = %e, "cannot wipe before unmounting");
            }
            medium.unmount(&rec)?;
            Ok(state.remove(&rec.volume_id)?)
        })
        .await?;
        self.metrics.mounted_volumes.dec();
        self.freshness.forget(&volume_id);
        self.pod_tokens.forget(&volume_id);
        tracing::info!(volume = %volume_id, "volume unpublished");
        Ok(Step::new(Outcome::Removed, Then::Idle))
    }
}
