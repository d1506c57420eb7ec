//! Validating what kubelet sends before anything touches the node.
//!
//! Every rule here answers `InvalidArgument` with a message naming the
//! field, and runs before any directory is created or mounted.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use kcred_proto::csi::v1::VolumeCapability;
use kcred_proto::csi::v1::volume_capability::AccessType;
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

/// Longest volume id kcred accepts (kubelet's are 68 bytes).
const MAX_VOLUME_ID: usize = 128;

/// A target path in kubelet's shape, and what kubelet put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletTarget {
    /// The path.
    pub path: PathBuf,
    /// The pod UID component.
    pub pod_uid: String,
    /// The volume's name in the pod spec.
    pub volume_name: String,
}

/// Checks that `id` is a plausible volume id (present, short, printable).
pub fn check_volume_id(id: &str) -> Result<(), InvalidRequest> {
    if id.is_empty() {
        return Err(InvalidRequest("volume_id is required".into()));
    }
    if id.len() > MAX_VOLUME_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidRequest(format!(
            "volume_id must be 1 to {MAX_VOLUME_ID} printable ASCII characters"
        )));
    }
    Ok(())
}

pub use kcred_proto::inline_volume_id;

/// Checks that the volume id and the pod are the ones kubelet derives for
/// this target: a request cannot name one pod's volume at another pod's
/// target, or another volume at a pod's target.
pub fn check_kubelet_derivation(
    target: &KubeletTarget,
    volume_id: &str,
    pod: Option<&PodRef>,
) -> Result<(), InvalidRequest> {
    if let Some(pod) = pod
        && pod.uid != target.pod_uid
    {
        return Err(InvalidRequest(format!(
            "target_path belongs to pod UID {}, but volume_context names pod UID {}",
            target.pod_uid, pod.uid
        )));
    }
    let expected = inline_volume_id(&target.pod_uid, &target.volume_name);
    if volume_id != expected {
        return Err(InvalidRequest(format!(
            "volume_id {volume_id:?} is not kubelet's id for volume {:?} of pod UID {} ({expected})",
            target.volume_name, target.pod_uid
        )));
    }
    Ok(())
}

/// Checks the volume capability: required, a mount (not a block device),
/// with an access mode.
pub fn check_capability(cap: Option<&VolumeCapability>) -> Result<(), InvalidRequest> {
    let cap = cap.ok_or_else(|| InvalidRequest("volume_capability is required".into()))?;
    match &cap.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Err(InvalidRequest(
                "volume_capability: block access is not supported; use a mount volume".into(),
            ));
        }
        None => {
            return Err(InvalidRequest(
                "volume_capability.access_type is required".into(),
            ));
        }
    }
    if cap.access_mode.is_none() {
        return Err(InvalidRequest(
            "volume_capability.access_mode is required".into(),
        ));
    }
    Ok(())
}

