//! Prometheus metrics of the node driver, served at `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Every metric the driver exports.
pub struct Metrics {
    registry: Registry,
    /// CSI call latency by method and gRPC code.
    pub call_seconds: HistogramVec,
    /// Volumes mounted on this node now.
    pub mounted_volumes: IntGauge,
    /// Failed CSI calls by method and gRPC code.
    pub errors: IntCounterVec,
    /// Refreshes that kept the last good files (controller unreachable,
    /// write failed).
    pub refresh_failures: IntCounterVec,
    /// Batch fetches (`FetchBundles` calls) answered by the controller.
    pub batch_fetches: IntCounter,
    /// The node's Kerberos token attempts by outcome (`made`, `failed`):
    /// failures mean the node cannot get a ticket for the controller (KDC
    /// unreachable from the node, a stale host keytab). A failure that
    /// the calls waiting for it share counts once; each failed try of the
    /// node's login at start counts as one too.
    pub node_tokens: IntCounterVec,
    /// Calls to the controller by method and gRPC code, each attempt at
    /// one controller timed from the call to its answer: the controller as
    /// a node sees it (the network, TLS, the controller's queue and, for a
    /// credential it does not hold yet, the KDC; a new connection's set-up
    /// and a wait for the node's Kerberos token too, when a call needs
    /// them). An attempt that never left the node for want of that token
    /// is not one (`node_tokens_total` counts it). A heartbeat on the open
    /// stream counts under `Heartbeats`, as one call.
    pub controller_call_seconds: HistogramVec,
    /// Moves of a call to another controller, after the one tried could
    /// not serve it (unreachable, or its store lost); one call may move
    /// several times.
    pub controller_failovers: IntCounter,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("kcred_csi".into()), None).unwrap_or_default();
        let call_seconds = kcred_runtime::register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("call_seconds", "CSI call latency").buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["method", "code"],
            ),
        );
        let mounted_volumes = kcred_runtime::register(
            &registry,
            IntGauge::new("mounted_volumes", "Volumes mounted now"),
        );
        let errors = kcred_runtime::register(
            &registry,
            IntCounterVec::new(
                Opts::new("errors_total", "Failed CSI calls"),
                &["method", "code"],
            ),
        );
        let refresh_failures = kcred_runtime::register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "refresh_failures_total",
                    "Refreshes that kept the last good files",
                ),
                &["reason"],
            ),
        );
        let batch_fetches = kcred_runtime::register(
            &registry,
            IntCounter::new(
                "batch_fetches_total",
                "FetchBundles calls the controller answered",
            ),
        );
        let node_tokens = kcred_runtime::register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "node_tokens_total",
                    "The node's Kerberos token attempts by outcome",
                ),
                &["outcome"],
            ),
        );
        let controller_call_seconds = kcred_runtime::register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "controller_call_seconds",
                    "Calls to the controller, each attempt at one controller",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0,
                ]),
                &["method", "code"],
            ),
        );
        let controller_failovers = kcred_runtime::register(
            &registry,
            IntCounter::new(
                "controller_failovers_total",
                "Moves of a call to another controller",
            ),
        );
        Arc::new(Metrics {
            controller_call_seconds,
            controller_failovers,
            batch_fetches,
            node_tokens,
            registry,
            call_seconds,
            mounted_volumes,
            errors,
            refresh_failures,
        })
    }

    /// Records one attempt of a call to the controller.
    pub fn controller_call<T>(
        &self,
        method: &str,
        answer: &Result<T, tonic::Status>,
        took: Duration,
    ) {
        let code = kcred_proto::code_label(
            answer
                .as_ref()
                .map_or_else(tonic::Status::code, |_| tonic::Code::Ok),
        );
        self.controller_call_seconds
            .with_label_values(&[method, code])
            .observe(took.as_secs_f64());
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
        m.mounted_volumes.set(3);
        m.errors
            .with_label_values(&["NodePublishVolume", "PermissionDenied"])
            .inc();
        let text = m.render();
        assert!(text.contains("kcred_csi_mounted_volumes 3"), "{text}");
        assert!(
            text.contains(
                "kcred_csi_errors_total{code=\"PermissionDenied\",method=\"NodePublishVolume\"} 1"
            ),
            "{text}"
        );
    }
}
