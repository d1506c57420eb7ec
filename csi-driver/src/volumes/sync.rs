//! Staying in step with the controller: the lease heartbeat and the update
//! stream. Both only *trigger* volumes; what a trigger does is the
//! lifecycle's decision.
//!
//! - Every heartbeat reports the volumes this node holds; the controller
//!   answers which belong to pods that are gone or bound elsewhere (stale:
//!   wiped and unmounted) and which were revoked (wiped, mount kept).
//! - The update stream carries pushes: REFRESH (a rotation) and WIPE (a
//!   revocation). A broken stream is re-opened with backoff; meanwhile
//!   deadlines and kubelet's republishes keep volumes current.

use std::sync::Arc;
use std::time::Duration;

use kcred_proto::kcred::v1::VolumeUpdate;
use kcred_proto::kcred::v1::volume_update::Action;

use super::lifecycle::Cause;
use super::manager::VolumeManager;
use crate::support::retry;

/// Heartbeats forever (until the task is aborted).
pub async fn run_heartbeats(volumes: Arc<VolumeManager>, default_every: Duration) {
    let mut every = default_every;
    let mut backoff = retry::heartbeat();
    loop {
        let held = volumes.held_ids();
        let wait = match volumes.client().heartbeat(held.clone()).await {
            Ok(resp) => {
                backoff = retry::heartbeat();
                if resp.lease_ttl_secs > 0 {
                    every = Duration::from_secs((resp.lease_ttl_secs / 3).max(1));
                }
                for id in resp
                    .revoked_volume_ids
                    .iter()
                    .filter(|id| held.contains(id))
                {
                    volumes.trigger(id, Cause::Revoked);
                }
                for id in resp.stale_volume_ids.iter().filter(|id| held.contains(id)) {
                    tracing::warn!(volume = %id, "pod no longer bound here: wiping and unmounting");
                    volumes.trigger(id, Cause::Stale);
                }
                every
            }
            Err(e) => {
                let wait = backoff.next().unwrap_or(every).min(every);
                tracing::warn!(code = ?e.status().code(), error = %e, retry_in = ?wait, "heartbeat failed");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Follows the controller's update stream forever.
pub async fn run_updates(volumes: Arc<VolumeManager>) {
    let mut backoff = retry::reconnect();
    loop {
        match volumes.client().watch_updates().await {
            Ok(mut stream) => {
                backoff = retry::reconnect();
                volumes.freshness.stream_up();
                tracing::info!("following the controller's updates");
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => apply(&volumes, &update),
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "update stream broke");
                            break;
                        }
                    }
                }
                volumes.freshness.stream_down();
            }
            Err(e) => tracing::debug!(error = %e, "cannot follow updates yet"),
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(wait).await;
    }
}

/// Turns a pushed update into triggers.
fn apply(volumes: &VolumeManager, update: &VolumeUpdate) {
    let cause = match Action::try_from(update.action) {
        Ok(Action::Refresh) => Cause::Pushed,
        Ok(Action::Wipe) => Cause::Revoked,
        _ => return,
    };
    for id in &update.volume_ids {
        tracing::info!(volume = %id, ?cause, reason = %update.reason, "pushed by the controller");
    }
    // Due together: the scheduler refreshes them in batches.
    volumes.trigger_all(update.volume_ids.iter().map(String::as_str), cause);
}