/// Checks that `target` is an absolute path strictly below
/// `<kubelet_dir>/pods/`, with no `.` or `..` components, in kubelet's
/// exact shape, and that none of its existing directories below the pods
/// directory is a symlink.
pub fn validate_target_path(
    kubelet_dir: &Path,
    target: &str,
) -> Result<KubeletTarget, InvalidRequest> {
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
    // Kubelet never sends one, and with it the kernel follows a final
    // symlink wherever the path is used, past every no-follow check.
    if target.ends_with('/') || target.contains("//") {
        return Err(InvalidRequest(format!(
            "target_path {target:?} has an empty component or a trailing '/'"
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
    let names = (
        rest.first().map(|c| c.as_os_str().to_str()),
        rest.get(3).map(|c| c.as_os_str().to_str()),
    );
    let (Some(Some(pod_uid)), Some(Some(volume_name)), true) = (names.0, names.1, shaped) else {
        return Err(InvalidRequest(format!(
            "target_path {target:?} is not <kubelet>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount"
        )));
    };
    let (pod_uid, volume_name) = (pod_uid.to_string(), volume_name.to_string());
    // Kubelet makes plain directories below its pods directory: a symlink
    // there could lead the mount elsewhere, so none is followed. (The pods
    // directory itself may be a link, as `/var/lib/kubelet` often is.)
    // One `lstat` for each of the four that may exist already, where
    // resolving both paths cost a `readlink` for every component of each.
    if let Err(e) = pods_dir.metadata() {
        return Err(InvalidRequest(format!(
            "kubelet pods directory {}: {e}",
            pods_dir.display()
        )));
    }
    let mut at = pods_dir;
    for component in &rest[..4] {
        at.push(component);
        match at.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(InvalidRequest(format!(
                    "target_path {target:?} passes through a symlink at {}",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                return Err(InvalidRequest(format!(
                    "target_path {target:?}: {}: {e}",
                    at.display()
                )));
            }
        }
    }
    Ok(KubeletTarget {
        path,
        pod_uid,
        volume_name,
    })
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
        assert!(check_volume_id("").is_err());
        assert!(check_volume_id(&"x".repeat(129)).is_err());
        assert!(check_volume_id("csi-abc").is_ok());
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
            at("pods/u/volumes/kubernetes.io~csi/v/mount/"),
            at("pods/u/volumes//kubernetes.io~csi/v/mount"),
            at("plugins/x/mount"),
            format!("{}X/pods/u/volumes/kubernetes.io~csi/v/mount", k.display()),
        ] {
            let err = validate_target_path(k, &bad).expect_err(&bad);
            assert!(!err.0.is_empty());
        }
        // A kubelet directory without pods (a wrong --kubelet-dir).
        let empty = tempfile::tempdir().expect("tempdir");
        let at = format!(
            "{}/pods/u/volumes/kubernetes.io~csi/v/mount",
            empty.path().display()
        );
        let err = validate_target_path(empty.path(), &at).expect_err("no pods directory");
        assert!(err.0.starts_with("kubelet pods directory"), "{}", err.0);
    }

    #[test]
    fn symlinks_below_the_pods_directory_are_refused_and_above_it_followed() {
        let root = tempfile::tempdir().expect("tempdir");
        let pods = root.path().join("pods");
        std::fs::create_dir_all(pods.join("u/volumes/kubernetes.io~csi")).expect("mkdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), pods.join("evil")).expect("symlink");
        std::os::unix::fs::symlink(pods.join("u"), pods.join("inside")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), pods.join("u/volumes/kubernetes.io~csi/v"))
            .expect("symlink");
        for (rest, link) in [
            ("evil/volumes/kubernetes.io~csi/v/mount", "evil"),
            // Even one that stays inside the tree: kubelet makes none.
            ("inside/volumes/kubernetes.io~csi/w/mount", "inside"),
            ("u/volumes/kubernetes.io~csi/v/mount", "kubernetes.io~csi/v"),
        ] {
            let target = pods.join(rest);
            let err =
                validate_target_path(root.path(), target.to_str().expect("utf8")).unwrap_err();
            assert!(
                err.0.contains("passes through a symlink") && err.0.ends_with(link),
                "{rest}: {}",
                err.0
            );
        }
        // The kubelet directory itself may be a link.
        let linked = tempfile::tempdir().expect("tempdir");
        let kubelet = linked.path().join("kubelet");
        std::os::unix::fs::symlink(root.path(), &kubelet).expect("symlink");
        let target = kubelet.join("pods/u/volumes/kubernetes.io~csi/x/mount");
        let ok = validate_target_path(&kubelet, target.to_str().expect("utf8")).expect("valid");
        assert_eq!(ok.volume_name, "x");
    }

    #[test]
    fn the_volume_id_and_pod_must_be_what_kubelet_derives_from_the_target() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("pods")).expect("mkdir");
        let path = format!(
            "{}/pods/uid-1/volumes/kubernetes.io~csi/creds/mount",
            root.path().display()
        );
        let target = validate_target_path(root.path(), &path).expect("valid");
        assert_eq!(
            (target.pod_uid.as_str(), target.volume_name.as_str()),
            ("uid-1", "creds")
        );
        // kubelet's derivation (checked against kubelet's in kcred_proto).
        let id = inline_volume_id("uid-1", "creds");
        let pod = |uid: &str| PodRef {
            namespace: "web".into(),
            name: "web-0".into(),
            uid: uid.into(),
            service_account: "default".into(),
        };
        assert!(check_kubelet_derivation(&target, &id, Some(&pod("uid-1"))).is_ok());
        assert!(check_kubelet_derivation(&target, &id, None).is_ok());
        let err = check_kubelet_derivation(&target, &id, Some(&pod("uid-2"))).unwrap_err();
        assert!(err.0.contains("pod UID"), "{}", err.0);
        let other = inline_volume_id("uid-2", "creds");
        let err = check_kubelet_derivation(&target, &other, Some(&pod("uid-1"))).unwrap_err();
        assert!(err.0.contains("volume_id"), "{}", err.0);
    }

    #[test]
    fn a_capability_needs_a_mount_and_an_access_mode() {
        use kcred_proto::csi::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};
        let mount = || Some(AccessType::Mount(MountVolume::default()));
        let mode = Some(AccessMode { mode: 1 });
        let cap = |access_type, access_mode| VolumeCapability {
            access_type,
            access_mode,
        };
        assert!(check_capability(Some(&cap(mount(), mode))).is_ok());
        let cases = [
            (None, "volume_capability is required"),
            (Some(cap(mount(), None)), "access_mode"),
            (Some(cap(None, mode)), "access_type"),
            (
                Some(cap(Some(AccessType::Block(BlockVolume::default())), mode)),
                "block",
            ),
        ];
        for (c, needle) in cases {
            let err = check_capability(c.as_ref()).unwrap_err();
            assert!(err.0.contains(needle), "{}", err.0);
        }
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
