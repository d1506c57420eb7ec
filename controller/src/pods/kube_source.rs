//! Pods from the Kubernetes API: each watched `Pod` is cut down to a
//! [`PodInfo`] (identity, node, service account, `kcred.io/*`
//! annotations, whether it finished, and the uids and gids it runs as)
//! before it is kept (and kept compact, names shared): under half a
//! kilobyte a pod instead of the several to tens of kilobytes a full
//! object with its managed fields takes (`tests/pod_view_memory.rs`
//! measures it).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, SecurityContext};

use super::{ContainerIdentity, PodIndex, PodInfo, PodList};
use crate::kubernetes::watch::View;

/// Annotations kcred reads; every other annotation is dropped.
const ANNOTATION_PREFIX: &str = "kcred.io/";

/// The pod index as a watch target.
pub struct PodView(pub Arc<PodIndex>);

/// A Kubernetes id (validated by the API server to 0..=2^31-1).
fn id(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

fn container(name: &str, sc: Option<&SecurityContext>) -> ContainerIdentity {
    ContainerIdentity {
        name: name.to_string(),
        run_as_user: id(sc.and_then(|s| s.run_as_user)),
        run_as_group: id(sc.and_then(|s| s.run_as_group)),
    }
}

/// What kcred keeps of a pod; `None` for a pod without name, namespace or
/// UID (the API server never sends one).
pub fn pod_info(pod: Pod) -> Option<PodInfo> {
    let meta = pod.metadata;
    let (namespace, name, uid) = (meta.namespace?, meta.name?, meta.uid?);
    let annotations = meta
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    let finished = pod
        .status
        .and_then(|s| s.phase)
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    let spec = pod.spec.unwrap_or_default();
    let psc = spec.security_context.unwrap_or_default();
    let mut containers: Vec<ContainerIdentity> = spec
        .containers
        .iter()
        .map(|c| container(&c.name, c.security_context.as_ref()))
        .collect();
    containers.extend(
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| container(&c.name, c.security_context.as_ref())),
    );
    containers.extend(
        spec.ephemeral_containers
            .iter()
            .flatten()
            .map(|c| container(&c.name, c.security_context.as_ref())),
    );
    let csi_volumes = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.csi.is_some())
        .map(|v| v.name.clone())
        .collect();
    Some(PodInfo {
        namespace,
        name,
        uid,
        node_name: spec.node_name.unwrap_or_default(),
        service_account: spec.service_account_name.unwrap_or_default(),
        annotations,
        fs_group: id(psc.fs_group),
        finished,
        run_as_user: id(psc.run_as_user),
        run_as_group: id(psc.run_as_group),
        supplemental_groups: psc
            .supplemental_groups
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| id(Some(g)))
            .collect(),
        containers,
        csi_volumes: Some(csi_volumes),
    })
}

impl View for PodView {
    type Object = Pod;
    type Entry = PodInfo;
    type List = PodList;
    const RESOURCE: &'static str = "pods";

    fn entry(object: Pod) -> Option<PodInfo> {
        pod_info(object)
    }

    fn replace_all(&self, list: PodList) {
        self.0.replace_all(list);
    }

    fn upsert(&self, entry: PodInfo) {
        self.0.upsert(entry);
    }

    fn remove(&self, entry: PodInfo) {
        self.0.remove_pod(&entry);
    }

