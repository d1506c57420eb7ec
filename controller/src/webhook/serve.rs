//! The webhook's HTTPS listener: `POST /mutate-pods` and
//! `POST /validate-pods`, each answering one `AdmissionReview`.
//!
//! Anyone who reaches the port can post, so bodies are capped (413 above
//! [`MAX_BODY`]), a body that is not a review answers 400 with the reason,
//! connections are capped and must finish their TLS handshake and headers
//! in time. Every answer is counted in `kcred_webhook_admissions_total` by
//! webhook and verdict.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::review::{self, Verdict};
use super::{mutate, validate};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::reload::Watched;

/// Largest review read: the API server's own request limit is 3 MiB, and
/// a pod is far smaller.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Bytes of an oversized body read and thrown away before the 413: a
/// connection closed with unread bytes is reset by the kernel, and the
/// reset can destroy the answer before the client reads it.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
/// Time given to that draining.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Time for a client's TLS handshake and request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate or key is unusable.
    #[error("webhook certificate: {0}")]
    Certificate(String),
    /// The listener could not be bound.
    #[error("webhook listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// What the webhook decides with.
pub struct Webhook {
    /// The policy in force (hot-reloaded).
    pub policy: Arc<Watched<Policy>>,
    /// The served realms, for principal names in annotations.
    pub realm: crate::names::Realms,
    /// The kcred CSI driver's name.
    pub driver: String,
    /// Where verdicts are counted.
    pub metrics: Arc<Metrics>,
}

impl Webhook {
    /// Counts a body refused before it was read as a review.
    fn refuse(&self, name: &str, refusal: Response) -> Response {
        self.metrics
            .webhook_admissions
            .with_label_values(&[name, "bad_request"])
            .inc();
        refusal
    }

    /// Answers one review body with `decide`; `name` labels the metric.
    fn answer(&self, name: &str, body: &[u8], decide: impl Fn(&Pod, &str) -> Verdict) -> Response {
        let count = |verdict: &str| {
            self.metrics
                .webhook_admissions
                .with_label_values(&[name, verdict])
                .inc();
        };
        let req = match review::parse(body) {
            Ok(r) => r,
            Err(e) => {
                count("bad_request");
                return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
            }
        };
        let verdict = match req.pod() {
            Ok(Some((pod, namespace))) => decide(&pod, &namespace),
            Ok(None) => Verdict::Allow,
            Err(e) => {
                count("bad_request");
                return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
            }
        };
        count(verdict.label());
        if let Verdict::Deny { message, .. } = &verdict {
            tracing::info!(webhook = name, namespace = ?req.namespace, %message, "pod refused at admission");
        }
        (
            [(header::CONTENT_TYPE, "application/json")],
            verdict.response(&req.uid).to_string(),
        )
            .into_response()
    }
}

/// A review body of at most [`MAX_BODY`] bytes, or the answer refusing it.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            (StatusCode::BAD_REQUEST, format!("reading the body: {e}")).into_response()
        })?;
        if read.len() + chunk.len() > MAX_BODY {
            let mut seen = read.len() + chunk.len();
            drop(read);
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while seen <= DRAIN_MAX {
                    match stream.next().await {
                        Some(Ok(chunk)) => seen += chunk.len(),
                        _ => break,
                    }
                }
            })
            .await;
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an admission review is at most {MAX_BODY} bytes"),
            )
                .into_response());
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(read))
}

async fn mutate_pods(State(w): State<Arc<Webhook>>, body: Body) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(refusal) => return w.refuse("mutate", refusal),
    };
    w.answer("mutate", &body, |pod, _| mutate::patch(pod, &w.driver))
}

async fn validate_pods(State(w): State<Arc<Webhook>>, body: Body) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(refusal) => return w.refuse("validate", refusal),
    };
    let policy = w.policy.get();
    w.answer("validate", &body, |pod, ns| {
        validate::check(pod, ns, &w.realm, &policy)
    })
}

/// The webhook's routes.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate-pods", post(mutate_pods))
        .route("/validate-pods", post(validate_pods))
        .with_state(webhook)
}

/// A TLS acceptor presenting `cert_pem` (chain) with `key_pem`.
/// TLS with the node and admin APIs' certificate in force: the
/// controller renews it (or re-reads the operator's files on `SIGHUP`), and
/// each handshake here takes the current one, so the webhook never serves
/// an expired certificate.
pub fn shared_acceptor(
    cert: Arc<crate::serving_tls::ServingCert>,
) -> Result<TlsAcceptor, WebhookError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS with a fixed certificate (`webhook.cert_file` and `key_file`).
pub fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, WebhookError> {
    let bad = |e: &dyn std::fmt::Display| WebhookError::Certificate(e.to_string());
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if chain.is_empty() {
        return Err(bad(&"no certificate in PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A bound listener with its TLS identity, ready to serve.
pub struct Listener {
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener {
    /// Binds `addr` now, so a taken port stops the controller at start.
    pub fn bind(addr: SocketAddr, acceptor: TlsAcceptor) -> Result<Self, WebhookError> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| WebhookError::Bind { addr, source })?;
        Ok(Listener { listener, acceptor })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves `webhook` until the task is aborted (which drops every
    /// connection).
    pub async fn serve(self, webhook: Arc<Webhook>) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "webhook listener unusable");
                return;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admission webhook serving");
        }
        let router = router(webhook);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::debug!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            connections.spawn(async move {
                let _permit = permit;
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A body of `chunks` chunks of 1 MiB, counting the chunks read.
    fn counted(chunks: usize) -> (Body, Arc<AtomicUsize>) {
        let read = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&read);
        let stream = futures_util::stream::iter((0..chunks).map(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1024 * 1024]))
        }));
        (Body::from_stream(stream), read)
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let (body, _) = counted(3);
        let bytes = read_body(body).await.expect("within the cap");
        assert_eq!(bytes.len(), 3 * 1024 * 1024);
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_then_refused_with_413() {
        let (body, read) = counted(6);
        let refused = read_body(body).await.expect_err("over the cap");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Every byte read before answering, so the connection can close cleanly.
        assert_eq!(read.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn draining_stops_at_its_own_cap() {
        let (body, read) = counted(64);
        let refused = read_body(body).await.expect_err("over the cap");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let chunks = read.load(Ordering::SeqCst);
        assert!(
            chunks > DRAIN_MAX / (1024 * 1024) && chunks < 64,
            "read {chunks} chunks of 1 MiB"
        );
    }
}
