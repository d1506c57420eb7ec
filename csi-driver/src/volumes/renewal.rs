//! Renewals: each volume is refreshed when the controller said its
//! credentials need it (2/3 of a ticket's or certificate's life), not only
//! when kubelet happens to republish.
//!
//! ```text
//!   Waiting(refresh_after) ──due──▶ Refreshing ──ok──▶ Waiting(new refresh_after)
//!                                        │
//!                                        └─kept last good─▶ Backoff(n) ──due──▶ Refreshing
//! ```
//! A failed refresh keeps the pod's files and retries with jittered
//! exponential backoff (5 s doubling to 5 min). The schedule is rebuilt
//! from the state directory on every pass, so a restarted driver resumes
//! on its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

use super::manager::{PublishOutcome, VolumeManager};

const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Longest sleep between passes: new volumes are noticed this fast.
const MAX_IDLE: Duration = Duration::from_secs(2);

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Backoff {
    failures: u32,
    retry_at_unix: i64,
}

fn backoff_after(failures: u32) -> Duration {
    let exp = MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(8))
        .min(MAX_BACKOFF);
    // Full jitter over the upper half, so nodes do not retry in lockstep.
    let half = exp / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Runs the renewal loop until the task is aborted.
pub async fn run(volumes: Arc<VolumeManager>) {
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    loop {
        let now = now_unix();
        let records = match volumes.volumes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read volume state; renewals wait");
                tokio::time::sleep(MAX_IDLE).await;
                continue;
            }
        };
        backoff.retain(|id, _| records.iter().any(|r| &r.volume_id == id));
        let mut next = now + MAX_IDLE.as_secs() as i64;
        for rec in records.iter().filter(|r| r.refresh_after_unix > 0) {
            let due = backoff
                .get(&rec.volume_id)
                .map_or(rec.refresh_after_unix, |b| b.retry_at_unix);
            if due > now {
                next = next.min(due);
                continue;
            }
            match volumes.renew(rec).await {
                Some(PublishOutcome::KeptLastGood) => {
                    let b = backoff.entry(rec.volume_id.clone()).or_insert(Backoff {
                        failures: 0,
                        retry_at_unix: now,
                    });
                    let wait = backoff_after(b.failures);
                    b.failures += 1;
                    b.retry_at_unix = now_unix() + wait.as_secs().max(1) as i64;
                    tracing::warn!(volume = %rec.volume_id, failures = b.failures, retry_in = ?wait, "renewal failed; will retry");
                }
                Some(_) => {
                    backoff.remove(&rec.volume_id);
                }
                None => {}
            }
        }
        let sleep = (next - now_unix()).clamp(0, MAX_IDLE.as_secs() as i64);
        tokio::time::sleep(Duration::from_secs(sleep as u64).max(Duration::from_millis(200))).await;
    }
}
