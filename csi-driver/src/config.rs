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
    /// The controllers' node API, e.g. `http://controller:7420`; several
    /// separated by commas (calls fail over between them).
    pub controller_endpoint: String,
    /// Size limit of each volume's tmpfs.
    pub tmpfs_size_bytes: u64,
}

/// Longest driver name the CSI spec allows.
const MAX_DRIVER_NAME: usize = 63;

/// A driver name the CSI spec does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "driver name {0:?} must be 1 to 63 characters in domain notation: letters, digits, '-' and '.', beginning and ending with a letter or digit"
)]
pub struct InvalidDriverName(pub String);

/// Checks a driver name against the CSI spec: at most 63 characters,
/// beginning and ending with an alphanumeric character, with dashes,
/// dots and alphanumerics between (kubelet registers it under this name).
pub fn validate_driver_name(name: &str) -> Result<(), InvalidDriverName> {
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    let bytes = name.as_bytes();
    let ok = !name.is_empty()
        && name.len() <= MAX_DRIVER_NAME
        && alnum(bytes.first())
        && alnum(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidDriverName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_follow_the_csi_specs_domain_notation() {
        for good in [
            DEFAULT_DRIVER_NAME,
            "a",
            "csi-1.example.com",
            &"a".repeat(63),
        ] {
            assert!(validate_driver_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-csi.kcred.io",
            "csi.kcred.io.",
            "csi_kcred.io",
            "csi kcred",
            "csi/kcred",
            &"a".repeat(64),
        ] {
            assert!(validate_driver_name(bad).is_err(), "{bad:?}");
        }
    }
}
