//! Serving CSI on a unix socket, as kubelet expects.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use kcred_proto::csi::v1::identity_server::IdentityServer;
use kcred_proto::csi::v1::node_server::NodeServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use super::identity::IdentityService;
use super::node::NodeService;
use crate::config::DriverConfig;
use crate::volumes::VolumeManager;

/// Why the CSI server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be created.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// gRPC failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `socket` (replacing a stale socket file left by a previous run).
pub fn bind(socket: &Path) -> Result<UnixListener, ServerError> {
    let err = |source| ServerError::Socket {
        path: socket.display().to_string(),
        source,
    };
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    UnixListener::bind(socket).map_err(err)
}

/// Serves Identity and Node on `listener` until `shutdown` completes.
pub async fn serve(
    cfg: DriverConfig,
    volumes: Arc<VolumeManager>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(
            cfg.driver_name.clone(),
            Arc::clone(&volumes),
        )))
        .add_service(NodeServer::new(NodeService::new(cfg, volumes)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
