//! The leader election: the lease sweeper and pending purges must run on
//! exactly one controller.
//!
//! Each controller grants itself an etcd lease (its session), keeps it
//! alive, and campaigns under it with etcd's election API. The campaign
//! returns when this controller's key is the oldest: it leads until its
//! lease is lost. A controller killed outright stops keeping its lease
//! alive, etcd deletes its election key when the lease lapses, and the
//! next campaigner leads. A controller cut off from etcd steps down on its
//! own, before its lease can lapse on etcd's side, so two leaders never
//! overlap. A new leader needs no hand-over: what the old one was doing
//! (pending purges, lost nodes) is in etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::task::JoinHandle;

use super::Cluster;

/// The election's name under the installation's prefix.
const ELECTION: &str = "cluster/leader";

impl Cluster {
    /// Starts campaigning (on etcd) or does nothing (alone: always leader).
    /// Runs until aborted; leadership is given up when the task ends.
    pub fn spawn_election(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let etcd = self.etcd.as_ref()?;
        let handle = etcd.handle()?;
        let cluster = Arc::clone(self);
        let client = etcd.client();
        let name = etcd.raw_key(ELECTION);
        Some(handle.spawn(async move { campaign_forever(cluster, client, name).await }))
    }
}

async fn campaign_forever(cluster: Arc<Cluster>, client: Client, name: String) {
    let ttl = cluster.lease_ttl;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(10).max(2);
    loop {
        let lease = match client.clone().lease_grant(ttl_secs, None).await {
            Ok(l) => l.id(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot grant an etcd lease; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        cluster.set_session(Some(lease));
        let held = keep_alive(client.clone(), lease, ttl);
        tokio::pin!(held);
        let elected = tokio::select! {
            () = &mut held => false,
            () = campaign(client.clone(), &name, cluster.id(), lease) => true,
        };
        if elected {
            tracing::info!(id = %cluster.id(), "elected leader");
            cluster.leader.send_replace(true);
            held.await;
            cluster.leader.send_replace(false);
            tracing::warn!(id = %cluster.id(), "stepped down: the etcd lease is lost");
        }
        cluster.set_session(None);
        // Whatever the lease still holds (locks, election key) goes now
        // rather than at its expiry, if etcd is there to hear it.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), client.clone().lease_revoke(lease)).await;
    }
}

/// Campaigns until elected. Each attempt ends at the client's request
/// timeout (etcd withdraws the candidacy then); the next one queues again.
async fn campaign(client: Client, name: &str, id: &str, lease: i64) {
    loop {
        match client.clone().campaign(name, id, lease).await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "campaign attempt ended; campaigning again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Keeps `lease` alive; returns once it may have lapsed: etcd said it
/// expired, or no keep-alive was answered for half its time to live (this
/// controller stops leading before etcd could elect another).
async fn keep_alive(client: Client, lease: i64, ttl: Duration) {
    let every = (ttl / 4).max(Duration::from_millis(250));
    let give_up = ttl / 2;
    let mut last_ok = Instant::now();
    let mut stream = None;
    loop {
        if last_ok.elapsed() >= give_up {
            return;
        }
        if stream.is_none() {
            stream = tokio::time::timeout(every, client.clone().lease_keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((keeper, answers)) = &mut stream {
            let answer = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                answers.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(a))) if a.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => return,
                _ => stream = None,
            }
        }
        tokio::time::sleep(every).await;
    }
}
