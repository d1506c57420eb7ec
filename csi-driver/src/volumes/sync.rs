//! Staying in step with the controller: the lease heartbeat and the update
//! stream. Both only *trigger* volumes; what a trigger does is the
//! lifecycle's decision.
//!
//! - Every heartbeat reports the volumes this node holds (a message on one
//!   long-lived stream; a unary call to a controller without it); the
//!   controller answers which belong to pods that are gone or bound
//!   elsewhere (stale: wiped and unmounted) and which were revoked (wiped,
//!   mount kept).
//! - The update stream carries pushes: REFRESH (a rotation) and WIPE (a
//!   revocation). A broken stream is re-opened with backoff; meanwhile
//!   deadlines and kubelet's republishes keep volumes current.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kcred_proto::kcred::v1::volume_update::Action;
use kcred_proto::kcred::v1::{HeartbeatResponse, VolumeUpdate};

use super::lifecycle::Cause;
use super::manager::VolumeManager;
use crate::controller_client::{ControllerClient, ControllerError, HeartbeatStream};
use crate::support::retry;

/// Heartbeats forever (until the task is aborted).
pub async fn run_heartbeats(volumes: Arc<VolumeManager>, default_every: Duration) {
    let mut every = default_every;
    let mut backoff = retry::heartbeat();
    let mut beats = Beats::default();
    loop {
        let held = volumes.held_ids();
        let wait = match beats.beat(volumes.client(), held.clone()).await {
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

/// How long the driver heartbeats by unary calls after a controller said
/// it has no heartbeat stream, before it asks again (an upgrade).
const UNARY_FOR: Duration = Duration::from_secs(600);

/// How heartbeats travel: as messages on one stream, or by unary calls to
/// a controller without the stream.
#[derive(Default)]
pub(super) struct Beats {
    stream: Option<HeartbeatStream>,
    unary_until: Option<Instant>,
}

impl Beats {
    /// One heartbeat: on the open stream, or a new one, or by a unary call
    /// where a stream cannot carry it.
    pub(super) async fn beat(
        &mut self,
        client: &ControllerClient,
        held: Vec<String>,
    ) -> Result<HeartbeatResponse, ControllerError> {
        if self.unary_until.is_some_and(|t| Instant::now() < t) {
            return client.heartbeat(held).await;
        }
        if let Some(stream) = self.stream.as_mut() {
            match stream.beat(held.clone()).await {
                Ok(Some(answer)) => return Ok(answer),
                // Ended by the controller: open another at once.
                Ok(None) => {
                    tracing::debug!("the controller ended the heartbeat stream");
                    self.stream = None;
                }
                // Broken or silent: this beat goes by a unary call, through
                // the client's failover; the next one opens a new stream.
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat stream broke");
                    self.stream = None;
                    return client.heartbeat(held).await;
                }
            }
        }
        match client.open_heartbeats(held.clone()).await {
            Ok((stream, answer)) => {
                self.stream = Some(stream);
                Ok(answer)
            }
            Err(e) if e.is_unimplemented() => {
                tracing::info!(
                    "the controller has no heartbeat stream: heartbeating by unary calls"
                );
                self.unary_until = Some(Instant::now() + UNARY_FOR);
                client.heartbeat(held).await
            }
            // The node's proof was refused, or it had none to give: a
            // unary call would fare no better (and be audited once more).
            Err(e) if e.is_authentication_refused() || e.is_node_proof_missing() => Err(e),
            // Refused or broken as a stream (a proxy without streams, a
            // node at its cap of streams, a reset): the call may still pass.
            Err(e) => {
                let answer = client.heartbeat(held).await;
                if answer.is_ok() {
                    tracing::warn!(error = %e, "heartbeat stream refused: heartbeating by unary calls for a while");
                    self.unary_until = Some(Instant::now() + UNARY_FOR);
                }
                answer
            }
        }
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
