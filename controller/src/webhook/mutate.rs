//! The mutation: what a pod asking for kcred credentials needs in its spec
//! to receive them.
//!
//! For a pod with a `kcred.io/` credential annotation and no volume of the
//! kcred driver, [`patch`] adds
//!
//! - the inline CSI volume `kcred` (`csi.driver` the kcred driver,
//!   `readOnly: true`);
//! - a read-only mount of it at `kcred.io/mount-path` (default
//!   `/var/run/kcred`) in every container and init container;
//! - in each of them, unless the container sets the variable itself:
//!   `KRB5_CONFIG` (`krb5.conf`) for keytabs or tickets, `KRB5_KTNAME`
//!   (`krb5.keytab`) for keytabs, `KRB5CCNAME` (`FILE:…/krb5cc`) for
//!   tickets.
//!
//! A pod that already has a kcred volume (declared by hand, or mutated
//! before) gets no patch: applying the mutation twice changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::review::Verdict;
use crate::annotations::{self, CERTS, KEYS, KEYTABS, TICKETS};

/// Name of the volume the webhook adds.
pub const VOLUME_NAME: &str = "kcred";

/// The environment a container needs for the kinds the pod asks for.
pub fn environment(
    annotations: &BTreeMap<String, String>,
    mount: &str,
) -> Vec<(&'static str, String)> {
    let dir = mount.trim_end_matches('/');
    let keytabs = annotations.contains_key(KEYTABS);
    let tickets = annotations.contains_key(TICKETS);
    let mut env = vec![];
    if keytabs || tickets {
        env.push(("KRB5_CONFIG", format!("{dir}/krb5.conf")));
    }
    if keytabs {
        env.push(("KRB5_KTNAME", format!("{dir}/krb5.keytab")));
    }
    if tickets {
        env.push(("KRB5CCNAME", format!("FILE:{dir}/krb5cc")));
    }
    env
}

/// Appends `item` to the list at `path`, creating the list if the pod has
/// none.
fn append(ops: &mut Vec<Value>, path: String, exists: bool, item: Value) {
    if exists {
        ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": item}));
    } else {
        ops.push(json!({"op": "add", "path": path, "value": [item]}));
    }
}

