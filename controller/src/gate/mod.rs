//! The KDC gate: every call to the KDC and to kadmind passes here.
//!
//! The system kcred replaces failed because "Kerberos infrastructure
//! struggles to keep up with request rate". The gate makes a storm of pod
//! starts cost the KDC no more than the number of distinct credentials, at
//! a rate the operator chooses:
//! - [`admission`]: a token bucket per lane (kadmind, KDC), served in
//!   priority order (a starting pod before a renewal);
//! - [`single_flight`]: concurrent requests for one credential share one
//!   call (used by the issuers, keyed by credential);
//! - [`breaker`]: after repeated transient failures calls fail fast with a
//!   retryable error, and a probe now and then finds the KDC back;
//! - retries with jittered exponential backoff for transient failures.
//!
//! The issued-credential cache is the store itself: a credential still
//! valid there is never fetched again, and is served while the KDC is down.

pub mod admission;
pub mod breaker;
pub mod single_flight;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;

pub use admission::Priority;
use admission::{Admission, Refused};
use breaker::Breaker;

use crate::metrics::Metrics;

/// Which server an operation loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// kadmind: key extraction, principal changes.
    Kadmin,
    /// The KDC: AS and TGS exchanges.
    Kdc,
}

impl Lane {
    /// Label for metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Kadmin => "kadmind",
            Lane::Kdc => "kdc",
        }
    }
}

/// Budget and failure handling of one lane (`[gate.kadmin]`, `[gate.kdc]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaneConfig {
    /// Sustained operations per second.
    pub rate_per_sec: u32,
    /// Operations allowed at once after a quiet period.
    pub burst: u32,
    /// Operations that may wait; beyond, requests fail with `Unavailable`.
    pub max_queue: usize,
    /// Retries of a transient failure (each retry spends a token).
    pub retries: usize,
    /// First backoff delay, milliseconds (doubles, with jitter).
    pub backoff_min_ms: u64,
    /// Longest backoff delay, milliseconds.
    pub backoff_max_ms: u64,
    /// Consecutive transient failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a probe, seconds.
    pub breaker_cooldown_secs: u64,
}

impl Default for LaneConfig {
    fn default() -> Self {
        LaneConfig {
            rate_per_sec: 20,
            burst: 10,
            max_queue: 10_000,
            retries: 2,
            backoff_min_ms: 100,
            backoff_max_ms: 2_000,
            breaker_threshold: 5,
            breaker_cooldown_secs: 5,
        }
    }
}

/// The `[gate]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// kadmind's budget.
    pub kadmin: LaneConfig,
    /// The KDC's budget.
    pub kdc: LaneConfig,
}

/// Errors an operation reports, classified for retries and the breaker.
pub trait Transient {
    /// Whether the server could not be reached (worth a retry, and a
    /// strike against the server's health).
    fn is_transient(&self) -> bool;
}

/// Why the gate did not return the operation's result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GateError<E> {
    /// The lane refused to call its server now; retry later.
    #[error("{lane} is protected: {message}")]
    Refused {
        /// The lane.
        lane: &'static str,
        /// Which protection refused.
        protection: Protection,
        /// Why, for people.
        message: String,
    },
    /// The operation ran and failed.
    #[error(transparent)]
    Failed(E),
}

/// Which of the gate's protections refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// The lane's server has been failing: calls fail fast for a while.
    BreakerOpen,
    /// Too many calls already wait for the lane's budget.
    QueueFull,
    /// The cluster-wide budget (in etcd) could not be read: no call
    /// without budget.
    ClusterBudget,
}

impl Protection {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::BreakerOpen => "breaker_open",
            Protection::QueueFull => "queue_full",
            Protection::ClusterBudget => "cluster_budget_unavailable",
        }
    }
}

struct LaneState {
    cfg: LaneConfig,
    admission: Arc<Admission>,
    breaker: Breaker,
}

