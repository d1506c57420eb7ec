//! What each node said it holds at its last heartbeat: a volume record
//! outlives its mount (it leaves only once its pod is gone from the
//! controller's view), so "who holds this credential" counts only
//! volumes their node still lists. In memory only: after a restart every
//! record counts as live until its node's next heartbeat.
//!
//! Only volumes recorded on the node are kept (the ids shared with the
//! issued-volume index, sorted): "still mounted?" is only asked of
//! records, and a node's list costs no copy of its names.
//!
//! It also tells a heartbeat which records the node does not list need
//! judging ([`Held::unlisted`]): all of them only when a pod stopped
//! running on the node since they were last all judged (a sweep), else
//! only those the node listed last time and no longer does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

/// How long a node goes without a sweep at most. Departures and failed
/// releases trigger sweeps; this bounds what neither can see, e.g. a
/// record another controller wrote to the shared store after its pod left.
pub const SWEEP_EVERY_SECS: i64 = 600;

/// A node's last word.
#[derive(Debug, Default)]
struct Heard {
    /// When (seconds since the epoch).
    at_unix: i64,
    /// Sorted.
    volumes: Box<[Arc<str>]>,
    /// When all its unlisted records were last judged (`None`: never, or
    /// not on a view that could tell).
    swept: Option<Sweep>,
    /// Releases on this node that failed, ever. Kept across heartbeats:
    /// a sweep that saw fewer is out of date, whichever heartbeat stored
    /// it last.
    failed: u64,
    /// Set when every volume of that heartbeat was recorded and kept.
    steady: Option<Steady>,
}

/// A heartbeat that listed only recorded volumes and judged them all
/// kept (none stale, none revoked) on a current pod view, and what its
/// verdicts rested on. The next one listing the same volumes gets the
/// same verdicts while both marks stand: a kept volume turns stale only
/// when its pod stops running on the node (which moves the departures
/// count) and revoked only when its record changes (which moves the
/// node's mark in the issued-volume index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steady {
    /// [`crate::pods::PodIndex::departures_from`] the node, read before
    /// the pod view.
    pub departures: u64,
    /// [`crate::issued::NodeRecords::changed`], read with the records.
    pub records: u64,
}

/// A heartbeat that judged every record of its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// [`crate::pods::PodIndex::departures_from`] the node, read before.
    departures: u64,
    /// [`Heard::failed`], read before.
    failed: u64,
    /// When (seconds since the epoch).
    at_unix: i64,
}

/// Which of its node's records a heartbeat judges besides those listed.
#[derive(Debug, PartialEq, Eq)]
pub enum Unlisted {
    /// Every record: this heartbeat is a sweep.
    All(Sweep),
    /// Only these (listed last time, not now); the last sweep stands.
    Dropped(Vec<Arc<str>>, Sweep),
}

impl Unlisted {
    /// The sweep to remember once this heartbeat is judged.
    pub fn sweep(&self) -> Sweep {
        match self {
            Unlisted::All(s) | Unlisted::Dropped(_, s) => *s,
        }
    }
}

/// Each node's held volumes, from its last heartbeat.
#[derive(Debug, Default)]
pub struct Held {
    nodes: RwLock<HashMap<String, Heard>>,
    /// Volumes a heartbeat is releasing right now.
    releasing: Mutex<HashSet<Arc<str>>>,
}

/// A volume one heartbeat is releasing; others leave it alone until this
/// is dropped.
pub struct Releasing<'a> {
    held: &'a Held,
    volume_id: Arc<str>,
}

impl Drop for Releasing<'_> {
    fn drop(&mut self) {
        crate::locks::lock(&self.held.releasing).remove(&self.volume_id);
    }
}

impl Held {
    /// Which records a heartbeat from `node` listing `listed` (sorted)
    /// must judge besides those, `departures` being the node's count read
    /// now.
    pub fn unlisted(&self, node: &str, listed: &[&str], departures: u64, now: i64) -> Unlisted {
        let nodes = crate::locks::read(&self.nodes);
        let Some(heard) = nodes.get(node) else {
            return Unlisted::All(Sweep {
                departures,
                failed: 0,
                at_unix: now,
            });
        };
        match heard.swept {
            // A clock stepped back counts as time up.
            Some(last)
                if last.departures == departures
                    && last.failed == heard.failed
                    && (0..SWEEP_EVERY_SECS).contains(&(now - last.at_unix)) =>
            {
                let dropped = heard
                    .volumes
                    .iter()
                    .filter(|v| listed.binary_search(&&***v).is_err())
                    .cloned()
                    .collect();
                Unlisted::Dropped(dropped, last)
            }
            _ => Unlisted::All(Sweep {
                departures,
                failed: heard.failed,
                at_unix: now,
            }),
        }
    }

    /// The volumes of the node's last heartbeat and what made it steady,
    /// if it was ([`Steady`]) and listed exactly `listed` (sorted).
    pub fn steady(&self, node: &str, listed: &[&str]) -> Option<(Steady, Vec<Arc<str>>)> {
        let nodes = crate::locks::read(&self.nodes);
        let heard = nodes.get(node)?;
        let steady = heard.steady?;
        let same = heard.volumes.len() == listed.len()
            && heard.volumes.iter().zip(listed).all(|(a, b)| **a == **b);
        same.then(|| (steady, heard.volumes.to_vec()))
    }

