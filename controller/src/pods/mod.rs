//! The controller's own view of the pods in the cluster.
//!
//! The controller never trusts a node's word about a pod: before it issues
//! anything it looks the pod up here and checks its UID, its node and its
//! annotations. The index is fed by a pod source: the static pods file
//! (clusters without API access, demos, tests) or a Kubernetes watch.

pub mod file_source;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use serde::Deserialize;

/// What kcred needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID assigned by the API server; distinguishes pods that reuse a name.
    pub uid: String,
    /// The node the pod is bound to (empty while unscheduled).
    #[serde(default)]
    pub node_name: String,
    /// Service account.
    #[serde(default)]
    pub service_account: String,
    /// Annotations (only `kcred.io/*` matter).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The pod's fsGroup, if set.
    #[serde(default)]
    pub fs_group: Option<u32>,
}

/// Pods by namespace and name.
#[derive(Default)]
pub struct PodIndex {
    pods: RwLock<HashMap<(String, String), PodInfo>>,
}

impl PodIndex {
    /// Looks a pod up by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let map = crate::locks::read(&self.pods);
        map.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Adds or replaces one pod (a watch event).
    pub fn upsert(&self, pod: PodInfo) {
        let mut map = crate::locks::write(&self.pods);
        map.insert((pod.namespace.clone(), pod.name.clone()), pod);
    }

    /// Removes one pod (a watch delete).
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut map = crate::locks::write(&self.pods);
        map.remove(&(namespace.to_string(), name.to_string()));
    }

    /// Replaces every pod at once (a full list).
    pub fn replace_all(&self, pods: impl IntoIterator<Item = PodInfo>) {
        let fresh: HashMap<_, _> = pods
            .into_iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p))
            .collect();
        let mut map = crate::locks::write(&self.pods);
        *map = fresh;
    }

    /// Whether any known pod is bound to `node` (so `node` is a node name).
    pub fn any_on_node(&self, node: &str) -> bool {
        crate::locks::read(&self.pods)
            .values()
            .any(|p| p.node_name == node)
    }

    /// Number of pods known.
    pub fn len(&self) -> usize {
        crate::locks::read(&self.pods).len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