/// The operations that mount the volume into one container.
fn container_ops(
    ops: &mut Vec<Value>,
    at: String,
    c: &Container,
    mount: &str,
    env: &[(&'static str, String)],
) -> Result<(), Verdict> {
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    let same = |p: &str| p.trim_end_matches('/') == mount.trim_end_matches('/');
    if let Some(m) = mounts.iter().find(|m| same(&m.mount_path)) {
        return Err(Verdict::invalid(format!(
            "container {:?} already mounts volume {:?} at {mount}, where kcred mounts its volume: set {} to another path",
            c.name,
            m.name,
            annotations::MOUNT_PATH
        )));
    }
    append(
        ops,
        format!("{at}/volumeMounts"),
        c.volume_mounts.is_some(),
        json!({"name": VOLUME_NAME, "mountPath": mount, "readOnly": true}),
    );
    let mut has_env = c.env.is_some();
    for (name, value) in env {
        // A variable the container sets itself is its own choice.
        if c.env.iter().flatten().any(|e| e.name == *name) {
            continue;
        }
        append(
            ops,
            format!("{at}/env"),
            has_env,
            json!({"name": name, "value": value}),
        );
        has_env = true;
    }
    Ok(())
}

/// The mutation of `pod` for the kcred CSI driver `driver`.
pub fn patch(pod: &Pod, driver: &str) -> Verdict {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if ![KEYTABS, TICKETS, CERTS, KEYS]
        .iter()
        .any(|k| annotations.contains_key(*k))
    {
        return Verdict::Allow;
    }
    let Some(spec) = &pod.spec else {
        return Verdict::Allow;
    };
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    if volumes
        .iter()
        .any(|v| v.csi.as_ref().is_some_and(|c| c.driver == driver))
    {
        return Verdict::Allow;
    }
    if volumes.iter().any(|v| v.name == VOLUME_NAME) {
        return Verdict::invalid(format!(
            "the pod has a volume named {VOLUME_NAME:?} that is not a {driver} volume: rename it, or declare the kcred volume yourself"
        ));
    }
    let mount = match annotations::mount_path(&annotations) {
        Ok(m) => m,
        Err(e) => return Verdict::invalid(e.to_string()),
    };
    let env = environment(&annotations, mount);
    let mut ops = vec![];
    append(
        &mut ops,
        "/spec/volumes".into(),
        spec.volumes.is_some(),
        json!({"name": VOLUME_NAME, "csi": {"driver": driver, "readOnly": true}}),
    );
    let lists = [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    for (field, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            if let Err(refusal) =
                container_ops(&mut ops, format!("/spec/{field}/{i}"), c, mount, &env)
            {
                return refusal;
            }
        }
    }
    Verdict::Patch(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRIVER: &str = "csi.kcred.io";

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn web_pod(annotations: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "web-0", "namespace": "web", "annotations": annotations},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [
                    {"name": "app", "image": "busybox",
                     "env": [{"name": "KRB5_CONFIG", "value": "/etc/own-krb5.conf"}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "sidecar", "image": "busybox"},
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        }))
    }

    /// Applies `ops` the way the API server does (RFC 6902 `add`).
    fn apply(pod: &Pod, ops: &[Value]) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        for op in ops {
            assert_eq!(op["op"], "add");
            let path = op["path"].as_str().unwrap();
            let (parent, last) = path.rsplit_once('/').unwrap();
            let target = doc.pointer_mut(parent).unwrap();
            match (target, last) {
                (Value::Array(a), "-") => a.push(op["value"].clone()),
                (Value::Object(m), key) => {
                    assert!(!m.contains_key(key), "add over {path}");
                    m.insert(key.into(), op["value"].clone());
                }
                _ => panic!("bad path {path}"),
            }
        }
        serde_json::from_value(doc).unwrap()
    }

    fn patched(p: &Pod) -> Pod {
        match patch(p, DRIVER) {
            Verdict::Patch(ops) => apply(p, &ops),
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_keytab_pod_gets_the_volume_a_read_only_mount_everywhere_and_its_env() {
        let p = patched(&web_pod(
            json!({"kcred.io/keytabs": "HTTP/web.example.com"}),
        ));
        let spec = p.spec.unwrap();
        let vols = spec.volumes.unwrap();
        assert_eq!(vols.len(), 2);
        let csi = vols[1].csi.as_ref().unwrap();
        assert_eq!(
            (vols[1].name.as_str(), csi.driver.as_str()),
            ("kcred", DRIVER)
        );
        assert_eq!(csi.read_only, Some(true));
        let all: Vec<&Container> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .collect();
        assert_eq!(all.len(), 3);
        for c in &all {
            let m = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == "kcred")
                .unwrap_or_else(|| panic!("{} has no kcred mount", c.name));
            assert_eq!(m.mount_path, "/var/run/kcred");
            assert_eq!(m.read_only, Some(true));
        }
        // The app's own KRB5_CONFIG stays; what it did not set is added.
        assert_eq!(
            env_of(all[0]),
            [
                ("KRB5_CONFIG".into(), "/etc/own-krb5.conf".into()),
                ("KRB5_KTNAME".into(), "/var/run/kcred/krb5.keytab".into()),
            ]
        );
        assert_eq!(
            env_of(all[1]),
            [
                ("KRB5_CONFIG".into(), "/var/run/kcred/krb5.conf".into()),
                ("KRB5_KTNAME".into(), "/var/run/kcred/krb5.keytab".into()),
            ]
        );
    }

    #[test]
    fn tickets_get_a_ccache_and_certs_alone_get_no_kerberos_env() {
        let p = patched(&web_pod(json!({
            "kcred.io/tickets": "websvc",
            "kcred.io/mount-path": "/etc/kcred/",
        })));
        let spec = p.spec.unwrap();
        let sidecar = &spec.containers[1];
        assert_eq!(
            env_of(sidecar),
            [
                ("KRB5_CONFIG".into(), "/etc/kcred/krb5.conf".into()),
                ("KRB5CCNAME".into(), "FILE:/etc/kcred/krb5cc".into()),
            ]
        );
        assert_eq!(
            sidecar.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/etc/kcred/"
        );

        let p = patched(&web_pod(json!({"kcred.io/certs": "web.example.com"})));
        assert!(env_of(&p.spec.unwrap().containers[1]).is_empty());
    }

    #[test]
    fn the_mutation_applied_twice_changes_nothing() {
        let once = patched(&web_pod(json!({"kcred.io/keys": "orders-db"})));
        assert_eq!(patch(&once, DRIVER), Verdict::Allow);
    }

    #[test]
    fn pods_without_kcred_annotations_are_left_alone() {
        assert_eq!(
            patch(&web_pod(json!({"other.io/x": "y"})), DRIVER),
            Verdict::Allow
        );
        assert_eq!(
            patch(&web_pod(json!({"kcred.io/mount-path": "/x"})), DRIVER),
            Verdict::Allow
        );
    }

    #[test]
    fn a_pod_with_empty_lists_gets_them_created() {
        let p = pod(json!({
            "metadata": {"annotations": {"kcred.io/keytabs": "HTTP/web.example.com"}},
            "spec": {"containers": [{"name": "app"}]},
        }));
        let p = patched(&p);
        let spec = p.spec.unwrap();
        assert_eq!(spec.volumes.unwrap().len(), 1);
        assert_eq!(spec.containers[0].volume_mounts.as_ref().unwrap().len(), 1);
        assert_eq!(spec.containers[0].env.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn conflicts_are_refused_with_what_to_change() {
        let mut p = web_pod(json!({
            "kcred.io/keytabs": "HTTP/web.example.com",
            "kcred.io/mount-path": "/data",
        }));
        let Verdict::Deny { code, message } = patch(&p, DRIVER) else {
            panic!("mount path taken");
        };
        assert_eq!(code, 400);
        assert!(
            message.contains("\"app\"") && message.contains("kcred.io/mount-path"),
            "{message}"
        );

        p.metadata.annotations = Some(
            [(
                "kcred.io/keytabs".to_string(),
                "HTTP/web.example.com".to_string(),
            )]
            .into(),
        );
        p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0].name = "kcred".into();
        let Verdict::Deny { message, .. } = patch(&p, DRIVER) else {
            panic!("volume name taken");
        };
        assert!(message.contains("volume named \"kcred\""), "{message}");

        p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0].name = "data".into();
        p.metadata.annotations = Some(
            [
                ("kcred.io/keytabs".to_string(), "x".to_string()),
                ("kcred.io/mount-path".to_string(), "rel".to_string()),
            ]
            .into(),
        );
        let Verdict::Deny { message, .. } = patch(&p, DRIVER) else {
            panic!("relative mount path");
        };
        assert!(message.contains("absolute"), "{message}");
    }
}
