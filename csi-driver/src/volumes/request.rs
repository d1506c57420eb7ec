//! Validating what kubelet sends before anything touches the node.
//!
//! Every rule here answers `InvalidArgument` with a message naming the
//! field, and runs before any directory is created or mounted.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use kcred_proto::kcred::v1::PodRef;

/// `volume_context` keys kubelet sets with `podInfoOnMount: true`.
pub mod context_keys {
    /// Pod name.
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    /// Pod namespace.
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    /// Pod UID.
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    /// Service account name.
    pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
    /// "true" for ephemeral inline volumes.
    pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
}

/// A request that failed validation; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// Checks that `target` is an absolute path strictly below
/// `<kubelet_dir>/pods/`, with no `.` or `..` components, and that its
/// existing parent does not escape that tree through a symlink.
pub fn validate_target_path(kubelet_dir: &Path, target: &str) -> Result<PathBuf, InvalidRequest> {
    if target.is_empty() {
        return Err(InvalidRequest("target_path is required".into()));
    }
    let path = PathBuf::from(target);
    if !path.is_absolute() {
        return Err(InvalidRequest(format!(
            "target_path {target:?} is not absolute"
        )));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        || target.contains("/./")
        || target.ends_with("/.")
    {
        return Err(InvalidRequest(format!(
            "target_path {target:?} contains '.' or '..' components"
        )));
    }
    let pods_dir = kubelet_dir.join("pods");
    if !path.starts_with(&pods_dir) || path == pods_dir {
        return Err(InvalidRequest(format!(
            "target_path {target:?} is outside the kubelet pods directory {}",
            pods_dir.display()
        )));
    }
    // Exactly kubelet's shape for a CSI volume:
    // <pods>/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount.
    let rest: Vec<_> = path
        .strip_prefix(&pods_dir)
        .map(|r| r.components().collect())
        .unwrap_or_default();
    let shaped = rest.len() == 5
        && rest[1].as_os_str() == "volumes"
        && rest[2].as_os_str() == "kubernetes.io~csi"
        && rest[4].as_os_str() == "mount";
    if !shaped {
        return Err(InvalidRequest(format!(
            "target_path {target:?} is not <kubelet>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount"
        )));
    }
    // Resolve symlinks in what already exists: a link inside the pods tree
    // must not lead the mount elsewhere.
    // Resolve symlinks in what already exists (the deepest existing
    // ancestor): a link inside the pods tree must not lead the mount
    // elsewhere.
    let real_pods = pods_dir.canonicalize().map_err(|e| {
        InvalidRequest(format!(
            "kubelet pods directory {}: {e}",
            pods_dir.display()
        ))
    })?;
    let mut existing = path.parent();
    while let Some(p) = existing {
        if p.symlink_metadata().is_ok() {
            break;
        }
        existing = p.parent();
    }
    if let Some(p) = existing {
        let real = p
            .canonicalize()
            .map_err(|e| InvalidRequest(format!("target_path {target:?}: {e}")))?;
        if !real.starts_with(&real_pods) {
            return Err(InvalidRequest(format!(
                "target_path {target:?} resolves outside the kubelet pods directory"
            )));
        }
    }
    Ok(path)
}

/// Reads the pod's identity from `volume_context`.
pub fn pod_from_context(ctx: &HashMap<String, String>) -> Result<PodRef, InvalidRequest> {
    use context_keys::*;
    let get = |key: &str| -> Result<String, InvalidRequest> {
        match ctx.get(key) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(InvalidRequest(format!(
                "volume_context lacks {key}: set podInfoOnMount: true on the CSIDriver object"
            ))),
        }
    };
    if ctx.get(EPHEMERAL).map(String::as_str) != Some("true") {
        return Err(InvalidRequest(format!(
            "volume_context {EPHEMERAL} is not \"true\": kcred serves only ephemeral inline volumes"
        )));
    }
    Ok(PodRef {
        namespace: get(POD_NAMESPACE)?,
        name: get(POD_NAME)?,
        uid: get(POD_UID)?,
        service_account: ctx.get(SERVICE_ACCOUNT).cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_path_must_lie_under_kubelet_pods() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("pods")).expect("mkdir");
        let k = root.path();
        let at = |rest: &str| format!("{}/{rest}", k.display());
        assert!(validate_target_path(k, &at("pods/u/volumes/kubernetes.io~csi/v/mount")).is_ok());
        for bad in [
            String::new(),
            "relative/mount".into(),
            "/etc/mount".into(),
            at("pods"),
            at("pods/../../../etc"),
            at("pods/u/./mount"),
            at("pods/u/mount"),
            at("pods/u/volumes/kubernetes.io~secret/v/mount"),
            at("pods/u/volumes/kubernetes.io~csi/v/mount/deeper"),
            at("plugins/x/mount"),
            format!("{}X/pods/u/volumes/kubernetes.io~csi/v/mount", k.display()),
        ] {
            let err = validate_target_path(k, &bad).expect_err(&bad);
            assert!(!err.0.is_empty());
        }
    }

    #[test]
    fn symlinked_parent_escaping_the_tree_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let pods = root.path().join("pods");
        std::fs::create_dir_all(&pods).expect("mkdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), pods.join("evil")).expect("symlink");
        let target = pods.join("evil/volumes/kubernetes.io~csi/v/mount");
        let err = validate_target_path(root.path(), target.to_str().expect("utf8")).unwrap_err();
        assert!(err.0.contains("resolves outside"), "{}", err.0);
    }

    #[test]
    fn pod_info_is_required_and_names_the_missing_key() {
        let mut ctx: HashMap<String, String> = [
            (context_keys::POD_NAME, "web-0"),
            (context_keys::POD_NAMESPACE, "web"),
            (context_keys::POD_UID, "1234"),
            (context_keys::EPHEMERAL, "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pod_from_context(&ctx).expect("valid").name, "web-0");
        ctx.remove(context_keys::POD_UID);
        assert!(
            pod_from_context(&ctx)
                .unwrap_err()
                .0
                .contains(context_keys::POD_UID)
        );
        ctx.insert(context_keys::POD_UID.into(), "1234".into());
        ctx.insert(context_keys::EPHEMERAL.into(), "false".into());
        assert!(pod_from_context(&ctx).unwrap_err().0.contains("ephemeral"));
    }
}
