//! Node identity from the driver's own pod: projected service-account
//! tokens ("psat", as SPIRE's `k8s_psat` attestor calls them).
//!
//! On clusters whose nodes have no `host/` keytab (EKS, GKE, AKS), the
//! node driver presents its DaemonSet pod's bound token, audience kcred,
//! as `authorization: Bearer <jwt>` on every call. The controller trusts
//! the API server for three facts, and nothing the caller says:
//!
//! 1. the token is valid for kcred's audience and bound to a pod that
//!    still exists (a `TokenReview`, [`super::token_review`]);
//! 2. that pod runs in the driver's namespace as the driver's service
//!    account (`[auth.psat]`): only the DaemonSet's pods can be nodes, not
//!    any pod that can get a token;
//! 3. the pod's `spec.nodeName` (read with a pod `get`, its UID checked
//!    against the token's) is the node the caller speaks for.
//!
//! So whoever can create pods in the driver's namespace with its service
//! account, or read a driver pod's token, can act as that pod's node:
//! the namespace must be as closely held as the nodes themselves.
//! Verdicts are cached per token for at most a minute.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kcred_auth::BearerToken;
use kcred_proto::kcred::v1::Reason;
use kube::api::Api;

use super::review_cache::{self, ReviewCache};
use super::token_review::{BoundIdentity, ReviewError, TokenReviewer, expiry};
use crate::auth::Rejected;
use crate::config::PsatSection;
use crate::reasons::Refusal;

/// Most node verdicts cached.
const CACHE_ENTRIES: usize = 10_000;

/// Authenticates node drivers by their DaemonSet pod's token.
pub struct Psat {
    reviewer: Arc<TokenReviewer>,
    cfg: PsatSection,
    nodes: ReviewCache<String>,
}

fn rejected(who: &str, reason: Reason, message: String) -> Rejected {
    Rejected {
        who: who.to_string(),
        refusal: Refusal::new(reason, message),
    }
}

/// Decides whether a reviewed token's pod may speak for `claimed`, given
/// the node that pod is bound to (pure).
pub fn decide(
    id: &BoundIdentity,
    cfg: &PsatSection,
    pod_node: Option<&str>,
    claimed: &str,
) -> Result<String, Rejected> {
    let who = format!("psat:{}", id.describe());
    if id.namespace != cfg.namespace || id.service_account != cfg.service_account {
        return Err(rejected(
            &who,
            Reason::NotANodeIdentity,
            format!(
                "the token of pod {} runs as service account {}/{}, not the node driver's {}/{} (auth.psat)",
                id.describe(),
                id.namespace,
                id.service_account,
                cfg.namespace,
                cfg.service_account
            ),
        ));
    }
    let Some(node) = pod_node.filter(|n| !n.is_empty()) else {
        return Err(rejected(
            &who,
            Reason::NotANodeIdentity,
            format!("driver pod {} is not bound to a node", id.describe()),
        ));
    };
    if node != claimed {
        return Err(rejected(
            &who,
            Reason::NodeMismatch,
            format!(
                "driver pod {} runs on node {node:?} and may not speak for node {claimed:?}",
                id.describe()
            ),
        ));
    }
    Ok(node.to_string())
}

impl Psat {
    /// Authenticates with `cfg`, asking the API server through `reviewer`.
    pub fn new(reviewer: Arc<TokenReviewer>, cfg: PsatSection) -> Self {
        Psat {
            reviewer,
            cfg,
            nodes: ReviewCache::new(CACHE_ENTRIES),
        }
    }

