//! Refreshing many volumes with one controller call.
//!
//! A rotation pushes a refresh for every volume holding the credential at
//! once, and volumes whose renewals were issued together come due
//! together. Volumes whose records say they hold the same bundle (the
//! same namespace, so the same role account, and the same generation, so
//! the same credential set) want the same thing: the scheduler hands them
//! out as one job, and the job asks for all of them with one
//! `FetchBundles` call. Each volume is still decided, answered and written
//! on its own: a volume refused in a batch is handled exactly as a refused
//! single fetch (revoked: wiped; otherwise the last good files stay and a
//! retry is scheduled). A controller too old for the call answers
//! UNIMPLEMENTED: the job fetches volume by volume, and so do the next
//! ones for [`RETRY_BATCH_AFTER`].

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, StreamExt};
use kcred_proto::kcred::v1::{Bundle, VolumeRequest};
use kcred_proto::limits::MAX_BATCH;
use tokio::sync::OwnedMutexGuard;

use super::lifecycle::{Cause, Plan};
use super::manager::VolumeManager;
use super::scheduler::Due;
use crate::controller_client::ControllerError;
use crate::storage::state::{Phase, PublishedVolume};
use crate::support::lock::lock;

/// Volumes of one job looked at, written (or fetched one by one) at once.
const PER_JOB: usize = 16;

/// How long after an UNIMPLEMENTED answer volumes are fetched one by one
/// before a batch is tried again (the controller may have been upgraded).
pub const RETRY_BATCH_AFTER: Duration = Duration::from_secs(600);

/// A volume decided for a refresh, its lock held.
type Ready = (PublishedVolume, OwnedMutexGuard<()>, Cause);

impl VolumeManager {
    /// Whether batch calls are tried now.
    fn batching(&self) -> bool {
        lock(&self.batch_off_until).is_none_or(|until| Instant::now() >= until)
    }

    /// Splits what is due into the scheduler's jobs: refreshes of volumes
    /// holding the same bundle go together (at most [`MAX_BATCH`] a job);
    /// anything else, alone.
    pub(crate) fn group(&self, due: Due) -> Vec<Due> {
        if due.len() < 2 || !self.batching() {
            return due.into_iter().map(|d| vec![d]).collect();
        }
        let mut jobs = Vec::new();
        let mut wanted: HashMap<(String, String), Due> = HashMap::new();
        for (id, cause) in due {
            let key = match cause {
                Cause::Deadline | Cause::Pushed => {
                    self.state.get(&id).and_then(|rec| match rec.phase {
                        Phase::Mounted { generation, .. } => Some((rec.pod_namespace, generation)),
                        _ => None,
                    })
                }
                Cause::Revoked | Cause::Stale => None,
            };
            match key {
                Some(k) => wanted.entry(k).or_default().push((id, cause)),
                None => jobs.push(vec![(id, cause)]),
            }
        }
        for (_, same) in wanted {
            jobs.extend(same.chunks(MAX_BATCH).map(<[_]>::to_vec));
        }
        jobs
    }

    /// Runs one scheduler job.
    pub(crate) async fn run_due(&self, due: Due) {
        if due.len() > 1 {
            return self.refresh_together(due).await;
        }
        for (id, cause) in due {
            if let Err(e) = self.reconcile_now(&id, cause).await {
                tracing::warn!(volume = %id, ?cause, error = %e, "scheduled reconcile failed; will retry");
            }
        }
    }

    /// Decides every volume of the job; those to refresh are fetched with
    /// one call and written, the others are done on their own.
    async fn refresh_together(&self, mut due: Due) {
        // One lock order for every job: two jobs sharing volumes (one was
        // triggered again while the first ran) cannot wait on each other.
        due.sort_by(|a, b| a.0.cmp(&b.0));
        let mark = self.mark();
        let mut locked = Vec::with_capacity(due.len());
        for (id, cause) in due {
            let guard = self.lock_of(&id).lock_owned().await;
            locked.push((id, cause, guard));
        }
        // Each look at a target is a hop to a blocking thread: many at once.
        let planned: Vec<_> = stream::iter(locked)
            .map(|(id, cause, guard)| async move {
                let plan = self.plan(&id, &cause.trigger()).await;
                (id, cause, guard, plan)
            })
            .buffered(PER_JOB)
            .collect()
            .await;
        let mut ready: Vec<Ready> = Vec::with_capacity(planned.len());
        for (id, cause, guard, plan) in planned {
            let result = match plan {
                Ok((Some(rec), Plan::Refresh)) => {
                    ready.push((rec, guard, cause));
                    continue;
                }
                Ok((record, plan)) => self.execute(&id, record, plan, guard).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(volume = %id, ?cause, error = %e, "scheduled reconcile failed; will retry");
            }
            self.settle(&id, &result, true, cause, mark);
        }
        if ready.is_empty() {
            return;
        }
        let asked = Instant::now();
        // Within the refresh budget: every volume's lock is held meanwhile.
        let answers = self
            .within_budget(async { Ok(self.fetch_together(&ready).await) })
            .await
            .unwrap_or_else(|e| ready.iter().map(|_| Err(e.clone())).collect());
        let steps: Vec<_> = stream::iter(ready.into_iter().zip(answers))
            .map(|((rec, guard, cause), fetched)| async move {
                let id = rec.volume_id.clone();
                (
                    id,
                    cause,
                    self.apply_refresh(rec, guard, asked, fetched).await,
                )
            })
            .buffer_unordered(PER_JOB)
            .collect()
            .await;
        for (id, cause, step) in steps {
            self.settle(&id, &Ok(step), true, cause, mark);
        }
    }

    /// Every ready volume's answer, in order: one batch call, or volume by
    /// volume from a controller without it.
    async fn fetch_together(&self, ready: &[Ready]) -> Vec<Result<Bundle, ControllerError>> {
        let now = SystemTime::now();
        let requests = ready
            .iter()
            .map(|(rec, _, _)| {
                // Until this refresh succeeds, the files are not known current.
                self.freshness.forget(&rec.volume_id);
                let token = self.pod_tokens.current(&rec.volume_id, &rec.pod_uid, now);
                VolumeRequest {
                    pod: Some(rec.pod()),
                    volume_id: rec.volume_id.clone(),
                    refresh: true,
                    pod_token: token.map(|t| t.expose().to_string()).unwrap_or_default(),
                }
            })
            .collect();
        match self.client.fetch_bundles(requests).await {
            Ok(answers) => {
                self.metrics.batch_fetches.inc();
                answers
            }
            Err(e) if e.is_unimplemented() => {
                tracing::info!(
                    volumes = ready.len(),
                    "the controller has no batch call; fetching volume by volume"
                );
                *lock(&self.batch_off_until) = Some(Instant::now() + RETRY_BATCH_AFTER);
                let singles: Vec<_> = ready
                    .iter()
                    .map(|(rec, _, _)| {
                        let token = self.pod_tokens.current(&rec.volume_id, &rec.pod_uid, now);
                        (rec.pod(), rec.volume_id.clone(), token)
                    })
                    .collect();
                let client = &self.client;
                stream::iter(singles)
                    .map(|(pod, volume_id, token)| async move {
                        client
                            .fetch_bundle_with_token(pod, &volume_id, true, token.as_ref())
                            .await
                    })
                    .buffered(PER_JOB)
                    .collect()
                    .await
            }
            Err(e) => ready.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}
