//! Node heartbeats and losses, shared through etcd.
//!
//! A node heartbeats to whichever controller it reaches; the leader's
//! sweeper must see them all. Every controller writes a node's last
//! heartbeat time to etcd (`cluster/heartbeats/<node>`), and the leader
//! reads them before each sweep. A loss is recorded once for the cluster:
//! the leader creates `cluster/lost/<node>`, holding the heartbeat time the
//! loss was declared on, and only the leader that created it audits the
//! loss; a new leader finds the marker and does not declare it again. A
//! newer heartbeat means the node returned: the marker goes.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::Cluster;
use crate::store::StoreError;

const HEARTBEATS: &str = "cluster/heartbeats/";
const LOST: &str = "cluster/lost/";

impl Cluster {
    /// Notes that `node` heartbeated now (alone: nothing to share).
    pub async fn note_heartbeat(&self, node: &str, at_ms: i64) -> Result<(), StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(());
        };
        let key = etcd.raw_key(&format!("{HEARTBEATS}{node}"));
        etcd.call("heartbeat", key, move |mut c, key| async move {
            c.put(key, at_ms.to_string(), None).await
        })
        .await
        .map(|_| ())
    }

    async fn read_times(&self, dir: &str) -> Result<HashMap<String, i64>, StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(HashMap::new());
        };
        let prefix = etcd.raw_key(dir);
        let mut resp = etcd
            .call("heartbeats", prefix.clone(), |mut c, p| async move {
                c.get(p, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| {
                let node = kv.key().strip_prefix(prefix.as_bytes())?;
                let at = std::str::from_utf8(kv.value()).ok()?.parse().ok()?;
                Some((String::from_utf8_lossy(node).into_owned(), at))
            })
            .collect())
    }

    /// Every node's last heartbeat (milliseconds since the epoch), to
    /// whichever controller it went.
    pub async fn heartbeats(&self) -> Result<HashMap<String, i64>, StoreError> {
        self.read_times(HEARTBEATS).await
    }

    /// Nodes whose loss is on record, with the heartbeat it was based on.
    pub async fn losses(&self) -> Result<HashMap<String, i64>, StoreError> {
        self.read_times(LOST).await
    }

    /// Records `node`'s loss for the cluster; true only for the call that
    /// recorded it (the one that audits it). Alone: always true.
    pub async fn mark_lost(&self, node: &str, last_heartbeat_ms: i64) -> Result<bool, StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(true);
        };
        let key = etcd.raw_key(&format!("{LOST}{node}"));
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, last_heartbeat_ms.to_string(), None)]);
        let resp = etcd
            .call(
                "mark lost",
                txn,
                |mut c, txn| async move { c.txn(txn).await },
            )
            .await?;
        Ok(resp.succeeded())
    }

    /// Clears `node`'s loss (it heartbeated since).
    pub async fn clear_lost(&self, node: &str) -> Result<(), StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(());
        };
        let key = etcd.raw_key(&format!("{LOST}{node}"));
        etcd.call("clear lost", key, |mut c, key| async move {
            c.delete(key, None).await
        })
        .await
        .map(|_| ())
    }
}
