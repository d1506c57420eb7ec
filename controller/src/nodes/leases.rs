//! Node leases: nodes die without deregistering, so liveness is a lease.
//!
//! ```text
//!   (unknown) ──heartbeat──▶ Alive ──no heartbeat for ttl──▶ Lost
//!                              ▲                               │
//!                              └──────────heartbeat────────────┘ (returned)
//! ```
//! A lost node gets no renewals (its tickets and short-lived certificates
//! run out: certificates are revoked by expiry, not by a CRL), and the
//! loss is audited. A node that never heartbeated is not tracked: first
//! publishes on a new node are not held back by its first heartbeat.

use kcred_audit::timefmt::{now_unix, now_unix_ms};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A node's lease state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeaseState {
    /// Heartbeats arrive.
    Alive,
    /// The lease lapsed.
    Lost,
}

impl LeaseState {
    /// For status output.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Alive => "alive",
            LeaseState::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    state: LeaseState,
    last: Instant,
    last_unix: i64,
}

/// What a heartbeat or a sweep changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A node heartbeated for the first time.
    Joined(String),
    /// A lost node came back.
    Returned(String),
    /// A node's lease lapsed.
    Lost(String),
}

/// Every node's lease.
pub struct Leases {
    ttl: Duration,
    leases: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    /// Leases lapse `ttl` after the last heartbeat.
    pub fn new(ttl: Duration) -> Self {
        Leases {
            ttl,
            leases: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        crate::locks::lock(&self.leases)
    }

    /// The lease's time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Renews `node`'s lease.
    pub fn heartbeat(&self, node: &str) -> Option<Transition> {
        let mut map = self.lock();
        let fresh = Lease {
            state: LeaseState::Alive,
            last: Instant::now(),
            last_unix: now_unix(),
        };
        // A renewal (the common case) allocates nothing.
        match map.get_mut(node) {
            None => {
                map.insert(node.to_string(), fresh);
                Some(Transition::Joined(node.to_string()))
            }
            Some(old) => {
                let was = std::mem::replace(old, fresh).state;
                (was == LeaseState::Lost).then(|| Transition::Returned(node.to_string()))
            }
        }
    }

    /// Takes in a heartbeat another controller received (`last_unix_ms`)
    /// and whether the cluster has the node's loss on record, for the
    /// leader's sweep. Returns a node's first appearance or return.
    pub fn observe(&self, node: &str, last_unix_ms: i64, lost: bool) -> Option<Transition> {
        let age_ms = u64::try_from(now_unix_ms().saturating_sub(last_unix_ms)).unwrap_or(0);
        let last = Instant::now()
            .checked_sub(Duration::from_millis(age_ms))
            .unwrap_or_else(Instant::now);
        let state = if lost {
            LeaseState::Lost
        } else {
            LeaseState::Alive
        };
        let mut map = self.lock();
        let Some(lease) = map.get_mut(node) else {
            map.insert(
                node.to_string(),
                Lease {
                    state,
                    last,
                    last_unix: last_unix_ms / 1000,
                },
            );
            return (!lost).then(|| Transition::Joined(node.to_string()));
        };
        if last > lease.last {
            lease.last = last;
            lease.last_unix = last_unix_ms / 1000;
        }
        let was = std::mem::replace(&mut lease.state, state);
        (was == LeaseState::Lost && state == LeaseState::Alive)
            .then(|| Transition::Returned(node.to_string()))
    }

    /// Marks lapsed leases lost; returns the nodes lost now.
    ///
    /// `saturated` is the last moment the controller itself could not
    /// serve (connections full, out of file descriptors). A lease lapses
    /// only after a whole ttl without heartbeat *during which the
    /// controller could serve*: a node whose heartbeats were turned away
    /// by a flood is not lost, or an anonymous attacker filling the port
    /// could declare healthy nodes lost (and, with
    /// `leases.rotate_keytabs_on_loss`, force rotations). Loss detection
    /// is delayed while the controller is saturated, never faked.
    pub fn sweep(&self, saturated: Option<Instant>) -> Vec<Transition> {
        let mut map = self.lock();
        let mut lost = Vec::new();
        for (name, lease) in map.iter_mut() {
            let since = saturated.map_or(lease.last, |s| s.max(lease.last));
            if lease.state == LeaseState::Alive && since.elapsed() > self.ttl {
                lease.state = LeaseState::Lost;
                lost.push(Transition::Lost(name.clone()));
            }
        }
        lost
    }

    /// Marks `node` lost now, whatever its lease says (the cluster deleted
    /// it); returns the loss unless it was lost already. A node never seen
    /// by this controller is recorded lost too: it may hold volumes from
    /// before a restart, and must not renew them.
    pub fn lose(&self, node: &str) -> Option<Transition> {
        let mut map = self.lock();
        let lease = map.entry(node.to_string()).or_insert_with(|| Lease {
            state: LeaseState::Alive,
            last: Instant::now(),
            last_unix: now_unix(),
        });
        if lease.state == LeaseState::Lost {
            return None;
        }
        lease.state = LeaseState::Lost;
        Some(Transition::Lost(node.to_string()))
    }

    /// A node's state (`None`: never heartbeated).
    pub fn state(&self, node: &str) -> Option<LeaseState> {
        self.lock().get(node).map(|l| l.state)
    }

    /// Every tracked node: name, state, last heartbeat (unix seconds).
    pub fn all(&self) -> Vec<(String, LeaseState, i64)> {
        let mut v: Vec<_> = self
            .lock()
            .iter()
            .map(|(n, l)| (n.clone(), l.state, l.last_unix))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lapses_then_the_node_returns() {
        let leases = Leases::new(Duration::from_millis(50));
        assert_eq!(leases.heartbeat("a"), Some(Transition::Joined("a".into())));
        assert_eq!(leases.heartbeat("a"), None);
        assert!(leases.sweep(None).is_empty());
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(leases.sweep(None), vec![Transition::Lost("a".into())]);
        assert!(leases.sweep(None).is_empty(), "lost once");
        assert_eq!(leases.state("a"), Some(LeaseState::Lost));
        assert_eq!(
            leases.heartbeat("a"),
            Some(Transition::Returned("a".into()))
        );
        assert_eq!(leases.state("a"), Some(LeaseState::Alive));
        assert_eq!(leases.state("never"), None);
    }

    #[test]
    fn a_node_deleted_from_the_cluster_is_lost_at_once_and_once() {
        let leases = Leases::new(Duration::from_secs(3600));
        leases.heartbeat("a");
        assert_eq!(leases.lose("a"), Some(Transition::Lost("a".into())));
        assert_eq!(leases.lose("a"), None, "lost once");
        assert_eq!(leases.state("a"), Some(LeaseState::Lost));
        assert_eq!(
            leases.lose("unseen"),
            Some(Transition::Lost("unseen".into()))
        );
        assert!(leases.sweep(None).is_empty(), "nothing left to lapse");
    }

    #[test]
    fn heartbeats_seen_by_other_controllers_keep_a_lease_and_a_recorded_loss_is_not_repeated() {
        let leases = Leases::new(Duration::from_millis(50));
        let now = now_unix_ms();
        assert_eq!(
            leases.observe("a", now, false),
            Some(Transition::Joined("a".into()))
        );
        assert!(leases.sweep(None).is_empty(), "fresh heartbeat elsewhere");
        // A node whose loss another leader recorded is lost here too, and
        // the sweep does not declare it again.
        assert_eq!(leases.observe("b", now - 10_000, true), None);
        assert_eq!(leases.state("b"), Some(LeaseState::Lost));
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(leases.sweep(None), vec![Transition::Lost("a".into())]);
        // A newer heartbeat, loss cleared: returned.
        assert_eq!(
            leases.observe("b", now_unix_ms(), false),
            Some(Transition::Returned("b".into()))
        );
    }

    #[test]
    fn no_lease_lapses_while_the_controller_itself_was_saturated() {
        let leases = Leases::new(Duration::from_millis(50));
        leases.heartbeat("a");
        std::thread::sleep(Duration::from_millis(70));
        // Saturated just now: the node gets a whole ttl from here.
        assert!(leases.sweep(Some(Instant::now())).is_empty());
        assert_eq!(leases.state("a"), Some(LeaseState::Alive));
        // A saturation long ago changes nothing.
        let long_ago = Instant::now() - Duration::from_millis(60);
        assert_eq!(
            leases.sweep(Some(long_ago)),
            vec![Transition::Lost("a".into())]
        );
    }
}
