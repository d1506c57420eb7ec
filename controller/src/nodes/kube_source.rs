//! Nodes from the Kubernetes API: only their names are kept.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::known::KnownNodes;
use crate::kubernetes::watch::View;

/// The known-node set as a watch target.
pub struct NodeView(pub Arc<KnownNodes>);

impl View for NodeView {
    type Object = Node;
    type Entry = String;
    type List = Vec<String>;
    const RESOURCE: &'static str = "nodes";

    fn entry(object: Node) -> Option<String> {
        object.metadata.name
    }

    fn replace_all(&self, entries: Vec<String>) {
        self.0.replace_all(entries);
    }

    fn upsert(&self, entry: String) {
        self.0.insert(entry);
    }

    fn remove(&self, entry: String) {
        self.0.remove(&entry);
    }

    fn set_stale(&self, stale: bool) {
        self.0.set_stale(stale);
    }
}
