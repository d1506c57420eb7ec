//! CSI Identity: who the plugin is and whether it is healthy.

use std::sync::Arc;

use kcred_proto::csi::v1::identity_server::Identity;
use kcred_proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, ProbeRequest, ProbeResponse,
};
use tonic::{Request, Response, Status};

use crate::volumes::VolumeManager;

/// The Identity service.
pub struct IdentityService {
    name: String,
    volumes: Arc<VolumeManager>,
}

impl IdentityService {
    /// Serves identity for `name` (the registered driver name).
    pub fn new(name: String, volumes: Arc<VolumeManager>) -> Self {
        IdentityService { name, volumes }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    /// A node-only plugin: no CONTROLLER_SERVICE, no topology.
    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        if self.volumes.ready() {
            Ok(Response::new(ProbeResponse { ready: Some(true) }))
        } else {
            Err(Status::failed_precondition(
                "state directory is not readable",
            ))
        }
    }
}
