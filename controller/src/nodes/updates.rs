//! Pushing updates to node drivers: each connected driver holds a stream;
//! the controller sends "refresh" (rotations) or "wipe" (revocations, pods
//! gone) for volume ids on that node. A driver that is not connected
//! catches up through its renewals and heartbeats.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kcred_proto::kcred::v1::VolumeUpdate;
use kcred_proto::kcred::v1::volume_update::Action;
use tokio::sync::broadcast;

use crate::issued::VolumeRecord;

/// Per-node broadcast channels.
#[derive(Default)]
pub struct Updates {
    channels: Mutex<HashMap<String, broadcast::Sender<VolumeUpdate>>>,
}

impl Updates {
    fn sender(&self, node: &str) -> broadcast::Sender<VolumeUpdate> {
        let mut map = crate::locks::lock(&self.channels);
        map.entry(node.to_string())
            .or_insert_with(|| broadcast::channel(256).0)
            .clone()
    }

    /// A node driver's subscription, unless the node already holds `cap`
    /// (each holds a task and a buffer: a node, or whoever stole its
    /// identity, must not open them without bound).
    pub fn subscribe(&self, node: &str, cap: usize) -> Option<broadcast::Receiver<VolumeUpdate>> {
        let map = crate::locks::lock(&self.channels);
        let sender = match map.get(node) {
            Some(s) => s.clone(),
            None => {
                drop(map);
                self.sender(node)
            }
        };
        (sender.receiver_count() < cap).then(|| sender.subscribe())
    }

    /// Sends an update to `node`; returns whether a driver is listening.
    pub fn send(&self, node: &str, action: Action, volume_ids: Vec<String>, reason: &str) -> bool {
        self.sender(node)
            .send(VolumeUpdate {
                action: action as i32,
                volume_ids,
                reason: reason.to_string(),
            })
            .is_ok()
    }

    /// Sends `action` for `volumes`, one update to each node holding some
    /// of them; returns the nodes no driver was listening on.
    pub fn send_by_node<'a>(
        &self,
        action: Action,
        volumes: &'a [VolumeRecord],
        reason: &str,
    ) -> Vec<&'a str> {
        let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for v in volumes {
            by_node
                .entry(v.node.as_str())
                .or_default()
                .push(v.volume_id.clone());
        }
        by_node
            .into_iter()
            .filter_map(|(node, ids)| (!self.send(node, action, ids, reason)).then_some(node))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(node: &str, volume_id: &str) -> VolumeRecord {
        crate::issued::tests::record(volume_id, node, "u0")
    }

    #[test]
    fn volumes_go_to_their_nodes_one_update_each_and_unheard_nodes_are_named() {
        let updates = Updates::default();
        let mut a = updates.subscribe("node-a", 1).expect("node-a listens");
        let mut b = updates.subscribe("node-b", 1).expect("node-b listens");
        let volumes = [
            on("node-a", "v1"),
            on("node-b", "v2"),
            on("node-c", "v3"),
            on("node-a", "v4"),
        ];
        let unheard = updates.send_by_node(Action::Wipe, &volumes, "revoked");
        assert_eq!(unheard, ["node-c"]);
        let got = a.try_recv().expect("node-a's update");
        assert_eq!(got.volume_ids, ["v1", "v4"]);
        assert_eq!(got.action, Action::Wipe as i32);
        assert_eq!(got.reason, "revoked");
        assert!(a.try_recv().is_err(), "one update for node-a");
        assert_eq!(b.try_recv().expect("node-b's update").volume_ids, ["v2"]);
        assert!(b.try_recv().is_err(), "one update for node-b");
    }
}
