//! The Kubernetes API as the controller's source of truth for pods and
//! nodes.
//!
//! [`KubeSource::new`] checks the `[kubernetes]` table at start (a
//! kubeconfig that does not parse, or names no such context, stops the
//! controller there); the watches then run in the background
//! ([`watch::run`]), each keeping a lean view ([`crate::pods::PodIndex`],
//! [`crate::nodes::known::KnownNodes`]) current and reporting how far
//! behind it may be in metrics.
//!
//! The API server also vouches for bound service-account tokens
//! ([`token_review`]): a pod's own token in a fetch request
//! ([`pod_tokens`], decided in [`crate::admission::pod_token`]) and a node
//! driver's DaemonSet pod token as its node identity ([`psat`]).

pub mod pod_tokens;
pub mod psat;
pub mod review_cache;
pub mod token_review;
pub mod watch;

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::KubernetesSection;

/// Why the API server cannot be reached as configured.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The kubeconfig has no such context.
    #[error("kubeconfig {path} has no context {context:?}")]
    NoContext {
        /// The file.
        path: PathBuf,
        /// The context asked for.
        context: String,
    },
    /// The client configuration could not be built.
    #[error("kubernetes client: {0}")]
    Client(String),
}

/// How to reach the API server.
#[derive(Debug, Clone)]
pub enum KubeSource {
    /// A kubeconfig file and, optionally, one of its contexts.
    Kubeconfig {
        /// Parsed at start.
        config: Box<Kubeconfig>,
        /// The context (`None`: the file's current context).
        context: Option<String>,
    },
    /// The pod's own service account.
    InCluster,
}

impl KubeSource {
    /// Checks the `[kubernetes]` table against the files it names.
    pub fn new(section: &KubernetesSection) -> Result<Self, KubeSourceError> {
        let Some(path) = &section.kubeconfig else {
            return Ok(KubeSource::InCluster);
        };
        let config = Kubeconfig::read_from(path).map_err(|e| KubeSourceError::Kubeconfig {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(ctx) = &section.context
            && !config.contexts.iter().any(|c| &c.name == ctx)
        {
            return Err(KubeSourceError::NoContext {
                path: path.clone(),
                context: ctx.clone(),
            });
        }
        Ok(KubeSource::Kubeconfig {
            config: Box::new(config),
            context: section.context.clone(),
        })
    }

    /// A client (retried by the watches when it fails: the API server's
    /// certificate or token files may appear later).
    pub async fn client(&self) -> Result<kube::Client, KubeSourceError> {
        let client_err = |e: &dyn std::fmt::Display| KubeSourceError::Client(e.to_string());
        let config = match self {
            KubeSource::InCluster => kube::Config::incluster().map_err(|e| client_err(&e))?,
            KubeSource::Kubeconfig { config, context } => {
                let opts = KubeConfigOptions {
                    context: context.clone(),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig((**config).clone(), &opts)
                    .await
                    .map_err(|e| client_err(&e))?
            }
        };
        kube::Client::try_from(config).map_err(|e| client_err(&e))
    }
}
