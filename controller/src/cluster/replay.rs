//! Kerberos replay detection across controllers.
//!
//! Each controller's MIT replay cache refuses a token seen twice by that
//! controller; a token captured on the wire could still be replayed once
//! to each other controller within the clock-skew window (tokens older or
//! newer than it are refused outright). With several controllers, a token
//! accepted by one is also recorded in etcd (`cluster/replay/<sha-256>`),
//! created only if absent: the second use, on any controller, finds it and
//! is refused. Entries carry a lease that outlives the skew window, so
//! they clean themselves up.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use sha2::{Digest, Sha256};

use super::Cluster;
use crate::store::StoreError;

/// MIT's default clock skew: tokens older than this are refused anyway.
const SKEW: Duration = Duration::from_secs(300);

impl Cluster {
    /// The lease replay entries are written under: one per [`SKEW`], living
    /// twice as long, so every entry outlives the window it guards.
    async fn replay_lease(&self) -> Result<i64, StoreError> {
        let Some(etcd) = &self.etcd else {
            return Err(StoreError::Db("no etcd".into()));
        };
        if let Some((id, granted)) = *crate::locks::lock(&self.replay_lease)
            && granted.elapsed() < SKEW
        {
            return Ok(id);
        }
        let ttl = i64::try_from(SKEW.as_secs() * 2).unwrap_or(600);
        let granted = etcd
            .call("replay lease", ttl, |mut c, ttl| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        *crate::locks::lock(&self.replay_lease) = Some((granted.id(), Instant::now()));
        Ok(granted.id())
    }

    /// Whether this is the first use of `token` in the cluster (alone:
    /// always; the controller's own replay cache is the whole story).
    /// Fails, closed, when etcd does not answer.
    pub async fn first_use(&self, token: &[u8]) -> Result<bool, StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(true);
        };
        let lease = self.replay_lease().await?;
        let digest = hex::encode(Sha256::digest(token));
        let key = etcd.raw_key(&format!("cluster/replay/{digest}"));
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                "",
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = etcd
            .call("replay", txn, |mut c, txn| async move { c.txn(txn).await })
            .await?;
        Ok(resp.succeeded())
    }
}
