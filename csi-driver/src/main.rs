//! `kcred-csi-driver`: the CSI node plugin.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use kcred_csi_driver::controller_client::ControllerClient;
use kcred_csi_driver::csi::server;
use kcred_csi_driver::storage::state::StateDir;
use kcred_csi_driver::volumes::VolumeManager;
use kcred_csi_driver::{DriverConfig, config::DEFAULT_DRIVER_NAME};

#[derive(Parser)]
#[command(
    version,
    about = "kcred CSI node driver: mounts Kerberos credentials into pods"
)]
struct Cli {
    /// Unix socket kubelet (via node-driver-registrar) connects to.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "/csi/csi.sock")]
    endpoint: PathBuf,
    /// This node's Kubernetes name.
    #[arg(long, env = "NODE_NAME")]
    node_id: String,
    /// The controller's node API.
    #[arg(
        long,
        env = "KCRED_CONTROLLER",
        default_value = "http://kcred-controller:7420"
    )]
    controller: String,
    /// Kubelet's root directory.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Directory for non-secret per-volume state.
    #[arg(
        long,
        env = "KCRED_STATE_DIR",
        default_value = "/var/lib/kcred-csi/state"
    )]
    state_dir: PathBuf,
    /// Registered driver name.
    #[arg(long, default_value = DEFAULT_DRIVER_NAME)]
    driver_name: String,
    /// Serve Prometheus `/metrics` on this address (off if unset).
    #[arg(long, env = "KCRED_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Size limit of each volume's tmpfs, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    tmpfs_size_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let cfg = DriverConfig {
        driver_name: cli.driver_name,
        node_id: cli.node_id,
        kubelet_dir: cli.kubelet_dir,
        state_dir: cli.state_dir,
        controller_endpoint: cli.controller,
        tmpfs_size_bytes: cli.tmpfs_size_bytes,
    };
    let client = ControllerClient::new(&cfg.controller_endpoint, &cfg.node_id)
        .with_context(|| format!("controller endpoint {:?}", cfg.controller_endpoint))?;
    let state = StateDir::open(&cfg.state_dir)
        .with_context(|| format!("state directory {}", cfg.state_dir.display()))?;
    let volumes = Arc::new(VolumeManager::new(cfg.clone(), client, state));
    if let Some(addr) = cli.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics address {addr}"))?;
        let metrics = volumes.metrics();
        tokio::spawn(async move {
            if let Err(e) = metrics.serve(listener).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    tokio::spawn(kcred_csi_driver::volumes::renewal::run(Arc::clone(
        &volumes,
    )));
    let listener = server::bind(&cli.endpoint)?;
    tracing::info!(endpoint = %cli.endpoint.display(), node = %cfg.node_id, "serving CSI");
    server::serve(cfg, volumes, listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM (what systemd and Kubernetes send).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
