//! The driver's side of the kcred.v1 node API.

use std::sync::Arc;

use kcred_auth::Initiator;
use kcred_auth::grpc::TokenInterceptor;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{
    Bundle, FetchBundleRequest, HeartbeatRequest, HeartbeatResponse, PodRef, VolumeUpdate,
    WatchUpdatesRequest,
};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Adds the node's Kerberos token to each call when the node has an
/// identity (production); passes calls through otherwise (controllers
/// running with `auth.mode = "none"`).
#[derive(Clone)]
pub struct NodeIdentity(Option<TokenInterceptor>);

impl NodeIdentity {
    /// No identity: calls carry no token.
    pub fn none() -> Self {
        NodeIdentity(None)
    }

    /// The node's `host/<fqdn>` identity.
    pub fn kerberos(initiator: Arc<Initiator>) -> Self {
        NodeIdentity(Some(TokenInterceptor::new(initiator)))
    }
}

impl Interceptor for NodeIdentity {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match &mut self.0 {
            Some(t) => t.call(request),
            None => Ok(request),
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
    ) -> Result<Bundle, tonic::Status> {
        let mut client = self.inner.clone();
        let resp = client
            .fetch_bundle(FetchBundleRequest {
                node_name: self.node_name.clone(),
                pod: Some(pod),
                volume_id: volume_id.to_string(),
                refresh,
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// Renews the node's lease and learns which volumes are stale.
    pub async fn heartbeat(
        &self,
        volume_ids: Vec<String>,
    ) -> Result<HeartbeatResponse, tonic::Status> {
        let mut client = self.inner.clone();
        Ok(client
            .heartbeat(HeartbeatRequest {
                node_name: self.node_name.clone(),
                volume_ids,
            })
            .await?
            .into_inner())
    }

    /// Subscribes to pushed updates.
    pub async fn watch_updates(&self) -> Result<tonic::Streaming<VolumeUpdate>, tonic::Status> {
        let mut client = self.inner.clone();
        Ok(client
            .watch_updates(WatchUpdatesRequest {
                node_name: self.node_name.clone(),
            })
            .await?
            .into_inner())
    }
}
