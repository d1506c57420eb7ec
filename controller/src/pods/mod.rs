//! The controller's own view of the pods in the cluster.
//!
//! The controller never trusts a node's word about a pod: before it issues
//! anything it looks the pod up here and checks its UID, its node and its
//! annotations. The index is fed by a pod source: the static pods file
//! (clusters without API access, demos, tests) or the Kubernetes watch
//! ([`kube_source`]). Either keeps only the fields below, so a large
//! cluster's pods fit in little memory.
//!
//! Whoever must act when a pod stops for good (wipes) subscribes with
//! [`PodIndex::subscribe_gone`]: every removal, whether a watch delete, a
//! re-list that no longer holds the pod, or a new pod under the same name,
//! and every pod first seen finished, is announced once; [`retire`] acts
//! on them.

pub mod file_source;
pub mod kube_source;
pub mod retire;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use tokio::sync::broadcast;

/// The identity one container runs as, from its `securityContext`
/// (unset fields fall back to the pod's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerIdentity {
    /// Container name (init and ephemeral containers included).
    pub name: String,
    /// `runAsUser`, if the container sets it.
    #[serde(default)]
    pub run_as_user: Option<u32>,
    /// `runAsGroup`, if the container sets it.
    #[serde(default)]
    pub run_as_group: Option<u32>,
}

/// What kcred needs to know about a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    /// Phase `Succeeded` or `Failed`: the pod will not run again.
    #[serde(default)]
    pub finished: bool,
    /// Pod-level `runAsUser`, if set.
    #[serde(default)]
    pub run_as_user: Option<u32>,
    /// Pod-level `runAsGroup`, if set.
    #[serde(default)]
    pub run_as_group: Option<u32>,
    /// Pod-level `supplementalGroups`.
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// Every container's own identity: containers, init containers and
    /// ephemeral containers.
    #[serde(default)]
    pub containers: Vec<ContainerIdentity>,
}

/// Why a pod will not run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneCause {
    /// Deleted, replaced by a new pod of the same name (another UID), or
    /// missing from a re-list.
    Deleted,
    /// Its phase became `Succeeded` or `Failed`.
    Finished,
}

/// A pod that will not run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodGone {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The UID of the pod that is gone.
    pub uid: String,
    /// The node it was bound to (empty if it never was).
    pub node: String,
    /// Why.
    pub cause: GoneCause,
}

impl PodGone {
    fn of(p: &PodInfo, cause: GoneCause) -> Self {
        PodGone {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            node: p.node_name.clone(),
            cause,
        }
    }

    fn deleted(p: &PodInfo) -> Self {
        Self::of(p, GoneCause::Deleted)
    }
}

/// `fresh` finished, and `old` (the view's previous entry for its name) was
/// not that pod finished already.
fn newly_finished(old: Option<&PodInfo>, fresh: &PodInfo) -> bool {
    fresh.finished && !old.is_some_and(|o| o.uid == fresh.uid && o.finished)
}

/// Pods by namespace and name.
pub struct PodIndex {
    pods: RwLock<HashMap<(String, String), PodInfo>>,
    gone: broadcast::Sender<PodGone>,
    stale: AtomicBool,
}

impl Default for PodIndex {
    fn default() -> Self {
        PodIndex {
            pods: RwLock::default(),
            gone: broadcast::channel(1024).0,
            stale: AtomicBool::new(false),
        }
    }
}

impl PodIndex {
    /// Announces every pod that leaves the view from now on. A receiver
    /// that falls more than 1,024 removals behind gets `Lagged` and should
    /// reconcile against the whole view.
    pub fn subscribe_gone(&self) -> broadcast::Receiver<PodGone> {
        self.gone.subscribe()
    }

    fn announce(&self, gone: impl IntoIterator<Item = PodGone>) {
        for g in gone {
            // No subscriber is fine.
            let _ = self.gone.send(g);
        }
    }

    /// Whether the view may be behind its source (the API watch is down
    /// or has not listed yet): a pod it does not know may exist.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Marks the view stale or current (the watch's business).
    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, Ordering::Relaxed);
    }

    /// Looks a pod up by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let map = crate::locks::read(&self.pods);
        map.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Whether the pod `namespace/name` with this UID is bound to `node`
    /// and not finished (a heartbeat's question, asked without copying
    /// the pod).
    pub fn runs_on(&self, namespace: &str, name: &str, uid: &str, node: &str) -> bool {
        let map = crate::locks::read(&self.pods);
        map.get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|p| p.uid == uid && p.node_name == node && !p.finished)
    }

    /// Adds or replaces one pod (a watch event).
    pub fn upsert(&self, pod: PodInfo) {
        let mut map = crate::locks::write(&self.pods);
        let old = map.insert((pod.namespace.clone(), pod.name.clone()), pod.clone());
        drop(map);
        let finished =
            newly_finished(old.as_ref(), &pod).then(|| PodGone::of(&pod, GoneCause::Finished));
        let replaced = old
            .filter(|o| o.uid != pod.uid)
            .map(|o| PodGone::deleted(&o));
        self.announce(replaced.into_iter().chain(finished));
    }

    /// Removes one pod (a watch delete).
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut map = crate::locks::write(&self.pods);
        let old = map.remove(&(namespace.to_string(), name.to_string()));
        drop(map);
        self.announce(old.map(|o| PodGone::deleted(&o)));
    }

    /// Removes `pod` if the view still holds that incarnation (same UID),
    /// not a newer pod of the same name.
    pub fn remove_pod(&self, pod: &PodInfo) {
        let mut map = crate::locks::write(&self.pods);
        let key = (pod.namespace.clone(), pod.name.clone());
        let old = match map.get(&key) {
            Some(cur) if cur.uid == pod.uid => map.remove(&key),
            _ => None,
        };
        drop(map);
        self.announce(old.map(|o| PodGone::deleted(&o)));
    }

    /// Replaces every pod at once (a full list); pods missing from it, or
    /// present under another UID, are announced gone, and so are pods it
    /// holds finished that were not finished before.
    pub fn replace_all(&self, pods: impl IntoIterator<Item = PodInfo>) {
        let fresh: HashMap<_, _> = pods
            .into_iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p))
            .collect();
        let mut map = crate::locks::write(&self.pods);
        let old = std::mem::replace(&mut *map, fresh);
        let finished: Vec<PodGone> = map
            .iter()
            .filter(|(k, p)| newly_finished(old.get(*k), p))
            .map(|(_, p)| PodGone::of(p, GoneCause::Finished))
            .collect();
        let gone: Vec<PodGone> = old
            .into_iter()
            .filter(|(k, o)| map.get(k).is_none_or(|n| n.uid != o.uid))
            .map(|(_, o)| PodGone::deleted(&o))
            .chain(finished)
            .collect();
        drop(map);
        self.announce(gone);
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