    /// Checks that `token` is a driver pod's on node `claimed`.
    pub async fn authenticate(&self, token: &BearerToken, claimed: &str) -> Result<(), Rejected> {
        let key = review_cache::key(&self.cfg.audience, token.expose());
        if let Some(node) = self.nodes.get(&key, Instant::now()) {
            return if node == claimed {
                Ok(())
            } else {
                Err(rejected(
                    &format!("psat:node {node}"),
                    Reason::NodeMismatch,
                    format!("a driver pod on node {node:?} may not speak for node {claimed:?}"),
                ))
            };
        }
        let anonymous = format!("psat:node/{claimed} (unauthenticated)");
        let id = self
            .reviewer
            .review(token, &self.cfg.audience)
            .await
            .map_err(|e| match e {
                ReviewError::Rejected(m) => rejected(
                    &anonymous,
                    Reason::Unauthenticated,
                    format!("node token refused: {m}"),
                ),
                ReviewError::Unavailable(m) => rejected(&anonymous, Reason::KubeApiUnavailable, m),
            })?;
        // Only the driver's own pods are worth a lookup.
        decide(&id, &self.cfg, Some(claimed), claimed)?;
        let pod_node = self.pod_node(&id).await?;
        let node = decide(&id, &self.cfg, pod_node.as_deref(), claimed)?;
        let ttl = review_cache::ttl(expiry(token.expose()), SystemTime::now());
        self.nodes.put(key, node, ttl, Instant::now());
        Ok(())
    }

    /// The node the token's pod is bound to, from the API server.
    async fn pod_node(&self, id: &BoundIdentity) -> Result<Option<String>, Rejected> {
        let who = format!("psat:{}", id.describe());
        let client = self
            .reviewer
            .client()
            .await
            .map_err(|e| rejected(&who, Reason::KubeApiUnavailable, e.to_string()))?;
        let pods: Api<Pod> = Api::namespaced(client, &id.namespace);
        let pod = match pods.get_opt(&id.pod_name).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(rejected(
                    &who,
                    Reason::Unauthenticated,
                    format!("driver pod {} no longer exists", id.describe()),
                ));
            }
            Err(e) => {
                return Err(rejected(
                    &who,
                    Reason::KubeApiUnavailable,
                    format!("cannot read driver pod {}: {e}", id.describe()),
                ));
            }
        };
        if pod.metadata.uid.as_deref() != Some(id.pod_uid.as_str()) {
            return Err(rejected(
                &who,
                Reason::Unauthenticated,
                format!(
                    "driver pod {} was replaced by another pod of that name",
                    id.describe()
                ),
            ));
        }
        let node = pod.spec.and_then(|s| s.node_name);
        if let (Some(said), Some(n)) = (&id.node_name, &node)
            && said != n
        {
            return Err(rejected(
                &who,
                Reason::Unauthenticated,
                format!(
                    "the token of driver pod {} names node {said:?}, the pod node {n:?}",
                    id.describe()
                ),
            ));
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver_pod(namespace: &str, sa: &str) -> BoundIdentity {
        BoundIdentity {
            namespace: namespace.into(),
            service_account: sa.into(),
            pod_name: "kcred-csi-driver-x7k2p".into(),
            pod_uid: "uid-d".into(),
            node_name: None,
        }
    }

    #[test]
    fn a_driver_pod_speaks_for_the_node_it_is_bound_to() {
        let cfg = PsatSection::default();
        let id = driver_pod("kcred", "kcred-csi-driver");
        assert_eq!(
            decide(&id, &cfg, Some("node-a"), "node-a").unwrap(),
            "node-a"
        );
        let other = decide(&id, &cfg, Some("node-b"), "node-a").unwrap_err();
        assert_eq!(other.refusal.reason, Reason::NodeMismatch);
        let unbound = decide(&id, &cfg, None, "node-a").unwrap_err();
        assert_eq!(unbound.refusal.reason, Reason::NotANodeIdentity);
    }

    #[test]
    fn a_pod_outside_the_drivers_namespace_or_account_is_no_node() {
        let cfg = PsatSection::default();
        for id in [
            driver_pod("web", "kcred-csi-driver"),
            driver_pod("kcred", "default"),
        ] {
            let err = decide(&id, &cfg, Some("node-a"), "node-a").unwrap_err();
            assert_eq!(err.refusal.reason, Reason::NotANodeIdentity, "{id:?}");
            assert!(
                err.refusal.message.contains("kcred/kcred-csi-driver"),
                "{}",
                err.refusal.message
            );
        }
    }
}
