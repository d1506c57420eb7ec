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

mod departures;
pub mod file_source;
mod kept;
pub mod kube_source;
pub mod retire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use tokio::sync::broadcast;

use crate::intern::Interner;
use departures::Departures;
use kept::KeptPod;

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
    /// The names of the pod's inline CSI volumes, when known (always for
    /// pods from the API; a pods file may list them): kubelet derives each
    /// volume's id from them, and a node may ask only for those ids, so
    /// it cannot take another pod's volume id. `None`: not checked.
    #[serde(default)]
    pub csi_volumes: Option<Vec<String>>,
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

/// A pod `uid` now `finished`, whose previous entry under its name (`old`)
/// was not that pod finished already.
fn newly_finished(old: Option<&KeptPod>, uid: &str, finished: bool) -> bool {
    finished && !old.is_some_and(|o| &*o.uid == uid && o.finished)
}

/// Pods by namespace, then name (the namespace kept once, not once per
/// pod), each kept compact ([`kept`]).
#[derive(Default)]
struct Pods {
    by_namespace: HashMap<Arc<str>, HashMap<Box<str>, KeptPod>>,
    len: usize,
    names: Interner,
}

impl Pods {
    fn get(&self, namespace: &str, name: &str) -> Option<&KeptPod> {
        self.by_namespace.get(namespace)?.get(name)
    }

