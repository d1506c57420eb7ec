//! A small Kubernetes API server for kcred's tests.
//!
//! No kube-apiserver can run where kcred's tests run, so this crate
//! speaks the real protocol for what kcred uses, with bodies built from
//! `k8s-openapi` types: discovery, pods and nodes (list with
//! `resourceVersion`, get, create, replace, merge-patch, delete, and
//! watch with `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events and `410 Gone`
//! for compacted versions), `TokenReview` of pod-bound service-account
//! tokens, and admission webhooks on pod creation. It serves HTTPS with
//! its own CA and writes a kubeconfig, so kube-rs and `kubectl
//! --kubeconfig` both talk to it as to a cluster.
//!
//! Tests change the cluster directly through [`KubeApi::store`] (what the
//! scheduler and kubelet would do), and can compact the history
//! ([`store::Store::compact`]), cut watches ([`KubeApi::cut_watches`]) or
//! take the server down and up again ([`KubeApi::stop`],
//! [`KubeApi::restart`]).
//!
//! Admission webhooks are configured as on a cluster: by creating
//! `MutatingWebhookConfiguration` and `ValidatingWebhookConfiguration`
//! objects (with `clientConfig.url` and `caBundle`); see [`admission`].
//!
//! Not modelled: label and field selectors (ignored), pagination (one
//! page), finalizers and graceful deletion, server-side apply, JSON patch
//! requests and strategic merge beyond what a merge patch does, OpenAPI
//! documents (so `kubectl apply` needs `--validate=false`).

#![forbid(unsafe_code)]

pub mod admission;
pub mod discovery;
pub mod json_patch;
pub mod objects;
pub mod pods;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod watch;
pub mod webhook_call;

pub use server::{CONTEXT, KubeApi, serve_tls};
pub use tokens::TokenClaims;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Making the TLS identity failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(String),
}
