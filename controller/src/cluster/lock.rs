//! Per-credential locks across controllers: single-flight for the cluster.
//!
//! In one process the issuers' single-flight coalesces concurrent requests
//! for one credential. Across controllers the same credential is locked in
//! etcd (its lock API, under this controller's lease) around "read the
//! store, and if still missing, call the KDC and store the result": the
//! controllers that waited find the first one's result in the store. A
//! controller that dies holding a lock releases it when its lease lapses.

use std::time::{Duration, Instant};

use etcd_client::LockOptions;

use super::Cluster;
use crate::store::StoreError;
use crate::store::etcd_members::never_sent;

/// Longest wait for a lock another controller holds: past it the request
/// fails (retryable) rather than queue forever behind a stuck holder.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Attempts refused before being sent (a member down) that a lock request
/// survives; the pauses between them double from 10 ms.
const MAX_REFUSED: u32 = 7;

/// A held lock; released when dropped.
pub struct ClusterLock {
    release: Option<(tokio::runtime::Handle, etcd_client::Client, Vec<u8>)>,
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        if let Some((handle, mut client, key)) = self.release.take() {
            handle.spawn(async move {
                if let Err(e) = client.unlock(key).await {
                    tracing::warn!(error = %e, "cannot release a cluster lock; it goes with the lease");
                }
            });
        }
    }
}

impl Cluster {
    /// Locks `name` for the whole cluster (alone: a no-op, the caller's
    /// single-flight is enough). Fails, closed, when etcd cannot be reached.
    pub async fn lock(&self, name: &str) -> Result<ClusterLock, StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(ClusterLock { release: None });
        };
        let handle = etcd
            .handle()
            .ok_or_else(|| StoreError::Db("etcd client closed".into()))?;
        let key = etcd.raw_key(&format!("cluster/locks/{name}"));
        let started = Instant::now();
        let mut refused = 0;
        loop {
            let lease = self.session()?;
            let client = etcd.client();
            let k = key.clone();
            // The client's request timeout ends each attempt; a holder that
            // takes longer (an extraction queued for budget) is waited for
            // by asking again.
            let attempt = handle
                .spawn(async move {
                    let mut c = client;
                    c.lock(k, Some(LockOptions::new().with_lease(lease))).await
                })
                .await
                .map_err(|_| StoreError::Db("etcd client runtime stopped".into()))?;
            match attempt {
                Ok(resp) => {
                    return Ok(ClusterLock {
                        release: Some((handle, etcd.client(), resp.key().to_vec())),
                    });
                }
                Err(etcd_client::Error::GRpcStatus(s))
                    if matches!(
                        s.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ) && started.elapsed() < MAX_WAIT =>
                {
                    continue;
                }
                // Sent to a member that refused the connection: send again,
                // a few times (another member may answer), not forever.
                Err(e)
                    if never_sent(&e) && refused < MAX_REFUSED && started.elapsed() < MAX_WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(10 << refused)).await;
                    refused += 1;
                }
                Err(e) => return Err(StoreError::Db(format!("etcd lock {name}: {e}"))),
            }
        }
    }
}
