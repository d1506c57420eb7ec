//! Staying in step with the controller: the lease heartbeat, and the
//! update stream.
//!
//! - Every heartbeat reports the volumes this node holds; the controller
//!   answers which belong to pods that are gone or bound elsewhere (a node
//!   that was lost and came back finds its pods rescheduled), and those are
//!   unmounted and wiped.
//! - The update stream carries pushes: REFRESH (a rotation) refreshes the
//!   volumes now; WIPE (a revocation) removes their credentials. A broken
//!   stream is re-opened with jittered backoff; meanwhile renewals and
//!   republishes keep volumes current.

use std::sync::Arc;
use std::time::Duration;

use kcred_proto::kcred::v1::volume_update::Action;
use rand::Rng;

use super::manager::VolumeManager;

fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.5 + rand::rng().random::<f64>())
}

/// Heartbeats forever (until the task is aborted).
pub async fn run_heartbeats(volumes: Arc<VolumeManager>, default_every: Duration) {
    let mut every = default_every;
    let mut failures = 0u32;
    loop {
        let held: Vec<String> = match volumes.volumes().await {
            Ok(v) => v.into_iter().map(|r| r.volume_id).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read volume state for the heartbeat");
                Vec::new()
            }
        };
        match volumes.client().heartbeat(held).await {
            Ok(resp) => {
                failures = 0;
                if resp.lease_ttl_secs > 0 {
                    every = Duration::from_secs((resp.lease_ttl_secs / 3).max(1));
                }
                for id in resp.revoked_volume_ids {
                    let already = volumes
                        .volumes()
                        .await
                        .ok()
                        .and_then(|v| v.into_iter().find(|r| r.volume_id == id))
                        .is_none_or(|r| r.generation == "wiped");
                    if !already {
                        tracing::warn!(volume = %id, "revoked: wiping its files");
                        if let Err(e) = volumes.wipe(&id).await {
                            tracing::warn!(volume = %id, error = %e, "cannot wipe a revoked volume; will retry");
                        }
                    }
                }
                for id in resp.stale_volume_ids {
                    if let Some(rec) = volumes
                        .volumes()
                        .await
                        .ok()
                        .and_then(|v| v.into_iter().find(|r| r.volume_id == id))
                    {
                        tracing::warn!(volume = %id, pod = %format!("{}/{}", rec.pod_namespace, rec.pod_name),
                            "pod no longer bound here: wiping and unmounting");
                        // Wipe first: a container still running keeps its view
                        // of the tmpfs after the unmount, and it must be empty.
                        if let Err(e) = volumes.wipe(&id).await {
                            tracing::warn!(volume = %id, error = %e, "cannot wipe a stale volume");
                        }
                        if let Err(e) = volumes.unpublish(&id, rec.target_path).await {
                            tracing::warn!(volume = %id, error = %e, "cannot remove a stale volume; will retry");
                        }
                    }
                }
            }
            Err(status) => {
                failures += 1;
                tracing::warn!(code = ?status.code(), error = %status.message(), failures, "heartbeat failed");
            }
        }
        let wait = if failures == 0 {
            every
        } else {
            Duration::from_secs(1 << failures.min(5)).min(every)
        };
        tokio::time::sleep(jittered(wait)).await;
    }
}

/// Follows the controller's update stream forever.
pub async fn run_updates(volumes: Arc<VolumeManager>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match volumes.client().watch_updates().await {
            Ok(mut stream) => {
                backoff = Duration::from_millis(500);
                tracing::info!("following the controller's updates");
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => apply(&volumes, update).await,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "update stream broke");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), "cannot follow updates yet");
            }
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn apply(volumes: &VolumeManager, update: kcred_proto::kcred::v1::VolumeUpdate) {
    let records = volumes.volumes().await.unwrap_or_default();
    for id in &update.volume_ids {
        let Some(rec) = records.iter().find(|r| &r.volume_id == id) else {
            continue;
        };
        match Action::try_from(update.action) {
            Ok(Action::Refresh) => {
                tracing::info!(volume = %id, reason = %update.reason, "refresh pushed by the controller");
                let _ = volumes.renew(rec).await;
            }
            Ok(Action::Wipe) => {
                tracing::warn!(volume = %id, reason = %update.reason, "wipe pushed by the controller");
                if let Err(e) = volumes.wipe(id).await {
                    tracing::error!(volume = %id, error = %e, "cannot wipe");
                }
            }
            _ => {}
        }
    }
}
