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
//!
//! And it keeps whether the node's last list was all kept, with the marks
//! those verdicts rest on ([`Steady`]): the next heartbeat listing the same
//! volumes takes them again while the marks stand. The marks only grow
//! (the departures count, and the issued-volume index's change count,
//! which lives as long as this does), so whichever of two concurrent
//! heartbeats stores last, its verdicts hold for as long as its marks do.

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
    /// [`list_digest`] of the ids that heartbeat listed.
    digest: [u8; 32],
}

impl Heard {
    /// The last sweep, if it still stands for `departures` read now: no
    /// pod stopped running on the node since, no release failed, and it
    /// is younger than [`SWEEP_EVERY_SECS`] (a clock stepped back counts
    /// as time up).
    fn standing_sweep(&self, departures: u64, now: i64) -> Option<Sweep> {
        self.swept.filter(|last| {
            last.departures == departures
                && last.failed == self.failed
                && (0..SWEEP_EVERY_SECS).contains(&(now - last.at_unix))
        })
    }
}

/// Names a heartbeat's list (sorted) in 32 bytes: a repeated list is
/// recognised from the request alone, without reading the names kept
/// from last time (at 10,000 nodes, each a cache miss). SHA-256, so no
/// node can make another list pass for the one it listed.
pub fn list_digest(sorted: &[&str]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for id in sorted {
        h.update((id.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
    }
    h.finalize().into()
}

/// A heartbeat that listed only recorded volumes and judged them all
/// kept (none stale, none revoked) on a current pod view, and what its
/// verdicts rested on. The next one listing the same volumes gets the
/// same verdicts while both marks stand: a kept volume turns stale only
/// when its pod stops running on the node (which moves the departures
/// count, kept in the heartbeat's sweep: a steady heartbeat's sweep was
/// taken at the count it read) and revoked only when its record changes
/// (which moves the node's mark in the issued-volume index, kept here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steady {
    /// [`crate::issued::NodeRecords::changed`], read with the records.
    pub records: u64,
}

/// What a heartbeat left to remember besides its list ([`Held::heard`]).
#[derive(Debug, Clone, Copy)]
pub struct Word {
    /// When it was judged (seconds since the epoch).
    pub at_unix: i64,
    /// Its sweep ([`Unlisted::sweep`]; `None` when it could not judge
    /// them all).
    pub swept: Option<Sweep>,
    /// Whether it was steady.
    pub steady: Option<Steady>,
    /// [`list_digest`] of its list.
    pub digest: [u8; 32],
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
        match heard.standing_sweep(departures, now) {
            Some(last) => {
                let dropped = heard
                    .volumes
                    .iter()
                    .filter(|v| listed.binary_search(&&***v).is_err())
                    .cloned()
                    .collect();
                Unlisted::Dropped(dropped, last)
            }
            None => Unlisted::All(Sweep {
                departures,
                failed: heard.failed,
                at_unix: now,
            }),
        }
    }

    /// The records mark of the node's last heartbeat if it was steady
    /// ([`Steady`]) and listed the list of `digest`, with its sweep if
    /// that still stands (as [`Held::unlisted`] judges it, for
    /// `departures` read now): then this heartbeat has nothing new to
    /// judge among the node's unlisted records either.
    pub fn steady(
        &self,
        node: &str,
        digest: &[u8; 32],
        departures: u64,
        now: i64,
    ) -> Option<(Steady, Sweep)> {
        let nodes = crate::locks::read(&self.nodes);
        let heard = nodes.get(node)?;
        let (steady, sweep) = (heard.steady?, heard.standing_sweep(departures, now)?);
        (heard.digest == *digest).then_some((steady, sweep))
    }

    /// Remembers a heartbeat's list of the node's recorded volumes, its
    /// sweep ([`Unlisted::sweep`]; `None` when it could not judge them all)
    /// and whether it was steady, once its releases are done: a heartbeat
    /// cut short before that leaves the node's previous word, and the next
    /// one does its work.
    ///
    /// `volumes` is `None` when the heartbeat listed what the node's last
    /// one did ([`Held::steady`]): the names kept stand.
    pub fn heard(&self, node: &str, volumes: Option<Vec<Arc<str>>>, word: Word) {
        let volumes = volumes.map(|mut v| {
            v.sort_unstable();
            v.into_boxed_slice()
        });
        let mut nodes = crate::locks::write(&self.nodes);
        match nodes.get_mut(node) {
            // Another list, or a word not steady, stored since (a call
            // beside the node's stream): it stands.
            Some(h) if volumes.is_none() && (h.digest != word.digest || h.steady.is_none()) => {}
            Some(h) => {
                h.at_unix = word.at_unix;
                if let Some(v) = volumes {
                    h.volumes = v;
                }
                h.swept = word.swept;
                h.steady = word.steady;
                h.digest = word.digest;
            }
            // A repeat for a node whose word is gone: nothing to keep.
            None if volumes.is_none() => {}
            None => {
                let heard = Heard {
                    at_unix: word.at_unix,
                    volumes: volumes.unwrap_or_default(),
                    swept: word.swept,
                    failed: 0,
                    steady: word.steady,
                    digest: word.digest,
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

    fn word(at_unix: i64, swept: Option<Sweep>) -> Word {
        Word {
            at_unix,
            swept,
            steady: None,
            digest: [0; 32],
        }
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
        held.heard(
            "n1",
            Some(ids(&["b0", "a"])),
            word(100, Some(swept(0, 100))),
        );
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
        held.heard("n1", Some(vec![]), word(100, Some(swept(0, 100))));
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
        held.heard(
            "n1",
            Some(ids(&["b", "a", "c"])),
            word(100, Some(swept(7, 100))),
        );
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
        held.heard("n1", Some(ids(&["a"])), word(100, Some(swept(7, 100))));
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
        held.heard("n1", Some(ids(&["a"])), word(110, None));
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
        held.heard("n1", Some(vec![]), word(100, Some(swept(7, 100))));
        let earlier = held.unlisted("n1", &[], 7, 105).sweep();
        held.release_failed("n1");
        held.heard("n1", Some(vec![]), word(105, Some(earlier)));
        let next = held.unlisted("n1", &[], 7, 110);
        assert!(matches!(next, Unlisted::All(_)), "{next:?}");
        held.heard("n1", Some(vec![]), word(110, Some(next.sweep())));
        assert!(matches!(
            held.unlisted("n1", &[], 7, 120),
            Unlisted::Dropped(..)
        ));

        let fresh = Held::default();
        let before = fresh.unlisted("n2", &[], 7, 100);
        fresh.release_failed("n2");
        fresh.heard("n2", Some(vec![]), word(100, Some(before.sweep())));
        assert!(
            matches!(fresh.unlisted("n2", &[], 7, 110), Unlisted::All(_)),
            "a failure before the node's first word still counts"
        );
    }

    #[test]
    fn only_the_same_list_after_a_steady_heartbeat_with_its_sweep_standing_gets_its_marks() {
        let held = Held::default();
        let marks = Steady { records: 9 };
        let digest = list_digest(&["a", "b"]);
        let sweep = swept(3, 100);
        assert_eq!(held.steady("n1", &digest, 3, 100), None, "never heard");
        let steady_word = Word {
            at_unix: 100,
            swept: Some(sweep),
            steady: Some(marks),
            digest,
        };
        held.heard("n1", Some(ids(&["b", "a"])), steady_word);
        assert_eq!(held.steady("n1", &digest, 3, 110), Some((marks, sweep)));
        for other in [&["a"][..], &["a", "b", "c"], &["a", "c"], &[], &["ab"]] {
            assert_eq!(
                held.steady("n1", &list_digest(other), 3, 110),
                None,
                "{other:?}"
            );
        }
        assert_ne!(
            list_digest(&["ab", "c"]),
            list_digest(&["a", "bc"]),
            "names are not run together"
        );
        assert_eq!(held.steady("n2", &digest, 3, 110), None, "another node");
        // The sweep no longer stands: a departure, time, a failed release.
        assert_eq!(held.steady("n1", &digest, 4, 110), None);
        assert_eq!(held.steady("n1", &digest, 3, 100 + SWEEP_EVERY_SECS), None);
        // A repeat keeps the names; another list stored meanwhile is not
        // overwritten by it.
        held.heard(
            "n1",
            None,
            Word {
                at_unix: 120,
                ..steady_word
            },
        );
        assert!(held.is_live("n1", "a", 110) && !held.is_live("n1", "c", 110));
        let other = Word {
            at_unix: 125,
            digest: list_digest(&["c"]),
            steady: None,
            ..steady_word
        };
        held.heard("n1", Some(ids(&["c"])), other);
        held.heard(
            "n1",
            None,
            Word {
                at_unix: 130,
                ..steady_word
            },
        );
        assert!(held.is_live("n1", "c", 110) && !held.is_live("n1", "a", 110));
        assert_eq!(held.steady("n1", &digest, 3, 130), None);
        // The same list judged not steady (a volume not recorded yet) and
        // stored after a steady repeat was judged: the repeat keeps it.
        held.heard(
            "n1",
            Some(ids(&["a"])),
            Word {
                steady: None,
                ..steady_word
            },
        );
        held.heard(
            "n1",
            None,
            Word {
                at_unix: 140,
                ..steady_word
            },
        );
        assert_eq!(held.steady("n1", &digest, 3, 110), None);
        assert!(!held.is_live("n1", "b", 90));
        held.release_failed("n1");
        held.heard("n1", Some(ids(&["a", "b"])), steady_word);
        assert_eq!(held.steady("n1", &digest, 3, 110), None, "a failed release");
    }
}
