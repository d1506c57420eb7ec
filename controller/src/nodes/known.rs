//! The nodes the cluster knows, from the Kubernetes node watch.
//!
//! Rules that must tell a node from any other name consult
//! [`KnownNodes::node_known`] (a `host/<node>` key is a node's identity,
//! never a pod's); whoever acts on node loss subscribes to
//! [`KnownNodes::subscribe_gone`]: a node deleted from the cluster is gone
//! for good, whatever its lease says.

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::broadcast;

/// A node deleted from the cluster (or missing from a re-list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGone {
    /// The node's name.
    pub name: String,
}

/// Node names, as the API server lists them.
pub struct KnownNodes {
    names: RwLock<HashSet<String>>,
    gone: broadcast::Sender<NodeGone>,
    stale: AtomicBool,
}

impl Default for KnownNodes {
    fn default() -> Self {
        KnownNodes {
            names: RwLock::default(),
            gone: broadcast::channel(256).0,
            stale: AtomicBool::new(true),
        }
    }
}

impl KnownNodes {
    /// Whether the cluster has a node of that name.
    pub fn node_known(&self, name: &str) -> bool {
        crate::locks::read(&self.names).contains(name)
    }

    /// Number of known nodes.
    pub fn len(&self) -> usize {
        crate::locks::read(&self.names).len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Announces every node that leaves the cluster from now on.
    pub fn subscribe_gone(&self) -> broadcast::Receiver<NodeGone> {
        self.gone.subscribe()
    }

    /// Whether the set may be behind the cluster (never listed, or the
    /// watch is down).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Marks the set stale or current (the watch's business).
    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, Ordering::Relaxed);
    }

    /// Adds a node.
    pub fn insert(&self, name: String) {
        crate::locks::write(&self.names).insert(name);
    }

    /// Removes a node and announces it gone.
    pub fn remove(&self, name: &str) {
        let removed = crate::locks::write(&self.names).remove(name);
        if removed {
            let _ = self.gone.send(NodeGone { name: name.into() });
        }
    }

    /// Replaces the whole set (a re-list); nodes missing from it are
    /// announced gone.
    pub fn replace_all(&self, names: impl IntoIterator<Item = String>) {
        let fresh: HashSet<String> = names.into_iter().collect();
        let old = std::mem::replace(&mut *crate::locks::write(&self.names), fresh.clone());
        for name in old.difference(&fresh) {
            let _ = self.gone.send(NodeGone { name: name.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relist_announces_the_nodes_it_no_longer_holds() {
        let nodes = KnownNodes::default();
        nodes.replace_all(["node-a".to_string(), "node-b".to_string()]);
        let mut gone = nodes.subscribe_gone();
        nodes.replace_all(["node-b".to_string(), "node-c".to_string()]);
        assert_eq!(gone.try_recv().unwrap().name, "node-a");
        assert!(gone.try_recv().is_err(), "only node-a left");
        assert!(nodes.node_known("node-c") && !nodes.node_known("node-a"));
        nodes.remove("node-b");
        assert_eq!(gone.try_recv().unwrap().name, "node-b");
    }
}