    /// Inserts `pod`; returns the entry it replaced.
    fn insert(&mut self, pod: PodInfo) -> Option<KeptPod> {
        let namespace = self.names.get(&pod.namespace);
        let name = pod.name.clone().into_boxed_str();
        let kept = KeptPod::keep(pod, &mut self.names);
        let old = self
            .by_namespace
            .entry(namespace)
            .or_default()
            .insert(name, kept);
        self.len += usize::from(old.is_none());
        old
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<KeptPod> {
        let pods = self.by_namespace.get_mut(namespace)?;
        let old = pods.remove(name)?;
        if pods.is_empty() {
            self.by_namespace.remove(namespace);
        }
        self.len -= 1;
        Some(old)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str, &KeptPod)> {
        self.by_namespace
            .iter()
            .flat_map(|(ns, pods)| pods.iter().map(move |(n, p)| (&**ns, &**n, p)))
    }
}

/// A complete list of pods as a source reads it, not yet in force
/// ([`PodIndex::replace_all`] puts it there). A source adds each pod as it
/// reads it, so what the view keeps is made while the source's garbage
/// (parsed objects) is freed and reused: 100,000 pods collected first and
/// kept afterwards left the 19 MiB kept spread over 90 MiB of heap.
#[derive(Default)]
pub struct PodList(Pods);

impl PodList {
    /// Number of pods in the list.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether the list holds none.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
}

/// A later pod of the same name replaces an earlier one.
impl Extend<PodInfo> for PodList {
    fn extend<I: IntoIterator<Item = PodInfo>>(&mut self, pods: I) {
        for p in pods {
            self.0.insert(p);
        }
    }
}

impl FromIterator<PodInfo> for PodList {
    fn from_iter<I: IntoIterator<Item = PodInfo>>(pods: I) -> Self {
        let mut list = PodList::default();
        list.extend(pods);
        list
    }
}

/// Pods by namespace and name.
pub struct PodIndex {
    pods: RwLock<Pods>,
    gone: broadcast::Sender<PodGone>,
    departures: Departures,
    stale: AtomicBool,
}

impl Default for PodIndex {
    fn default() -> Self {
        PodIndex {
            pods: RwLock::default(),
            gone: broadcast::channel(1024).0,
            departures: Departures::default(),
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

    /// Called once the view shows the pods gone (after its lock is
    /// released): see [`Departures::count`].
    fn announce(&self, gone: impl IntoIterator<Item = PodGone>) {
        // Every departure counted before any is announced: a heartbeat
        // taking its node's last verdicts again (crate::nodes::heartbeat)
        // rests on the count, and a long re-list's sends take a while.
        let gone: Vec<PodGone> = gone.into_iter().collect();
        for g in &gone {
            self.departures.count(&g.node);
        }
        for g in gone {
            // No subscriber is fine.
            let _ = self.gone.send(g);
        }
    }

    /// A count that moves whenever a pod stops running on `node` (gone,
    /// replaced or finished); possibly also when one stops on another
    /// node. Read it before asking the view about the node's pods: a
    /// heartbeat that saw it unchanged has nothing new to release.
    pub fn departures_from(&self, node: &str) -> u64 {
        self.departures.of(node)
    }

    /// Whether the view shows the pod `namespace/name` with this UID
    /// stopped on `node`: finished, or bound to another node. Unlike
    /// `!runs_on`, a pod the view does not hold (or holds under another
    /// UID) is not known stopped: a view behind its source may miss it.
    pub fn stopped_on(&self, namespace: &str, name: &str, uid: &str, node: &str) -> bool {
        crate::locks::read(&self.pods)
            .get(namespace, name)
            .is_some_and(|p| &*p.uid == uid && (p.finished || &*p.node_name != node))
    }

    /// Counts a departure from `node` unless the pod `namespace/name`
    /// with this UID still runs there. For a volume record written after
    /// its pod was read: if the pod left in between, a sweep may have
    /// judged the node before the record existed.
    pub fn recount_unless_running(&self, namespace: &str, name: &str, uid: &str, node: &str) {
        if !self.runs_on(namespace, name, uid, node) {
            self.departures.count(node);
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
        crate::locks::read(&self.pods)
            .get(namespace, name)
            .map(|p| p.info(namespace, name))
    }

    /// Whether the pod `namespace/name` with this UID is bound to `node`
    /// and not finished (a heartbeat's question, asked without copying
    /// the pod).
    pub fn runs_on(&self, namespace: &str, name: &str, uid: &str, node: &str) -> bool {
        crate::locks::read(&self.pods)
            .get(namespace, name)
            .is_some_and(|p| &*p.uid == uid && &*p.node_name == node && !p.finished)
    }

    /// Adds or replaces one pod (a watch event).
    pub fn upsert(&self, pod: PodInfo) {
        let finished = pod.finished.then(|| PodGone::of(&pod, GoneCause::Finished));
        let (ns, name, uid) = (pod.namespace.clone(), pod.name.clone(), pod.uid.clone());
        let node = pod.node_name.clone();
        let old = crate::locks::write(&self.pods).insert(pod);
        if let Some(o) = old
            .as_ref()
            .filter(|o| *o.uid == *uid && *o.node_name != *node)
        {
            // The same pod bound elsewhere: not gone, but gone from there.
            self.departures.count(&o.node_name);
        }
        let finished = finished.filter(|_| newly_finished(old.as_ref(), &uid, true));
        let replaced = old
            .filter(|o| *o.uid != *uid)
            .map(|o| PodGone::deleted(&o.info(&ns, &name)));
        self.announce(replaced.into_iter().chain(finished));
    }

    /// Removes one pod (a watch delete).
    pub fn remove(&self, namespace: &str, name: &str) {
        let old = crate::locks::write(&self.pods).remove(namespace, name);
        self.announce(old.map(|o| PodGone::deleted(&o.info(namespace, name))));
    }

    /// Removes `pod` if the view still holds that incarnation (same UID),
    /// not a newer pod of the same name.
    pub fn remove_pod(&self, pod: &PodInfo) {
        let mut map = crate::locks::write(&self.pods);
        let old = match map.get(&pod.namespace, &pod.name) {
            Some(cur) if *cur.uid == *pod.uid => map.remove(&pod.namespace, &pod.name),
            _ => None,
        };
        drop(map);
        self.announce(old.map(|o| PodGone::deleted(&o.info(&pod.namespace, &pod.name))));
    }

    /// Replaces every pod at once (a full list); pods missing from it, or
    /// present under another UID, are announced gone, and so are pods it
    /// holds finished that were not finished before.
    pub fn replace_all(&self, pods: PodList) {
        // Built without the lock (a re-list may hold 100,000 pods; fetches
        // and heartbeats read the view meanwhile), then swapped in with its
        // own shared names.
        let PodList(fresh) = pods;
        let old = std::mem::replace(&mut *crate::locks::write(&self.pods), fresh);
        let map = crate::locks::read(&self.pods);
        let finished: Vec<PodGone> = map
            .iter()
            .filter(|(ns, n, p)| newly_finished(old.get(ns, n), &p.uid, p.finished))
            .map(|(ns, n, p)| PodGone::of(&p.info(ns, n), GoneCause::Finished))
            .collect();
        let (mut gone, mut moved) = (Vec::new(), Vec::new());
        for (ns, n, o) in old.iter() {
            match map.get(ns, n) {
                // The same pod bound elsewhere: not gone, but gone from there.
                Some(p) if p.uid == o.uid => {
                    if p.node_name != o.node_name {
                        moved.push(Arc::clone(&o.node_name));
                    }
                }
                _ => gone.push(PodGone::deleted(&o.info(ns, n))),
            }
        }
        gone.extend(finished);
        drop(map);
        for node in moved {
            self.departures.count(&node);
        }
        self.announce(gone);
    }

    /// Whether any known pod is bound to `node` (so `node` is a node name).
    pub fn any_on_node(&self, node: &str) -> bool {
        crate::locks::read(&self.pods)
            .iter()
            .any(|(_, _, p)| &*p.node_name == node)
    }

    /// Number of pods known.
    pub fn len(&self) -> usize {
        crate::locks::read(&self.pods).len
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str, node: &str, finished: bool) -> PodInfo {
        PodInfo {
            namespace: "web".into(),
            name: name.into(),
            uid: uid.into(),
            node_name: node.into(),
            finished,
            ..PodInfo::default()
        }
    }

    /// Every way a pod stops running on a node moves that node's count;
    /// a change that leaves it running there does not.
    #[test]
    fn a_pod_that_stops_running_on_a_node_moves_its_count() {
        let index = PodIndex::default();
        let count = |node: &str| index.departures_from(node);
        index.upsert(pod("a", "u1", "n1", false));
        let start = count("n1");
        let mut annotated = pod("a", "u1", "n1", false);
        annotated
            .annotations
            .insert("kcred.io/x".into(), "y".into());
        index.upsert(annotated);
        assert_eq!(count("n1"), start, "still runs there");

        index.upsert(pod("a", "u1", "n1", true));
        assert_eq!(count("n1"), start + 1, "finished");
        index.upsert(pod("a", "u2", "n1", false));
        assert_eq!(count("n1"), start + 2, "replaced by another UID");
        index.upsert(pod("a", "u2", "n2", false));
        assert_eq!(count("n1"), start + 3, "bound elsewhere");
        let n2 = count("n2");
        index.replace_all([pod("a", "u2", "n1", false)].into_iter().collect());
        assert_eq!(count("n2"), n2 + 1, "a re-list binds it elsewhere");
        assert_eq!(count("n1"), start + 3);
        index.remove("web", "a");
        assert_eq!(count("n1"), start + 4, "deleted");
        assert_eq!(count("n2"), n2 + 1);
    }

    #[test]
    fn only_a_pod_shown_finished_or_elsewhere_is_known_stopped() {
        let index = PodIndex::default();
        index.upsert(pod("a", "u1", "n1", false));
        index.upsert(pod("b", "u2", "n1", true));
        index.upsert(pod("c", "u3", "n2", false));
        assert!(!index.stopped_on("web", "a", "u1", "n1"), "runs");
        assert!(index.stopped_on("web", "b", "u2", "n1"), "finished");
        assert!(index.stopped_on("web", "c", "u3", "n1"), "elsewhere");
        assert!(!index.stopped_on("web", "a", "u9", "n1"), "another UID");
        assert!(!index.stopped_on("web", "zz", "u4", "n1"), "not shown");
    }

    #[test]
    fn a_record_written_after_its_pod_left_is_counted() {
        let index = PodIndex::default();
        index.upsert(pod("a", "u1", "n1", false));
        let start = index.departures_from("n1");
        index.recount_unless_running("web", "a", "u1", "n1");
        assert_eq!(index.departures_from("n1"), start);
        index.recount_unless_running("web", "gone", "u9", "n1");
        assert_eq!(index.departures_from("n1"), start + 1);
    }
}
