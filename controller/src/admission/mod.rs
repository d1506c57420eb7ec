//! Admission: whether a node may have a pod's credentials, decided in one
//! place.
//!
//! [`fetch`] is a pure function of what the controller knows when a node
//! asks for a volume's bundle: the authenticated caller, the request, the
//! controller's own view of the pod, the policy, the caller's lease, the
//! volume's issued record and the identities kcred reserves. It answers a
//! [`Grant`] or a [`Refusal`] naming one [`Reason`] of the vocabulary.
//! The gRPC handler gathers the facts, audits the outcome and translates
//! it; it decides nothing itself.
//!
//! The rules, in the order they are checked (the first refusal wins):
//!
//! | rule | refusal |
//! | --- | --- |
//! | the request carries the pod's own bound token, when required ([`pod_token`]) | `POD_TOKEN_MISSING`, `POD_TOKEN_INVALID`, `POD_TOKEN_MISMATCH`, `KUBE_API_UNAVAILABLE` |
//! | the pod is in the controller's view | `POD_UNKNOWN` |
//! | its UID is the one the request names (the refusal does not say the pod's UID: another node could take the pod's volume ids from it) | `POD_UID_MISMATCH` |
//! | it is bound to the calling node | `POD_NOT_ON_NODE` |
//! | the volume id is one kubelet derives from the pod's UID and one of its inline CSI volumes' names, where the view knows them | `VOLUME_CONFLICT` |
//! | it has not finished | `POD_FINISHED` |
//! | its annotations ask for something, validly | `ANNOTATIONS_MISSING`, `ANNOTATION_INVALID` |
//! | nothing asked for is reserved ([`reserved`]) | `RESERVED_IDENTITY`, `RESERVED_NAME` |
//! | the role-account policy grants it ([`crate::policy`]) | `NO_ROLE_ACCOUNT`, `PRINCIPAL_NOT_OWNED`, ... |
//! | it runs as the role account, with allowed groups and service account ([`identity`]) | `RUN_AS_MISMATCH`, `SERVICE_ACCOUNT_NOT_ALLOWED` |
//! | the volume id is this pod's on this node | `VOLUME_CONFLICT` |
//! | neither the volume nor its pod was revoked | `VOLUME_REVOKED` |
//! | a refresh comes from a node whose lease holds | `NODE_LOST` |

pub mod identity;
pub mod pod_token;
pub mod reserved;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use kcred_proto::kcred::v1::{PodRef, Reason};

use crate::annotations::CredentialRequest;
use crate::gate::Priority;
use crate::issued::VolumeRecord;
use crate::nodes::leases::LeaseState;
use crate::pods::PodInfo;
use crate::policy::{Policy, RoleAccount};
pub use crate::reasons::Refusal;
pub use pod_token::TokenVerdict;
pub use reserved::Reserved;

/// What the controller knows when a node asks for a volume's bundle.
pub struct FetchFacts<'a> {
    /// The node the caller authenticated as.
    pub node: &'a str,
    /// The pod as the node names it (untrusted).
    pub pod_ref: &'a PodRef,
    /// The CSI volume id.
    pub volume_id: &'a str,
    /// Whether the node already holds a bundle for the volume.
    pub refresh: bool,
    /// The pod in the controller's own view, if it is there.
    pub pod: Option<&'a PodInfo>,
    /// The served realms, for principal names in annotations.
    pub realm: &'a dyn crate::names::Served,
    /// The role-account policy in force.
    pub policy: &'a Policy,
    /// Identities never issued to pods.
    pub reserved: &'a Reserved,
    /// Whether a host name is a node's (its `host/` key is reserved).
    pub is_node: &'a dyn Fn(&str) -> bool,
    /// The caller's lease (`None`: it never heartbeated).
    pub lease: Option<LeaseState>,
    /// The volume's issued record, if it was issued before.
    pub volume: Option<&'a VolumeRecord>,
    /// Whether any volume of the pod was revoked.
    pub pod_revoked: bool,
    /// Whether the pod view may be behind the API server: a pod it does
    /// not know may then exist.
    pub pods_behind: bool,
    /// The review of the request's pod token (`None`: tokens are not
    /// required, none was reviewed).
    pub pod_token: Option<&'a TokenVerdict>,
}

