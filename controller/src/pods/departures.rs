//! How often pods stopped running on each node. A heartbeat judges the
//! records its node no longer lists all over again only when this count
//! moved ([`crate::nodes::heartbeat`]), so a steady node's heartbeat costs
//! what it lists, not every record it ever had.
//!
//! Counted in a fixed number of buckets by node name rather than per node:
//! the memory stays the same however many nodes come and go, and nodes
//! sharing a bucket only judge their records once more than they need to,
//! never less.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// 32 KiB. At 10,000 nodes a bucket holds two or three: a departure makes
/// those few judge all their records at their next heartbeat.
const BUCKETS: usize = 4096;

/// Departures per bucket of node names.
pub struct Departures {
    buckets: Box<[AtomicU64]>,
}

impl Default for Departures {
    fn default() -> Self {
        Departures {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Departures {
    /// Counts a pod that stopped running on `node`. Called once the view
    /// no longer shows it running: whoever reads the new count must find
    /// it gone.
    pub fn count(&self, node: &str) {
        if !node.is_empty() {
            self.bucket(node).fetch_add(1, Ordering::Release);
        }
    }

    /// The count for `node`; read it before judging against the view, so
    /// that a departure judged too early is counted after.
    pub fn of(&self, node: &str) -> u64 {
        self.bucket(node).load(Ordering::Acquire)
    }

    fn bucket(&self, node: &str) -> &AtomicU64 {
        // A fixed hash: nothing here is worth an attacker's collisions
        // (a shared bucket costs a judgement, never a wrong one).
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(node);
        &self.buckets[(hash % BUCKETS as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departure_moves_its_nodes_count_only() {
        let d = Departures::default();
        let (a, b) = (d.of("node-a"), d.of("node-b"));
        d.count("node-a");
        assert_eq!(d.of("node-a"), a + 1);
        assert_eq!(d.of("node-b"), b, "different buckets for these two names");
        d.count("");
        assert_eq!(d.of(""), 0, "an unscheduled pod departs from no node");
    }
}
