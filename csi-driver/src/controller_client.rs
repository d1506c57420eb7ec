//! The driver's side of the kcred.v1 node API.

use std::sync::Arc;

use kcred_auth::grpc::TokenInterceptor;
use kcred_auth::{BearerToken, Initiator};
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{
    Bundle, FetchBundleRequest, HeartbeatRequest, HeartbeatResponse, PodRef, Reason, VolumeUpdate,
    WatchUpdatesRequest,
};
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Why a call to the controller failed, as the driver acts on it: by the
/// typed reason the controller sends, never by its message.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The controller answered with a refusal or a failure of its own.
    #[error("controller: {}", .status.message())]
    Refused {
        /// The reason it gave (`None` from a controller that sends none).
        reason: Option<Reason>,
        /// Its status, code and message kept as sent.
        status: tonic::Status,
    },
    /// The controller could not be reached or did not answer in time.
    #[error("controller unreachable: {}", .0.message())]
    Unreachable(tonic::Status),
}

impl ControllerError {
    /// Classifies a status from a call: a reason means the controller
    /// answered; without one, the codes a broken connection or timeout
    /// produce mean it was not reached.
    pub fn from_status(status: tonic::Status) -> Self {
        match kcred_proto::reason::reason_of(&status) {
            Some(reason) => ControllerError::Refused {
                reason: Some(reason),
                status,
            },
            None if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
            ) =>
            {
                ControllerError::Unreachable(status)
            }
            None => ControllerError::Refused {
                reason: None,
                status,
            },
        }
    }

    /// The controller's reason, if it gave one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ControllerError::Refused { reason, .. } => *reason,
            ControllerError::Unreachable(_) => None,
        }
    }

    /// Whether the volume (or its pod) was revoked: its files must go.
    pub fn is_revoked(&self) -> bool {
        self.reason() == Some(Reason::VolumeRevoked)
    }

    /// Whether the same call may succeed later without anyone acting.
    pub fn is_transient(&self) -> bool {
        match self {
            ControllerError::Unreachable(_) => true,
            ControllerError::Refused { reason, status } => match reason {
                Some(r) => r.is_transient(),
                None => matches!(status.code(), Code::ResourceExhausted | Code::Aborted),
            },
        }
    }

    /// The status as received.
    pub fn status(&self) -> &tonic::Status {
        match self {
            ControllerError::Refused { status, .. } | ControllerError::Unreachable(status) => {
                status
            }
        }
    }
}

/// Adds the node's proof of identity to each call: a Kerberos token from
/// its host keytab, or its DaemonSet pod's service-account token (psat);
/// passes calls through with none (controllers running with
/// `auth.mode = "none"`, or mTLS, which the connection carries).
#[derive(Clone)]
pub struct NodeIdentity(Proof);

#[derive(Clone)]
enum Proof {
    None,
    Kerberos(TokenInterceptor),
    Psat(Arc<crate::psat::TokenFile>),
}

impl NodeIdentity {
    /// No identity: calls carry no token.
    pub fn none() -> Self {
        NodeIdentity(Proof::None)
    }

    /// The node's `host/<fqdn>` identity.
    pub fn kerberos(initiator: Arc<Initiator>) -> Self {
        NodeIdentity(Proof::Kerberos(TokenInterceptor::new(initiator)))
    }

    /// The driver pod's projected service-account token, read from its
    /// file (again whenever kubelet rotates it).
    pub fn psat(token_file: Arc<crate::psat::TokenFile>) -> Self {
        NodeIdentity(Proof::Psat(token_file))
    }
}

impl Interceptor for NodeIdentity {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        match &mut self.0 {
            Proof::Kerberos(t) => t.call(request),
            Proof::Psat(file) => {
                let token = file.current().map_err(|e| {
                    tonic::Status::unavailable(format!("no node token to present: {e}"))
                })?;
                token.attach(&mut request).map_err(|e| {
                    tonic::Status::unavailable(format!("node token {}: {e}", file.path().display()))
                })?;
                Ok(request)
            }
            Proof::None => Ok(request),
        }
    }
}

type Client = NodeCredentialsClient<InterceptedService<Channel, NodeIdentity>>;

/// A lazily connecting client: the driver starts (and answers kubelet's
/// Probe) even while the controller is unreachable, and reconnects by
/// itself when it returns.
#[derive(Clone)]
pub struct ControllerClient {
    inner: Client,
    node_name: String,
}

