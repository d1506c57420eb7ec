//! Prometheus metrics of the controller, served at `/metrics`.
//!
//! Each controller owns its registry (no process-global state), so several
//! controllers in one test process keep separate counts.

use std::sync::Arc;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// KDC and kadmind operations by realm, lane, operation and result.
    pub kdc_ops: IntCounterVec,
    /// Operations waiting for their lane's budget.
    pub gate_queue_depth: IntGaugeVec,
    /// Tokens left in the lane's bucket after the last admission.
    pub gate_budget_remaining: IntGaugeVec,
    /// 1 while the lane's breaker refuses calls.
    pub gate_breaker_open: IntGaugeVec,
    /// Calls refused by the gate, by reason.
    pub gate_refused: IntCounterVec,
    /// Requests that shared another request's call, by credential kind.
    pub coalesced: IntCounterVec,
    /// Credentials served from the store without calling the KDC.
    pub cache_hits: IntCounterVec,
    /// Credentials that had to be fetched.
    pub cache_misses: IntCounterVec,
    /// FetchBundle latency by gRPC code.
    pub fetch_seconds: HistogramVec,
    /// FetchBundles latency by gRPC code (its count: the batch calls).
    pub fetch_batch_seconds: HistogramVec,
    /// Volumes answered in FetchBundles calls, by outcome.
    pub batch_volumes: IntCounterVec,
    /// Refusals and failures returned to callers, by reason (the
    /// vocabulary of `kcred.v1.Reason`).
    pub refusals: IntCounterVec,
    /// 1 while the Kubernetes watch of a resource follows a complete list.
    pub kube_watch_synced: IntGaugeVec,
    /// When the API server was last heard from, per resource (Unix seconds).
    pub kube_watch_last_event: IntGaugeVec,
    /// Re-lists and reconnects of the Kubernetes watches, by reason.
    pub kube_watch_restarts: IntCounterVec,
    /// Admission webhook answers, by webhook (`mutate`, `validate`) and
    /// verdict (`allowed`, `patched`, `denied`, `bad_request`).
    pub webhook_admissions: IntCounterVec,
    /// 1 while the store (embedded file or etcd) answers; at 0 the
    /// controller issues nothing.
    pub store_up: IntGauge,
    /// Directory (AD) policy syncs by result (`ok`, `failed`); a failed
    /// sync keeps the last good policy.
    pub directory_syncs: IntCounterVec,
    /// 1 while a hot-reloaded file's last version loaded (0: a bad version
    /// is being ignored), by file (`policy`, `pods`).
    pub config_reload_ok: IntGaugeVec,
    /// When a hot-reloaded file's version in force was loaded (Unix
    /// seconds), by file.
    pub config_reload_success: IntGaugeVec,
    /// When the controller's own serving certificate expires (Unix
    /// seconds); 0 while it serves without TLS or with an operator's
    /// certificate it does not renew.
    pub serving_cert_expiry: IntGauge,
    /// 1 while this controller is the elected leader (always, alone on an
    /// embedded store): it runs the lease sweeper and pending purges.
    pub leader: IntGauge,
    /// Heartbeat streams open: about one per node whose driver is
    /// connected to this controller.
    pub heartbeat_streams: IntGauge,
    /// Volumes revoked with their pod that wait for their audit (or its
    /// store write): above zero for long, revocations go unaudited.
    pub revocations_unaudited: IntGauge,
    /// Kerberos tokens node calls carried, by what became of them
    /// (`verified`; `unneeded`: the call's TLS connection was proven
    /// already). About one per node connection is verified, and current
    /// drivers send no unneeded ones.
    pub node_tokens: IntCounterVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("kcred".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            kcred_runtime::register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            kcred_runtime::register(&registry, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let fetch_seconds = kcred_runtime::register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("fetch_bundle_seconds", "FetchBundle latency").buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                &["code"],
            ),
        );
        let fetch_batch_seconds = kcred_runtime::register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("fetch_bundles_seconds", "FetchBundles (batch) latency")
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0, 30.0,
                    ]),
                &["code"],
            ),
        );
        let store_up = kcred_runtime::register(
            &registry,
            IntGauge::new("store_up", "1 while the store answers; 0: issuing stops"),
        );
        store_up.set(1);
        let serving_cert_expiry = kcred_runtime::register(
            &registry,
            IntGauge::new(
                "serving_certificate_expiry_timestamp_seconds",
                "When the controller's serving certificate expires",
            ),
        );
        let leader = kcred_runtime::register(
            &registry,
            IntGauge::new(
                "leader",
                "1 while this controller leads (sweeper, purges); 0: a follower",
            ),
        );
        let heartbeat_streams = kcred_runtime::register(
            &registry,
            IntGauge::new(
                "heartbeat_streams",
                "Heartbeat streams open (about one per connected node)",
            ),
        );
        let revocations_unaudited = kcred_runtime::register(
            &registry,
            IntGauge::new(
                "revocations_unaudited",
                "Volumes revoked with their pod still waiting for their audit or its store write",
            ),
        );
        Arc::new(Metrics {
            heartbeat_streams,
            revocations_unaudited,
            node_tokens: counter(
                "node_tokens_total",
                "Kerberos tokens node calls carried, verified or unneeded (connection proven)",
                &["use"],
            ),
            store_up,
            directory_syncs: counter(
                "directory_syncs_total",
                "Policy syncs from the directory, by result",
                &["result"],
            ),
            serving_cert_expiry,
            config_reload_ok: gauge(
                "config_last_reload_successful",
                "1 while the file's last version loaded; 0: a bad version is ignored",
                &["file"],
            ),
            config_reload_success: gauge(
                "config_last_reload_success_timestamp_seconds",
                "When the file's version in force was loaded",
                &["file"],
            ),
            leader,
            refusals: counter(
                "refusals_total",
                "Refusals and failures returned to callers, by reason",
                &["reason"],
            ),
            kdc_ops: counter(
                "kdc_operations_total",
                "KDC and kadmind operations",
                &["realm", "lane", "op", "result"],
            ),
            gate_queue_depth: gauge(
                "gate_queue_depth",
                "Operations waiting for budget",
                &["realm", "lane"],
            ),
            gate_budget_remaining: gauge(
                "gate_budget_remaining",
                "Tokens left in the bucket",
                &["realm", "lane"],
            ),
            gate_breaker_open: gauge(
                "gate_breaker_open",
                "1 while the breaker refuses calls",
                &["realm", "lane"],
            ),
            gate_refused: counter(
                "gate_refused_total",
                "Calls refused by the gate",
                &["realm", "lane", "reason"],
            ),
            coalesced: counter(
                "coalesced_requests_total",
                "Requests that shared another's call",
                &["kind"],
            ),
            cache_hits: counter(
                "cache_hits_total",
                "Credentials served from the store",
                &["kind"],
            ),
            cache_misses: counter(
                "cache_misses_total",
                "Credentials that had to be fetched",
                &["kind"],
            ),
            fetch_seconds,
            fetch_batch_seconds,
            batch_volumes: counter(
                "fetch_bundles_volumes_total",
                "Volumes answered in FetchBundles calls, by outcome",
                &["outcome"],
            ),
            kube_watch_synced: gauge(
                "kube_watch_synced",
                "1 while the watch follows a complete list",
                &["resource"],
            ),
            kube_watch_last_event: gauge(
                "kube_watch_last_event_timestamp_seconds",
                "When the API server was last heard from",
                &["resource"],
            ),
            kube_watch_restarts: counter(
                "kube_watch_restarts_total",
                "Watch re-lists and reconnects",
                &["resource", "reason"],
            ),
            webhook_admissions: counter(
                "webhook_admissions_total",
                "Admission webhook answers by webhook and verdict",
                &["webhook", "verdict"],
            ),
            registry,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        kcred_runtime::render(&self.registry)
    }

    /// Serves `/metrics` until the task is aborted.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        kcred_runtime::serve_metrics(self.registry.clone(), listener).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let m = Metrics::new();
        m.kdc_ops
            .with_label_values(&["KCRED.TEST", "kadmind", "extract_keytab", "ok"])
            .inc();
        m.fetch_seconds.with_label_values(&["Ok"]).observe(0.01);
        let text = m.render();
        assert!(
            text.contains(
                "kcred_kdc_operations_total{lane=\"kadmind\",op=\"extract_keytab\",realm=\"KCRED.TEST\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("kcred_fetch_bundle_seconds_bucket"), "{text}");
    }
}
