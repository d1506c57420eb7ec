//! The driver's settings (flags or environment; see `main.rs`).

use std::path::PathBuf;

/// Default CSI driver name, as registered with kubelet.
pub const DEFAULT_DRIVER_NAME: &str = "csi.kcred.io";

/// Everything the node driver needs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// CSI driver name (domain notation, at most 63 characters).
    pub driver_name: String,
    /// This node's name, as the Kubernetes API knows it.
    pub node_id: String,
    /// Kubelet's root directory; every target path must lie under its
    /// `pods/` directory.
    pub kubelet_dir: PathBuf,
    /// Where non-secret per-volume state is kept across restarts.
    pub state_dir: PathBuf,
    /// The controller's node API, e.g. `http://controller:7420`.
    pub controller_endpoint: String,
    /// Size limit of each volume's tmpfs.
    pub tmpfs_size_bytes: u64,
}