impl ControllerClient {
    /// Builds a client for `endpoint`; fails only on a malformed address.
    pub fn new(endpoint: &str, node_name: &str) -> Result<Self, tonic::transport::Error> {
        Self::with_identity(endpoint, node_name, NodeIdentity::none())
    }

    /// Builds a client whose calls carry `identity`.
    pub fn with_identity(
        endpoint: &str,
        node_name: &str,
        identity: NodeIdentity,
    ) -> Result<Self, tonic::transport::Error> {
        Self::connect(endpoint, node_name, identity, None)
    }

    /// Builds a client whose calls carry `identity` over TLS when `tls` is
    /// set (the controller's CA as trust bundle; `https://` endpoint).
    pub fn connect(
        endpoint: &str,
        node_name: &str,
        identity: NodeIdentity,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut ep = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60));
        if let Some(tls) = tls {
            ep = ep.tls_config(tls)?;
        }
        let channel = ep.connect_lazy();
        Ok(ControllerClient {
            inner: NodeCredentialsClient::with_interceptor(channel, identity),
            node_name: node_name.to_string(),
        })
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Asks for a pod volume's bundle.
    pub async fn fetch_bundle(
        &self,
        pod: PodRef,
        volume_id: &str,
        refresh: bool,
    ) -> Result<Bundle, ControllerError> {
        self.fetch_bundle_with_token(pod, volume_id, refresh, None)
            .await
    }

    /// Asks for a pod volume's bundle, with the pod's own bound token
    /// (kubelet's, for the controller's audience) when there is one.
    pub async fn fetch_bundle_with_token(
        &self,
        pod: PodRef,
        volume_id: &str,
        refresh: bool,
        pod_token: Option<&BearerToken>,
    ) -> Result<Bundle, ControllerError> {
        let mut client = self.inner.clone();
        let resp = client
            .fetch_bundle(FetchBundleRequest {
                node_name: self.node_name.clone(),
                pod: Some(pod),
                volume_id: volume_id.to_string(),
                refresh,
                pod_token: pod_token
                    .map(|t| t.expose().to_string())
                    .unwrap_or_default(),
            })
            .await
            .map_err(ControllerError::from_status)?;
        Ok(resp.into_inner())
    }

    /// Keeps the node's lease alive and learns which volumes are stale
    /// or revoked.
    pub async fn heartbeat(
        &self,
        volume_ids: Vec<String>,
    ) -> Result<HeartbeatResponse, ControllerError> {
        let mut client = self.inner.clone();
        Ok(client
            .heartbeat(HeartbeatRequest {
                node_name: self.node_name.clone(),
                volume_ids,
            })
            .await
            .map_err(ControllerError::from_status)?
            .into_inner())
    }

    /// Subscribes to pushed updates.
    pub async fn watch_updates(&self) -> Result<tonic::Streaming<VolumeUpdate>, ControllerError> {
        let mut client = self.inner.clone();
        Ok(client
            .watch_updates(WatchUpdatesRequest {
                node_name: self.node_name.clone(),
            })
            .await
            .map_err(ControllerError::from_status)?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_proto::reason::status;

    #[test]
    fn revocation_is_read_from_the_reason_not_the_message() {
        let revoked = ControllerError::from_status(status(Reason::VolumeRevoked, "gone"));
        assert!(revoked.is_revoked());
        assert!(!revoked.is_transient());
        let worded = ControllerError::from_status(tonic::Status::permission_denied(
            "volume v of pod web/a was revoked",
        ));
        assert!(!worded.is_revoked(), "message text decides nothing");
        assert_eq!(worded.reason(), None);
    }

    #[test]
    fn transient_reasons_and_broken_connections_are_retryable() {
        for r in [
            Reason::KdcUnavailable,
            Reason::KdcBusy,
            Reason::RotationInProgress,
        ] {
            assert!(
                ControllerError::from_status(status(r, "later")).is_transient(),
                "{r:?}"
            );
        }
        let down = ControllerError::from_status(tonic::Status::unavailable("connection refused"));
        assert!(matches!(down, ControllerError::Unreachable(_)));
        assert!(down.is_transient());
        let refused = ControllerError::from_status(status(Reason::PodNotOnNode, "elsewhere"));
        assert!(!refused.is_transient());
        assert_eq!(refused.status().code(), tonic::Code::PermissionDenied);
    }
}
