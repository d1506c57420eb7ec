//! Prometheus metrics of the node driver, served at `/metrics`.

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static: a failure is a programming error,
    // caught by the unit test below on every build.
    match r {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("kcred_csi".into()), None).unwrap_or_default();
        let call_seconds = must(HistogramVec::new(
            HistogramOpts::new("call_seconds", "CSI call latency").buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["method", "code"],
        ));
        let mounted_volumes = must(IntGauge::new("mounted_volumes", "Volumes mounted now"));
        let errors = must(IntCounterVec::new(
            Opts::new("errors_total", "Failed CSI calls"),
            &["method", "code"],
        ));
        let refresh_failures = must(IntCounterVec::new(
            Opts::new(
                "refresh_failures_total",
                "Refreshes that kept the last good files",
            ),
            &["reason"],
        ));
        must(registry.register(Box::new(call_seconds.clone())));
        must(registry.register(Box::new(mounted_volumes.clone())));
        must(registry.register(Box::new(errors.clone())));
        must(registry.register(Box::new(refresh_failures.clone())));
        Arc::new(Metrics {
            registry,
            call_seconds,
            mounted_volumes,
            errors,
            refresh_failures,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Serves `/metrics` on `listener` until the task is aborted.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = Arc::clone(&self);
                async move { m.render() }
            }),
        );
        axum::serve(listener, app).await
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