/// The gate: one per served realm (a KDC's protection is its own).
pub struct KdcGate {
    kadmin: LaneState,
    kdc: LaneState,
    /// The realm whose servers this gate protects (the `realm` label).
    realm: String,
    /// Names the cluster-wide budget: the lane alone for the controller's
    /// own realm (as before several realms), `lane@REALM` for the others.
    budget_suffix: Option<String>,
    metrics: Arc<Metrics>,
    /// With several controllers: the budget is the cluster's.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// `serial`: one operation at a time (see [`admission`]).
fn lane_state(cfg: &LaneConfig, serial: bool) -> LaneState {
    let rate = NonZeroU32::new(cfg.rate_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
    LaneState {
        cfg: cfg.clone(),
        admission: Admission::start(rate, burst, cfg.max_queue, serial),
        breaker: Breaker::new(
            cfg.breaker_threshold,
            Duration::from_secs(cfg.breaker_cooldown_secs),
        ),
    }
}

impl KdcGate {
    /// Builds the gate of the controller's own realm; must run inside a
    /// Tokio runtime.
    pub fn new(cfg: &GateConfig, metrics: Arc<Metrics>, realm: &str) -> Self {
        KdcGate {
            kadmin: lane_state(&cfg.kadmin, true),
            kdc: lane_state(&cfg.kdc, false),
            realm: realm.to_string(),
            budget_suffix: None,
            metrics,
            cluster: None,
        }
    }

    /// Builds the gate of a further realm (`[[realms]]`): its cluster-wide
    /// budget is its own too.
    pub fn for_further_realm(cfg: &GateConfig, metrics: Arc<Metrics>, realm: &str) -> Self {
        KdcGate {
            budget_suffix: Some(format!("@{realm}")),
            ..KdcGate::new(cfg, metrics, realm)
        }
    }

    /// The realm this gate protects.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Makes each lane's budget hold for every controller sharing the
    /// cluster's store, not for this one alone.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    fn lane(&self, lane: Lane) -> &LaneState {
        match lane {
            Lane::Kadmin => &self.kadmin,
            Lane::Kdc => &self.kdc,
        }
    }

    fn refused<E>(&self, lane: Lane, protection: Protection, message: String) -> GateError<E> {
        self.metrics
            .gate_refused
            .with_label_values(&[&self.realm, lane.as_str(), protection.as_str()])
            .inc();
        GateError::Refused {
            lane: lane.as_str(),
            protection,
            message,
        }
    }

    /// Runs one operation against `lane`'s server within its budget,
    /// retrying transient failures with jittered backoff.
    pub async fn run<T, E, F, Fut>(
        &self,
        lane: Lane,
        priority: Priority,
        op: &'static str,
        mut call: F,
    ) -> Result<T, GateError<E>>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let st = self.lane(lane);
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(st.cfg.backoff_min_ms))
            .with_max_delay(Duration::from_millis(st.cfg.backoff_max_ms))
            .with_max_times(st.cfg.retries)
            .with_jitter()
            .build();
        let lane_label = lane.as_str();
        let realm = self.realm.as_str();
        let budget_key = match &self.budget_suffix {
            Some(suffix) => format!("{lane_label}{suffix}"),
            None => lane_label.to_string(),
        };
        loop {
            if let Err(t) = st.breaker.admit() {
                return Err(self.refused(
                    lane,
                    Protection::BreakerOpen,
                    format!(
                        "{lane_label} has been failing; calls resume in {} s",
                        t.retry_after.as_secs().max(1)
                    ),
                ));
            }
            self.metrics
                .gate_queue_depth
                .with_label_values(&[realm, lane_label])
                .set(st.admission.queued() as i64 + 1);
            // Held until the call is done: a serial lane's next call waits.
            let admitted = st.admission.admit(priority).await;
            self.metrics
                .gate_queue_depth
                .with_label_values(&[realm, lane_label])
                .set(st.admission.queued() as i64);
            let turn = match admitted {
                Ok(turn) => turn,
                Err(Refused::QueueFull(n)) => {
                    st.breaker.neutral();
                    return Err(self.refused(
                        lane,
                        Protection::QueueFull,
                        format!("{n} operations already waiting for {lane_label}"),
                    ));
                }
            };
            self.metrics
                .gate_budget_remaining
                .with_label_values(&[realm, lane_label])
                .set(i64::from(st.admission.remaining()));
            if let Some(cluster) = &self.cluster
                && let Err(e) = cluster
                    .take_budget(&budget_key, st.cfg.rate_per_sec, st.cfg.burst)
                    .await
            {
                return Err(self.refused(
                    lane,
                    Protection::ClusterBudget,
                    format!("cluster-wide budget unavailable: {e}"),
                ));
            }
            let result = call().await;
            drop(turn);
            match result {
                Ok(v) => {
                    st.breaker.success();
                    self.metrics
                        .kdc_ops
                        .with_label_values(&[realm, lane_label, op, "ok"])
                        .inc();
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    st.breaker.failure();
                    self.metrics
                        .kdc_ops
                        .with_label_values(&[realm, lane_label, op, "unavailable"])
                        .inc();
                    match delays.next() {
                        Some(d) if !st.breaker.is_open() => tokio::time::sleep(d).await,
                        _ => return Err(GateError::Failed(e)),
                    }
                }
                Err(e) => {
                    st.breaker.neutral();
                    self.metrics
                        .kdc_ops
                        .with_label_values(&[realm, lane_label, op, "error"])
                        .inc();
                    return Err(GateError::Failed(e));
                }
            }
            self.metrics
                .gate_breaker_open
                .with_label_values(&[realm, lane_label])
                .set(i64::from(st.breaker.is_open()));
        }
    }

    /// A lane's state for `kcredctl status`: breaker open, operations
    /// waiting, tokens left.
    pub fn lane_status(&self, lane: Lane) -> (bool, usize, u32) {
        let st = self.lane(lane);
        (
            st.breaker.is_open(),
            st.admission.queued(),
            st.admission.remaining(),
        )
    }

    /// Whether `lane`'s breaker is refusing calls now.
    pub fn breaker_open(&self, lane: Lane) -> bool {
        self.lane(lane).breaker.is_open()
    }
}