/// What a node may have for a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The pod, as the controller's view has it.
    pub pod: PodInfo,
    /// The role account the credentials are issued to (shared with the
    /// policy in force when it was granted).
    pub role: Arc<RoleAccount>,
    /// The credentials, as the pod's annotations ask for them.
    pub wants: CredentialRequest,
    /// A starting pod goes before renewals at the KDC.
    pub priority: Priority,
}

/// Decides a bundle request.
pub fn fetch(f: &FetchFacts) -> Result<Grant, Refusal> {
    let who = format!("{}/{}", f.pod_ref.namespace, f.pod_ref.name);
    if let Some(verdict) = f.pod_token {
        pod_token::check(verdict, f.pod_ref, f.node, f.refresh, f.volume)?;
    }
    let Some(pod) = f.pod else {
        if f.pods_behind {
            // Transient: kubelet retries, and the pod is served once the
            // watch catches up. Pods already known keep renewing.
            return Err(Refusal::new(
                Reason::PodViewBehind,
                format!(
                    "pod {who} is not known to the controller, whose view of the cluster is \
                     behind the API server (watch down or not listed yet); retry"
                ),
            ));
        }
        return Err(Refusal::new(
            Reason::PodUnknown,
            format!("pod {who} is not known to the controller"),
        ));
    };
    if pod.uid != f.pod_ref.uid {
        return Err(Refusal::new(
            Reason::PodUidMismatch,
            format!(
                "pod {who} has another uid than the request names ({}): it was replaced",
                f.pod_ref.uid
            ),
        ));
    }
    if pod.node_name != f.node {
        return Err(Refusal::new(
            Reason::PodNotOnNode,
            format!(
                "pod {who} is bound to node {:?}, not {:?}",
                pod.node_name, f.node
            ),
        ));
    }
    if let Some(names) = &pod.csi_volumes
        && !names
            .iter()
            .any(|n| kcred_proto::inline_volume_id(&pod.uid, n) == f.volume_id)
    {
        // Otherwise a node could take the id of a volume another pod will
        // have (kubelet derives it from that pod's UID), or make up ids
        // without end for one of its own pods.
        return Err(Refusal::new(
            Reason::VolumeConflict,
            format!(
                "volume {} is not the id of any CSI volume of pod {who} (kubelet derives it from the pod's uid and the volume's name)",
                f.volume_id
            ),
        ));
    }
    if pod.finished {
        return Err(Refusal::new(
            Reason::PodFinished,
            format!("pod {who} has finished: it gets nothing more"),
        ));
    }
    let wants = CredentialRequest::from_annotations(&pod.annotations, f.realm)
        .map_err(|e| Refusal::from_error(&e))?;
    for p in &wants.keytabs {
        f.reserved.check_principal(p, f.is_node)?;
    }
    for name in &wants.certs {
        f.reserved.check_cert_name(name)?;
    }
    let role = f
        .policy
        .authorize(&pod.namespace, &wants)
        .map_err(|d| Refusal::from_error(&d))?
        .clone();
    identity::check(pod, &role)?;
    if let Some(v) = f.volume
        && (v.node != f.node || v.pod_uid != pod.uid)
    {
        // A volume id belongs to one pod on one node (kubelet derives it
        // from the pod UID): reusing another's would hijack its record.
        return Err(Refusal::new(
            Reason::VolumeConflict,
            format!(
                "volume {} belongs to pod uid {} on node {:?}",
                f.volume_id, v.pod_uid, v.node
            ),
        ));
    }
    if f.volume.is_some_and(|v| v.revoked) || f.pod_revoked {
        return Err(revoked(f.volume_id, &who));
    }
    if f.refresh && f.lease == Some(LeaseState::Lost) {
        return Err(Refusal::new(
            Reason::NodeLost,
            format!(
                "node {} lost its lease: no renewals until it heartbeats again",
                f.node
            ),
        ));
    }
    Ok(Grant {
        pod: pod.clone(),
        role,
        wants,
        priority: if f.refresh {
            Priority::Background
        } else {
            Priority::Starting
        },
    })
}

/// The refusal for a revoked volume (also when the revocation lands while
/// the bundle was being issued).
pub fn revoked(volume_id: &str, pod: &str) -> Refusal {
    Refusal::new(
        Reason::VolumeRevoked,
        format!("volume {volume_id} of pod {pod} was revoked"),
    )
}
