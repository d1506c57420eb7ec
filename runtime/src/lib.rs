//! What every kcred daemon needs the same way.

#![forbid(unsafe_code)]

use prometheus::{Encoder, Registry, TextEncoder};

/// Completes on SIGINT or SIGTERM (what systemd and Kubernetes send).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Builds a metric and registers it. Metric definitions are static, so a
/// failure is a programming error, caught by each daemon's metrics unit test.
pub fn register<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let registered = metric.and_then(|m| registry.register(Box::new(m.clone())).map(|()| m));
    match registered {
        Ok(m) => m,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

/// A registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Serves `GET /metrics` from `registry` until the task is aborted.
pub async fn serve_metrics(
    registry: Registry,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let r = registry.clone();
            async move { render(&r) }
        }),
    );
    axum::serve(listener, app).await
}
