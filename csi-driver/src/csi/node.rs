//! CSI Node: publish and unpublish ephemeral inline volumes.

use std::sync::Arc;

use kcred_proto::csi::v1::node_server::Node;
use kcred_proto::csi::v1::*;
use tonic::{Code, Request, Response, Status};

use super::pod_token::pod_token;
use super::request::{
    check_capability, check_kubelet_derivation, check_volume_id, pod_from_context,
    validate_target_path,
};
use crate::config::DriverConfig;
use crate::volumes::{PublishRequest, VolumeManager};

/// Longest node id the spec allows.
const MAX_NODE_ID: usize = 256;

/// The Node service.
pub struct NodeService {
    cfg: DriverConfig,
    volumes: Arc<VolumeManager>,
}

impl NodeService {
    /// Serves the node API over a volume manager.
    pub fn new(cfg: DriverConfig, volumes: Arc<VolumeManager>) -> Self {
        NodeService { cfg, volumes }
    }
}

impl NodeService {
    fn observe<T>(&self, method: &str, started: std::time::Instant, result: &Result<T, Status>) {
        let m = self.volumes.metrics();
        let code = kcred_proto::code_label(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        m.call_seconds
            .with_label_values(&[method, code])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            m.errors.with_label_values(&[method, code]).inc();
        }
    }

    /// Argument checks first (the spec's codes, a message naming the
    /// field), then the volume's lifecycle.
    async fn publish(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse, Status> {
        check_volume_id(&req.volume_id)?;
        let target = validate_target_path(&self.cfg.kubelet_dir, &req.target_path)?;
        check_capability(req.volume_capability.as_ref())?;
        if !req.staging_target_path.is_empty() {
            return Err(Status::invalid_argument(
                "staging_target_path must be empty: kcred does not stage volumes",
            ));
        }
        let pod = pod_from_context(&req.volume_context)?;
        check_kubelet_derivation(&target, &req.volume_id, Some(&pod))?;
        let token = pod_token(
            &req.secrets,
            &req.volume_context,
            &self.cfg.pod_token_audience,
        )?;
        if token.is_none() {
            tracing::debug!(volume = %req.volume_id,
                audience = %self.cfg.pod_token_audience, "kubelet passed no pod token");
        }
        let outcome = self
            .volumes
            .publish_with_pod_token(
                PublishRequest {
                    volume_id: req.volume_id.clone(),
                    target: target.path,
                    pod,
                    readonly: req.readonly,
                },
                token,
            )
            .await?;
        tracing::debug!(volume = %req.volume_id, ?outcome, "publish done");
        Ok(NodePublishVolumeResponse {})
    }

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse, Status> {
        check_volume_id(&req.volume_id)?;
        let target = validate_target_path(&self.cfg.kubelet_dir, &req.target_path)?;
        check_kubelet_derivation(&target, &req.volume_id, None)?;
        let outcome = self.volumes.unpublish(&req.volume_id, target.path).await?;
        tracing::debug!(volume = %req.volume_id, ?outcome, "unpublish done");
        Ok(NodeUnpublishVolumeResponse {})
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.publish(request.into_inner()).await;
        self.observe("NodePublishVolume", started, &result);
        result.map(Response::new)
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self.unpublish(request.into_inner()).await;
        self.observe("NodeUnpublishVolume", started, &result);
        result.map(Response::new)
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        if self.cfg.node_id.is_empty() || self.cfg.node_id.len() > MAX_NODE_ID {
            return Err(Status::internal("node id is not configured"));
        }
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.cfg.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("kcred does not stage volumes"))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("kcred does not stage volumes"))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("volume stats are not offered"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("kcred volumes cannot be expanded"))
    }
}
