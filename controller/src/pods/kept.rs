//! A pod as the view keeps it: the fields of [`PodInfo`] without the
//! namespace and name (the index's keys), names shared through an
//! [`Interner`], lists as boxed slices. About a third of a `PodInfo`'s
//! heap, which is what lets 100,000 watched pods fit in under 1 KiB each.

use std::sync::Arc;

use super::{ContainerIdentity, PodInfo};
use crate::intern::Interner;

/// One container's identity, kept.
#[derive(Debug, PartialEq, Eq)]
struct KeptContainer {
    name: Arc<str>,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
}

/// One pod, kept.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KeptPod {
    pub(super) uid: Box<str>,
    pub(super) node_name: Arc<str>,
    service_account: Arc<str>,
    annotations: Box<[(Arc<str>, Arc<str>)]>,
    supplemental_groups: Box<[u32]>,
    containers: Box<[KeptContainer]>,
    csi_volumes: Option<Box<[Arc<str>]>>,
    fs_group: Option<u32>,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    pub(super) finished: bool,
}

impl KeptPod {
    /// Keeps `pod` (its namespace and name go to the index's keys).
    pub(super) fn keep(pod: PodInfo, names: &mut Interner) -> KeptPod {
        KeptPod {
            uid: pod.uid.into_boxed_str(),
            node_name: names.get(&pod.node_name),
            service_account: names.get(&pod.service_account),
            annotations: pod
                .annotations
                .iter()
                .map(|(k, v)| (names.get(k), names.get(v)))
                .collect(),
            supplemental_groups: pod.supplemental_groups.into_boxed_slice(),
            containers: pod
                .containers
                .iter()
                .map(|c| KeptContainer {
                    name: names.get(&c.name),
                    run_as_user: c.run_as_user,
                    run_as_group: c.run_as_group,
                })
                .collect(),
            csi_volumes: pod
                .csi_volumes
                .map(|v| v.iter().map(|n| names.get(n)).collect()),
            fs_group: pod.fs_group,
            run_as_user: pod.run_as_user,
            run_as_group: pod.run_as_group,
            finished: pod.finished,
        }
    }

    /// The pod as the rest of the controller reads it.
    pub(super) fn info(&self, namespace: &str, name: &str) -> PodInfo {
        PodInfo {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: self.uid.to_string(),
            node_name: self.node_name.to_string(),
            service_account: self.service_account.to_string(),
            annotations: self
                .annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fs_group: self.fs_group,
            finished: self.finished,
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
            supplemental_groups: self.supplemental_groups.to_vec(),
            containers: self
                .containers
                .iter()
                .map(|c| ContainerIdentity {
                    name: c.name.to_string(),
                    run_as_user: c.run_as_user,
                    run_as_group: c.run_as_group,
                })
                .collect(),
            csi_volumes: self
                .csi_volumes
                .as_ref()
                .map(|v| v.iter().map(|n| n.to_string()).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_pod_reads_back_as_it_came() {
        let pod = PodInfo {
            namespace: "web".into(),
            name: "web-0".into(),
            uid: "u-1".into(),
            node_name: "node-a".into(),
            service_account: "web".into(),
            annotations: [("kcred.io/keytabs".to_string(), "HTTP/web@R".to_string())]
                .into_iter()
                .collect(),
            fs_group: Some(3),
            finished: true,
            run_as_user: Some(1),
            run_as_group: Some(2),
            supplemental_groups: vec![7, 8],
            containers: vec![ContainerIdentity {
                name: "app".into(),
                run_as_user: Some(10),
                run_as_group: None,
            }],
            csi_volumes: Some(vec!["kcred".into()]),
        };
        let mut names = Interner::default();
        let kept = KeptPod::keep(pod.clone(), &mut names);
        assert_eq!(kept.info("web", "web-0"), pod);
    }
}
