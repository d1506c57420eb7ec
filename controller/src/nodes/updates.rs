//! Pushing updates to node drivers: each connected driver holds a stream;
//! the controller sends "refresh" (rotations) or "wipe" (revocations, pods
//! gone) for volume ids on that node. A driver that is not connected
//! catches up through its renewals and heartbeats.

use std::collections::HashMap;
use std::sync::Mutex;

use kcred_proto::kcred::v1::VolumeUpdate;
use kcred_proto::kcred::v1::volume_update::Action;
use tokio::sync::broadcast;

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
}
