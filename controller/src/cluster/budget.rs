//! The KDC budget for the whole cluster: one token bucket per lane in etcd.
//!
//! Each lane's bucket is one key holding its GCRA state, the theoretical
//! arrival time (TAT, milliseconds since the epoch): taking a token reads
//! it, and writes `max(TAT, now) + 1/rate` in a transaction that succeeds
//! only if nobody wrote in between (compare on the key's mod revision); a
//! controller that lost the race reads again. So at most
//! `burst + rate * t` operations start in any `t` seconds, whichever
//! controllers run them — the same bound as each controller's own bucket,
//! which still orders its local waiters by priority. The cost is two etcd
//! round trips per KDC or kadmind operation (cache misses only). Clocks of
//! the controllers' hosts are assumed in step (NTP); a host ahead of the
//! others spends budget early, never more of it.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::Cluster;
use crate::store::StoreError;

/// The GCRA decision for one token at `now_ms`, given the bucket's TAT:
/// `Ok(new TAT)` when a token is free, `Err(wait)` until one is.
pub fn take(tat_ms: f64, now_ms: f64, rate_per_sec: u32, burst: u32) -> Result<f64, Duration> {
    let interval = 1000.0 / f64::from(rate_per_sec.max(1));
    let tolerance = interval * f64::from(burst.max(1).saturating_sub(1));
    let start = tat_ms.max(now_ms);
    let ahead = start - now_ms;
    if ahead <= tolerance {
        Ok(start + interval)
    } else {
        Err(Duration::from_secs_f64((ahead - tolerance) / 1000.0))
    }
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl Cluster {
    /// Waits for a token of `lane`'s cluster-wide bucket (alone: at once;
    /// the controller's own bucket is the whole budget). Fails, closed,
    /// when etcd cannot be reached: no KDC call without budget.
    pub async fn take_budget(&self, lane: &str, rate: u32, burst: u32) -> Result<(), StoreError> {
        let Some(etcd) = &self.etcd else {
            return Ok(());
        };
        let key = etcd.raw_key(&format!("cluster/budget/{lane}"));
        loop {
            let mut got = etcd
                .call("budget", key.clone(), |mut c, k| async move {
                    c.get(k, None).await
                })
                .await?;
            let (tat, revision) = match got.take_kvs().into_iter().next() {
                Some(kv) => (
                    std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0),
                    kv.mod_revision(),
                ),
                None => (0.0, 0),
            };
            match take(tat, now_ms(), rate, burst) {
                Err(wait) => tokio::time::sleep(wait.min(Duration::from_secs(1))).await,
                Ok(next) => {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            revision,
                        )])
                        .and_then([TxnOp::put(key.clone(), format!("{next:.3}"), None)]);
                    let done = etcd
                        .call("budget", txn, |mut c, txn| async move { c.txn(txn).await })
                        .await?;
                    if done.succeeded() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_burst_at_once_then_rate_per_second() {
        let (rate, burst) = (10, 3);
        let mut tat = 0.0;
        let now = 1_000_000.0;
        for _ in 0..3 {
            tat = take(tat, now, rate, burst).expect("within the burst");
        }
        let wait = take(tat, now, rate, burst).expect_err("burst spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // One interval later, exactly one more.
        let later = now + 100.0;
        tat = take(tat, later, rate, burst).expect("one token back");
        assert!(take(tat, later, rate, burst).is_err());
    }

    #[test]
    fn a_long_quiet_period_refills_no_more_than_the_burst() {
        let tat = take(0.0, 5_000.0, 10, 2).expect("first");
        let much_later = 60_000.0;
        let t1 = take(tat, much_later, 10, 2).expect("1");
        let t2 = take(t1, much_later, 10, 2).expect("2");
        assert!(take(t2, much_later, 10, 2).is_err(), "burst of 2 only");
    }
}