    fn set_stale(&self, stale: bool) {
        self.0.set_stale(stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::GoneCause;
    use k8s_openapi::api::core::v1::{
        CSIVolumeSource, Container, EphemeralContainer, PodSecurityContext, PodSpec, PodStatus,
        Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn sc(user: i64) -> Option<SecurityContext> {
        Some(SecurityContext {
            run_as_user: Some(user),
            ..Default::default()
        })
    }

    #[test]
    fn a_pod_keeps_only_what_kcred_reads() {
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("web".into()),
                name: Some("web-0".into()),
                uid: Some("u1".into()),
                annotations: Some(
                    [
                        ("kcred.io/keytabs", "HTTP/web.example.com"),
                        ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("web-sa".into()),
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1500),
                    run_as_group: Some(1500),
                    fs_group: Some(3000),
                    supplemental_groups: Some(vec![4000, 4001]),
                    ..Default::default()
                }),
                containers: vec![Container {
                    name: "app".into(),
                    security_context: sc(1501),
                    ..Default::default()
                }],
                init_containers: Some(vec![Container {
                    name: "init".into(),
                    ..Default::default()
                }]),
                ephemeral_containers: Some(vec![EphemeralContainer {
                    name: "debug".into(),
                    security_context: sc(0),
                    ..Default::default()
                }]),
                volumes: Some(vec![
                    Volume {
                        name: "kcred".into(),
                        csi: Some(CSIVolumeSource {
                            driver: "csi.kcred.io".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "scratch".into(),
                        empty_dir: Some(Default::default()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        };
        let info = pod_info(pod).unwrap();
        assert_eq!(info.annotations.len(), 1, "only kcred.io/* annotations");
        assert_eq!(info.node_name, "node-a");
        assert_eq!(info.service_account, "web-sa");
        assert_eq!(
            (info.run_as_user, info.run_as_group),
            (Some(1500), Some(1500))
        );
        assert_eq!(info.fs_group, Some(3000));
        assert_eq!(info.supplemental_groups, [4000, 4001]);
        let users: Vec<_> = info
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.run_as_user))
            .collect();
        assert_eq!(
            users,
            [("app", Some(1501)), ("init", None), ("debug", Some(0))]
        );
        assert!(!info.finished);
        assert_eq!(info.csi_volumes, Some(vec!["kcred".to_string()]));
    }

    #[test]
    fn succeeded_and_failed_pods_are_finished() {
        for (phase, finished) in [("Succeeded", true), ("Failed", true), ("Pending", false)] {
            let pod = Pod {
                metadata: ObjectMeta {
                    namespace: Some("web".into()),
                    name: Some("job".into()),
                    uid: Some("u".into()),
                    ..Default::default()
                },
                spec: None,
                status: Some(PodStatus {
                    phase: Some(phase.into()),
                    ..Default::default()
                }),
            };
            assert_eq!(pod_info(pod).unwrap().finished, finished, "{phase}");
        }
    }

    #[test]
    fn the_index_announces_deleted_replaced_and_relisted_away_pods() {
        let index = PodIndex::default();
        let pod = |name: &str, uid: &str| PodInfo {
            namespace: "web".into(),
            name: name.into(),
            uid: uid.into(),
            ..Default::default()
        };
        index.replace_all(
            [pod("a", "1"), pod("b", "2"), pod("c", "3")]
                .into_iter()
                .collect(),
        );
        let mut gone = index.subscribe_gone();
        index.upsert(pod("a", "1b")); // rescheduled under a new UID
        index.remove_pod(&pod("b", "old")); // a stale delete: not this pod
        index.remove_pod(&pod("b", "2"));
        index.replace_all([pod("a", "1b")].into_iter().collect()); // c vanished in a gap
        let uids: Vec<_> = std::iter::from_fn(|| gone.try_recv().ok())
            .map(|g| g.uid)
            .collect();
        assert_eq!(uids, ["1", "2", "3"]);
        assert!(index.get("web", "b").is_none());
    }

    #[test]
    fn the_index_announces_a_pod_once_when_it_finishes() {
        let index = PodIndex::default();
        let pod = |finished| PodInfo {
            namespace: "batch".into(),
            name: "job-0".into(),
            uid: "u1".into(),
            node_name: "node-a".into(),
            finished,
            ..Default::default()
        };
        index.upsert(pod(false));
        let mut gone = index.subscribe_gone();
        index.upsert(pod(true));
        index.upsert(pod(true)); // a later status update
        index.replace_all([pod(true)].into_iter().collect()); // a re-list
        let g = gone.try_recv().expect("announced");
        assert_eq!((g.cause, g.node.as_str()), (GoneCause::Finished, "node-a"));
        assert!(gone.try_recv().is_err(), "announced once");
        index.remove("batch", "job-0");
        assert_eq!(gone.try_recv().unwrap().cause, GoneCause::Deleted);
    }
}
