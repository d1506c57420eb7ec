//! Generated-input tests of the CSI request validation: whatever kubelet
//! (or anything else that reaches the socket) sends, validation answers
//! with `InvalidRequest` or a request that keeps every promise: a target
//! strictly under the kubelet's pods directory in kubelet's exact shape,
//! and a volume id kubelet itself would derive. `PROPTEST_CASES` sets the
//! cases (256 by default; `scripts/fuzz.sh` runs 100,000).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::request::*;

/// Path-like text: kubelet's shape, with components swapped for hostile
/// ones, or arbitrary.
fn target_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("pods".to_string()),
        Just("volumes".to_string()),
        Just("kubernetes.io~csi".to_string()),
        Just("mount".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        "\\PC{0,16}",
    ];
    prop_oneof![
        prop::collection::vec(part, 0..9).prop_map(|v| v.join("/")),
        "\\PC{0,256}",
    ]
}

/// One kubelet directory for every case (validation never writes).
fn kubelet_root() -> &'static tempfile::TempDir {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("pods")).expect("mkdir");
        root
    })
}

proptest! {
    #[test]
    fn fuzz_target_path(rest in target_text(), absolute in any::<bool>()) {
        let root = kubelet_root();
        let target = if absolute {
            format!("{}/{rest}", root.path().display())
        } else {
            rest
        };
        if let Ok(t) = validate_target_path(root.path(), &target) {
            let rel = t.path.strip_prefix(root.path().join("pods"));
            prop_assert!(rel.is_ok(), "{} escaped", t.path.display());
            let parts: Vec<_> = rel.map(|r| r.components().count()).into_iter().collect();
            prop_assert_eq!(parts, vec![5usize]);
            prop_assert!(!t.pod_uid.is_empty() && !t.volume_name.is_empty());
            prop_assert!(t.path.ends_with("mount"));
            // As text too: a trailing '/' would follow a final symlink.
            prop_assert!(target.ends_with("/mount"), "{target:?} accepted");
        }
    }

    #[test]
    fn fuzz_volume_context(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    Just("csi.storage.k8s.io/pod.name".to_string()),
                    Just("csi.storage.k8s.io/pod.namespace".to_string()),
                    Just("csi.storage.k8s.io/pod.uid".to_string()),
                    Just("csi.storage.k8s.io/ephemeral".to_string()),
                    Just("csi.storage.k8s.io/serviceAccount.name".to_string()),
                    "\\PC{0,40}",
                ],
                prop_oneof![Just("true".to_string()), "\\PC{0,80}"],
            ),
            0..8,
        ),
        volume_id in "\\PC{0,200}",
    ) {
        let ctx: HashMap<String, String> = pairs.into_iter().collect();
        if let Ok(pod) = pod_from_context(&ctx) {
            prop_assert!(!pod.name.is_empty() && !pod.namespace.is_empty() && !pod.uid.is_empty());
            prop_assert_eq!(ctx.get("csi.storage.k8s.io/ephemeral").map(String::as_str), Some("true"));
            let target = KubeletTarget {
                path: Path::new("/var/lib/kubelet/pods").join(&pod.uid),
                pod_uid: pod.uid.clone(),
                volume_name: "kcred".into(),
            };
            if check_kubelet_derivation(&target, &volume_id, Some(&pod)).is_ok() {
                prop_assert_eq!(volume_id.clone(), inline_volume_id(&pod.uid, "kcred"));
            }
        }
        if check_volume_id(&volume_id).is_ok() {
            prop_assert!(!volume_id.is_empty() && volume_id.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}
