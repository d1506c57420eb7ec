//! The operations endpoint: `/metrics` for Prometheus, `/healthz` for
//! liveness (the process answers), `/readyz` for readiness (the daemon's
//! own checks, each named).

use std::sync::Arc;

use axum::http::{StatusCode, header};
use prometheus::Registry;

use crate::health::{Check, report};

type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;
type ReadinessFn = Arc<dyn Fn() -> Vec<Check> + Send + Sync>;

/// What a daemon serves on its metrics address.
#[derive(Clone)]
pub struct OpsEndpoints {
    metrics: RenderFn,
    readiness: ReadinessFn,
}

impl OpsEndpoints {
    /// Serves `metrics()` at `/metrics`; ready as soon as it serves, until
    /// [`OpsEndpoints::with_readiness`] says otherwise.
    pub fn new(metrics: impl Fn() -> String + Send + Sync + 'static) -> OpsEndpoints {
        OpsEndpoints {
            metrics: Arc::new(metrics),
            readiness: Arc::new(Vec::new),
        }
    }

    /// Serves a registry (plus the process's metrics, see [`crate::render`]).
    pub fn for_registry(registry: Registry) -> OpsEndpoints {
        OpsEndpoints::new(move || crate::render(&registry))
    }

    /// Decides `/readyz` by `checks`, called on every probe (off the async
    /// threads: a check may touch the disk).
    pub fn with_readiness(
        mut self,
        checks: impl Fn() -> Vec<Check> + Send + Sync + 'static,
    ) -> OpsEndpoints {
        self.readiness = Arc::new(checks);
        self
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        let metrics = Arc::clone(&self.metrics);
        let readiness = Arc::clone(&self.readiness);
        axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let render = Arc::clone(&metrics);
                    async move { ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], render()) }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let checks = Arc::clone(&readiness);
                    async move {
                        match tokio::task::spawn_blocking(move || report(&checks())).await {
                            Ok((true, body)) => (StatusCode::OK, body),
                            Ok((false, body)) => (StatusCode::SERVICE_UNAVAILABLE, body),
                            Err(e) => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!("readiness checks failed to run: {e}\n"),
                            ),
                        }
                    }
                }),
            )
    }

    /// Serves until the task is aborted.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}

/// Serves `registry` at `/metrics`, with `/healthz` and an always-ready
/// `/readyz`, until the task is aborted.
pub async fn serve_metrics(
    registry: Registry,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    OpsEndpoints::for_registry(registry).serve(listener).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn start(ops: OpsEndpoints) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(ops.serve(listener));
        addr
    }

    #[tokio::test]
    async fn readyz_answers_503_naming_the_failing_check() {
        let addr = start(OpsEndpoints::new(String::new).with_readiness(|| {
            vec![
                Check::ok("store"),
                Check::failing("audit", "audit.log: No such file"),
            ]
        }))
        .await;
        let answer = get(addr, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.0 503"), "{answer}");
        assert!(
            answer.contains("[+]store ok\n[-]audit failed: audit.log: No such file\n"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn healthz_and_readyz_answer_200_when_every_check_holds() {
        let addr =
            start(OpsEndpoints::new(String::new).with_readiness(|| vec![Check::ok("store")])).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.0 200"));
        let ready = get(addr, "/readyz").await;
        assert!(
            ready.starts_with("HTTP/1.0 200") && ready.contains("[+]store ok"),
            "{ready}"
        );
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_prometheus_text_format() {
        let addr = start(OpsEndpoints::for_registry(Registry::new())).await;
        let answer = get(addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
        assert!(answer.contains("kcred_build_info"), "{answer}");
    }
}
