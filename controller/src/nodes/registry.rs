//! Which names are nodes, from knowledge that survives restarts: a node's
//! `host/` key must never reach a pod, and leases and pod bindings alone
//! forget a node after a restart (and never knew one without pods).
//!
//! This registry holds the nodes ever seen as authenticated callers
//! (persisted in the store). A name is also a node's while the cluster's
//! node list names it ([`crate::nodes::known::KnownNodes`], re-listed at
//! every start) or when it matches an operator's pattern
//! (`reserved.host_patterns`, see [`crate::admission::Reserved`]); see
//! [`crate::state::ControllerState::is_node`].

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::locks::{read, write};
use crate::store::{Store, StoreError, Table};

/// What is kept of a node seen once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    first_seen_unix: i64,
}

/// Nodes ever seen.
pub struct NodeRegistry {
    store: Arc<Store>,
    seen: RwLock<BTreeSet<String>>,
}

impl NodeRegistry {
    /// Loads every node ever seen from the store.
    pub fn load(store: Arc<Store>) -> Result<Self, StoreError> {
        let seen = store
            .list::<serde_json::Value>(Table::Nodes)?
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        Ok(NodeRegistry {
            store,
            seen: RwLock::new(seen),
        })
    }

    /// Remembers an authenticated node for good (a write only the first
    /// time). Returns whether it was new.
    pub fn remember(&self, node: &str) -> bool {
        let node = node.to_ascii_lowercase();
        if read(&self.seen).contains(&node) {
            return false;
        }
        let seen = Seen {
            first_seen_unix: kcred_audit::timefmt::now_unix(),
        };
        if let Err(e) = self.store.put(Table::Nodes, &node, &seen, b"") {
            // Still reserved for this run; the next sighting retries.
            tracing::error!(error = %e, %node, "cannot persist a node in the registry");
        }
        write(&self.seen).insert(node)
    }

    /// Whether `name` is a node's name.
    pub fn contains(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        read(&self.seen).contains(&name)
    }

    /// How many nodes were ever seen.
    pub fn len(&self) -> usize {
        read(&self.seen).len()
    }

    /// Whether no node was ever seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn a_node_seen_once_is_known_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = Arc::new(Store::open(&path, MasterKey::from_bytes([7; 32])).unwrap());
            let nodes = NodeRegistry::load(store).unwrap();
            assert!(nodes.remember("Node-1.example.test"));
            assert!(!nodes.remember("node-1.example.test"), "known already");
        }
        let store = Arc::new(Store::open(&path, MasterKey::from_bytes([7; 32])).unwrap());
        let nodes = NodeRegistry::load(store).unwrap();
        assert!(nodes.contains("node-1.example.test"));
        assert!(!nodes.contains("node-2.example.test"));
    }
}
