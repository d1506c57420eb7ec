//! The pod's own word: its bound service-account token.
//!
//! kubelet requests a token for kcred's audience for every pod it mounts a
//! kcred volume for (the CSIDriver's `tokenRequests`) and passes it with
//! each publish; the driver forwards it. The API server issued that token
//! to that very pod, so a node can present one only for pods kubelet
//! actually mounts there: a compromised node cannot ask for pods it was
//! never asked to mount (and the pod's own node binding is checked
//! against the controller's view as always).
//!
//! With `kubernetes.require_pod_token` the gRPC handler reviews the token
//! ([`crate::kubernetes::token_review`]) and hands the verdict to
//! [`check`]:
//!
//! | verdict | outcome |
//! | --- | --- |
//! | no token | `POD_TOKEN_MISSING` |
//! | the API server does not vouch for it (unknown, expired, another audience, not pod-bound) | `POD_TOKEN_INVALID` |
//! | it names another pod (namespace, name or UID) than the request | `POD_TOKEN_MISMATCH` |
//! | the API server cannot be asked | `KUBE_API_UNAVAILABLE`, except for the refresh of a volume already issued to this pod on this node |
//! | it names the request's pod | the other rules decide |
//!
//! The exception keeps renewals going through an API outage: the volume's
//! record shows its first issue passed this check for the same pod UID on
//! the same node.

use kcred_proto::kcred::v1::{PodRef, Reason};

use crate::issued::VolumeRecord;
use crate::kubernetes::token_review::BoundIdentity;
use crate::reasons::Refusal;

/// What the review of a request's pod token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenVerdict {
    /// The request carries no token.
    Missing,
    /// The API server vouches for it: the pod it names.
    Reviewed(BoundIdentity),
    /// The API server does not vouch for it; why.
    Rejected(String),
    /// The API server could not be asked; why.
    Unverifiable(String),
}

/// Checks a request's pod token (when tokens are required).
pub fn check(
    verdict: &TokenVerdict,
    pod_ref: &PodRef,
    node: &str,
    refresh: bool,
    volume: Option<&VolumeRecord>,
) -> Result<(), Refusal> {
    let who = format!("{}/{}", pod_ref.namespace, pod_ref.name);
    match verdict {
        TokenVerdict::Missing => Err(Refusal::new(
            Reason::PodTokenMissing,
            format!(
                "the request for pod {who} carries no pod token, and the controller requires one (kubernetes.require_pod_token): the CSIDriver object must request a token for the controller's audience (tokenRequests)"
            ),
        )),
        TokenVerdict::Rejected(why) => Err(Refusal::new(
            Reason::PodTokenInvalid,
            format!("the pod token sent for pod {who} is not valid: {why}"),
        )),
        TokenVerdict::Unverifiable(why) => {
            let issued_here =
                volume.is_some_and(|v| v.node == node && v.pod_uid == pod_ref.uid && !v.revoked);
            if refresh && issued_here {
                return Ok(());
            }
            Err(Refusal::new(
                Reason::KubeApiUnavailable,
                format!("cannot verify the pod token of pod {who} now: {why}"),
            ))
        }
        TokenVerdict::Reviewed(id) => {
            if id.namespace == pod_ref.namespace
                && id.pod_name == pod_ref.name
                && id.pod_uid == pod_ref.uid
            {
                Ok(())
            } else {
                Err(Refusal::new(
                    Reason::PodTokenMismatch,
                    format!(
                        "the pod token sent for pod {who} (uid {}) belongs to pod {}",
                        pod_ref.uid,
                        id.describe()
                    ),
                ))
            }
        }
    }
}
