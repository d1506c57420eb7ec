//! The driver's side of the kcred.v1 node API.

use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{Bundle, FetchBundleRequest, PodRef};
use tonic::transport::{Channel, Endpoint};

/// A lazily connecting client: the driver starts (and answers kubelet's
/// Probe) even while the controller is unreachable.
#[derive(Clone)]
pub struct ControllerClient {
    inner: NodeCredentialsClient<Channel>,
    node_name: String,
}

impl ControllerClient {
    /// Builds a client for `endpoint`; fails only on a malformed address.
    pub fn new(endpoint: &str, node_name: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .connect_lazy();
        Ok(ControllerClient {
            inner: NodeCredentialsClient::new(channel),
            node_name: node_name.to_string(),
        })
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
}