    /// Remembers a heartbeat's list of the node's recorded volumes, its
    /// sweep ([`Unlisted::sweep`]; `None` when it could not judge them all)
    /// and whether it was steady, once its releases are done: a heartbeat
    /// cut short before that leaves the node's previous word, and the next
    /// one does its work.
    pub fn heard(
        &self,
        node: &str,
        mut volumes: Vec<Arc<str>>,
        at_unix: i64,
        swept: Option<Sweep>,
        steady: Option<Steady>,
    ) {
        volumes.sort_unstable();
        let volumes = volumes.into_boxed_slice();
        let mut nodes = crate::locks::write(&self.nodes);
        match nodes.get_mut(node) {
            Some(h) => {
                h.at_unix = at_unix;
                h.volumes = volumes;
                h.swept = swept;
                h.steady = steady;
            }
            None => {
                let heard = Heard {
                    at_unix,
                    volumes,
                    swept,
                    failed: 0,
                    steady,
                };
                nodes.insert(node.to_string(), heard);
            }
        }
    }

    /// Claims the release of `volume_id`, or `None` while another
    /// heartbeat of its node (a retry beside a stream) is releasing it:
    /// two that judged it releasable would otherwise both audit it.
    pub fn releasing(&self, volume_id: &Arc<str>) -> Option<Releasing<'_>> {
        crate::locks::lock(&self.releasing)
            .insert(Arc::clone(volume_id))
            .then(|| Releasing {
                held: self,
                volume_id: Arc::clone(volume_id),
            })
    }

    /// Makes `node`'s next heartbeat a sweep: a release failed, and no
    /// departure will bring its record back.
    pub fn release_failed(&self, node: &str) {
        let mut nodes = crate::locks::write(&self.nodes);
        nodes.entry(node.to_string()).or_default().failed += 1;
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

    fn ids(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    fn swept(departures: u64, at_unix: i64) -> Sweep {
        Sweep {
            departures,
            failed: 0,
            at_unix,
        }
    }

    #[test]
    fn a_volume_left_out_of_a_later_heartbeat_is_not_live() {
        let held = Held::default();
        held.heard("n1", ids(&["b0", "a"]), 100, Some(swept(0, 100)), None);
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
        held.heard("n1", vec![], 100, Some(swept(0, 100)), None);
        assert!(
            held.is_live("n1", "new", 100),
            "same second: not yet listed"
        );
        assert!(held.is_live("n1", "new", 105));
        assert!(held.is_live("unheard", "x", 1), "no heartbeat yet");
    }

    #[test]
    fn one_heartbeat_at_a_time_releases_a_volume() {
        let held = Held::default();
        let id: Arc<str> = Arc::from("v1");
        let first = held.releasing(&id).expect("free");
        assert!(held.releasing(&id).is_none(), "claimed");
        assert!(held.releasing(&Arc::from("v2")).is_some());
        drop(first);
        assert!(held.releasing(&id).is_some(), "released again");
    }

    #[test]
    fn a_steady_node_judges_only_what_it_stopped_listing() {
        let held = Held::default();
        assert_eq!(
            held.unlisted("n1", &["a", "b"], 7, 100),
            Unlisted::All(swept(7, 100)),
            "a node never heard is swept"
        );
        held.heard("n1", ids(&["b", "a", "c"]), 100, Some(swept(7, 100)), None);
        assert_eq!(
            held.unlisted("n1", &["a", "c"], 7, 110),
            Unlisted::Dropped(ids(&["b"]), swept(7, 100))
        );
        assert_eq!(
            held.unlisted("n1", &["a", "b", "c", "d"], 7, 110),
            Unlisted::Dropped(vec![], swept(7, 100))
        );
    }

    #[test]
    fn a_departure_time_or_a_view_that_could_not_tell_brings_a_sweep() {
        let held = Held::default();
        held.heard("n1", ids(&["a"]), 100, Some(swept(7, 100)), None);
        assert_eq!(
            held.unlisted("n1", &["a"], 8, 110),
            Unlisted::All(swept(8, 110)),
            "a pod left the node"
        );
        let late = 100 + SWEEP_EVERY_SECS;
        assert_eq!(
            held.unlisted("n1", &["a"], 7, late),
            Unlisted::All(swept(7, late))
        );
        assert_eq!(
            held.unlisted("n1", &["a"], 7, 99),
            Unlisted::All(swept(7, 99)),
            "the clock stepped back"
        );
        held.heard("n1", ids(&["a"]), 110, None, None);
        assert_eq!(
            held.unlisted("n1", &["a"], 7, 120),
            Unlisted::All(swept(7, 120))
        );
    }

    /// A release that failed is judged again at the next heartbeat, even
    /// when a heartbeat that began before the failure stores its sweep
    /// after it.
    #[test]
    fn a_failed_release_brings_a_sweep_whoever_stores_last() {
        let held = Held::default();
        assert_eq!(
            held.unlisted("n1", &[], 7, 100),
            Unlisted::All(swept(7, 100))
        );
        held.heard("n1", vec![], 100, Some(swept(7, 100)), None);
        let earlier = held.unlisted("n1", &[], 7, 105).sweep();
        held.release_failed("n1");
        held.heard("n1", vec![], 105, Some(earlier), None);
        let next = held.unlisted("n1", &[], 7, 110);
        assert!(matches!(next, Unlisted::All(_)), "{next:?}");
        held.heard("n1", vec![], 110, Some(next.sweep()), None);
        assert!(matches!(
            held.unlisted("n1", &[], 7, 120),
            Unlisted::Dropped(..)
        ));

        let fresh = Held::default();
        let before = fresh.unlisted("n2", &[], 7, 100);
        fresh.release_failed("n2");
        fresh.heard("n2", vec![], 100, Some(before.sweep()), None);
        assert!(
            matches!(fresh.unlisted("n2", &[], 7, 110), Unlisted::All(_)),
            "a failure before the node's first word still counts"
        );
    }
}
