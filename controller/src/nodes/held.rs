//! What each node said it holds at its last heartbeat: a volume record
//! outlives its mount (it leaves only once its pod is gone from the
//! controller's view), so "who holds this credential" counts only
//! volumes their node still lists. In memory only: after a restart every
//! record counts as live until its node's next heartbeat.
//!
//! Only volumes recorded on the node are kept (the ids shared with the
//! issued-volume index, sorted): "still mounted?" is only asked of
//! records, and a node's list costs no copy of its names.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A node's last word.
#[derive(Debug)]
struct Heard {
    /// When (seconds since the epoch).
    at_unix: i64,
    /// Sorted.
    volumes: Box<[Arc<str>]>,
}

/// Each node's held volumes, from its last heartbeat.
#[derive(Debug, Default)]
pub struct Held {
    nodes: RwLock<HashMap<String, Heard>>,
}

impl Held {
    /// Remembers a heartbeat's list of the node's recorded volumes.
    pub fn heard(&self, node: &str, mut volumes: Vec<Arc<str>>, at_unix: i64) {
        volumes.sort_unstable();
        let heard = Heard {
            at_unix,
            volumes: volumes.into_boxed_slice(),
        };
        let mut nodes = crate::locks::write(&self.nodes);
        match nodes.get_mut(node) {
            Some(h) => *h = heard,
            None => {
                nodes.insert(node.to_string(), heard);
            }
        }
    }

    /// Whether `volume_id`, issued on `node` at `issued_unix`, is still
    /// mounted there as far as the controller knows: yes unless a
    /// heartbeat sent after the issue (a whole second later, heartbeats
    /// and issues being timed in seconds) left it out.
    pub fn is_live(&self, node: &str, volume_id: &str, issued_unix: i64) -> bool {
        let nodes = crate::locks::read(&self.nodes);
        match nodes.get(node) {
            Some(h) if h.at_unix > issued_unix => {
                h.volumes.binary_search_by(|v| (**v).cmp(volume_id)).is_ok()
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_left_out_of_a_later_heartbeat_is_not_live() {
        let held = Held::default();
        held.heard("n1", vec!["b0".into(), "a".into()], 100);
        assert!(held.is_live("n1", "a", 90));
        assert!(held.is_live("n1", "b0", 90));
        assert!(
            !held.is_live("n1", "b", 90),
            "unpublished before the heartbeat"
        );
    }

    #[test]
    fn a_volume_issued_after_the_last_heartbeat_is_live() {
        let held = Held::default();
        held.heard("n1", vec![], 100);
        assert!(
            held.is_live("n1", "new", 100),
            "same second: not yet listed"
        );
        assert!(held.is_live("n1", "new", 105));
        assert!(held.is_live("unheard", "x", 1), "no heartbeat yet");
    }
}
