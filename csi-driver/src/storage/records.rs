//! The records of every volume this node holds, in memory: the state
//! directory is read once when the driver starts, then only written.
//!
//! One driver process owns the state directory, so what it last wrote is
//! what the directory holds: kubelet's republishes, the heartbeat's list of
//! held volumes and the CSI probe are answered from memory, and nothing
//! rescans the directory while the driver runs. A record that did not
//! change is not written again (no fsync when nothing changed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Result;
use super::state::{PublishedVolume, StateDir};
use crate::support::lock::lock;

/// The state directory with its records held in memory.
#[derive(Debug)]
pub struct Records {
    dir: StateDir,
    held: Mutex<Held>,
}

/// The records by volume id, and the volumes recorded at each target (a
/// first publish asks whether its target is taken).
#[derive(Debug, Default)]
struct Held {
    by_id: BTreeMap<String, PublishedVolume>,
    by_target: HashMap<PathBuf, BTreeSet<String>>,
}

impl Held {
    fn get(&self, volume_id: &str) -> Option<&PublishedVolume> {
        self.by_id.get(volume_id)
    }

    fn values(&self) -> impl Iterator<Item = &PublishedVolume> {
        self.by_id.values()
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.by_id.keys()
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, record: PublishedVolume) {
        self.remove(&record.volume_id);
        self.by_target
            .entry(record.target.clone())
            .or_default()
            .insert(record.volume_id.clone());
        self.by_id.insert(record.volume_id.clone(), record);
    }

    fn remove(&mut self, volume_id: &str) {
        let Some(old) = self.by_id.remove(volume_id) else {
            return;
        };
        if let Some(ids) = self.by_target.get_mut(&old.target) {
            ids.remove(volume_id);
            if ids.is_empty() {
                self.by_target.remove(&old.target);
            }
        }
    }
}

impl Records {
    /// Reads every record of `dir` once.
    pub fn load(dir: StateDir) -> Result<Self> {
        let mut held = Held::default();
        for record in dir.list()? {
            held.insert(record);
        }
        Ok(Records {
            dir,
            held: Mutex::new(held),
        })
    }

    /// The volume's record. One not held is looked for on disk once more
    /// (a record that could not be read at start, say under a transient
    /// I/O error, is not lost for the process's life): a miss costs one
    /// failed open, and only volumes the driver does not know miss.
    pub fn get(&self, volume_id: &str) -> Option<PublishedVolume> {
        if let Some(r) = lock(&self.held).get(volume_id) {
            return Some(r.clone());
        }
        match self.dir.load(volume_id) {
            Ok(Some(r)) => {
                lock(&self.held).insert(r.clone());
                Some(r)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(volume = %volume_id, error = %e, "unreadable volume record");
                None
            }
        }
    }

    /// Every record, sorted by volume id.
    pub fn all(&self) -> Vec<PublishedVolume> {
        lock(&self.held).values().cloned().collect()
    }

    /// Every held volume's id, sorted.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.held).keys().cloned().collect()
    }

    /// How many volumes are held.
    pub fn len(&self) -> usize {
        lock(&self.held).len()
    }

    /// Whether no volume is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Another volume recorded at `target`, if any.
    pub fn holder_of(&self, target: &Path, except: &str) -> Option<String> {
        lock(&self.held)
            .by_target
            .get(target)?
            .iter()
            .find(|id| *id != except)
            .cloned()
    }

    /// Stores `record` (see [`StateDir::save`]), unless it is exactly what
    /// is held already. Returns whether it was written.
    pub fn save(&self, record: &PublishedVolume) -> Result<bool> {
        if lock(&self.held).get(&record.volume_id) == Some(record) {
            return Ok(false);
        }
        // A failed save left the disk as it was (a new file's rename is its
        // last step; an in-place rewrite is one write, which fails before
        // it changes anything or for an I/O error of the disk itself), which
        // is what is held.
        self.dir.save(record)?;
        lock(&self.held).insert(record.clone());
        Ok(true)
    }

    /// Forgets the volume, on disk first.
    pub fn remove(&self, volume_id: &str) -> Result<()> {
        self.dir.remove(volume_id)?;
        lock(&self.held).remove(volume_id);
        Ok(())
    }

    /// Whether the state directory is still there (for CSI Probe): a stat,
    /// not a scan.
    pub fn usable(&self) -> bool {
        self.dir.root().is_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::state::Phase;
    use crate::support::time::Deadline;

    fn record(id: &str, target: &str) -> PublishedVolume {
        PublishedVolume {
            volume_id: id.into(),
            target: target.into(),
            pod_namespace: "ns".into(),
            pod_name: "pod".into(),
            pod_uid: "u".into(),
            service_account: "sa".into(),
            readonly: false,
            uid: 1,
            gid: 1,
            // Whole seconds, as records are stored.
            published_at: Deadline::from_controller(1_777_636_800).unwrap(),
            phase: Phase::Mounted {
                generation: "g1".into(),
                refresh_at: None,
            },
        }
    }

    #[test]
    fn records_are_read_once_and_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        dir.save(&record("a", "/t/a")).unwrap();
        let records = Records::load(dir).unwrap();
        assert_eq!(records.ids(), ["a"]);

        assert!(records.save(&record("b", "/t/b")).unwrap());
        records.remove("a").unwrap();

        let on_disk: Vec<String> = StateDir::open(tmp.path())
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.volume_id)
            .collect();
        assert_eq!(on_disk, ["b"]);
        assert_eq!(records.ids(), ["b"]);
        assert_eq!(
            records.holder_of(Path::new("/t/b"), "c").as_deref(),
            Some("b")
        );
        assert_eq!(records.holder_of(Path::new("/t/b"), "b"), None);
        records.remove("b").unwrap();
        assert_eq!(records.holder_of(Path::new("/t/b"), "c"), None, "forgotten");
    }

    #[test]
    fn a_record_missed_at_start_is_found_when_its_volume_is_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::load(StateDir::open(tmp.path()).unwrap()).unwrap();
        // Not read at start (here: written after it; a transient read
        // error does the same).
        StateDir::open(tmp.path())
            .unwrap()
            .save(&record("a", "/t/a"))
            .unwrap();
        assert_eq!(records.get("a"), Some(record("a", "/t/a")));
        assert_eq!(records.ids(), ["a"], "held from then on");
        assert_eq!(records.get("b"), None);
    }

    #[test]
    fn an_unchanged_record_is_not_written_again() {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::load(StateDir::open(tmp.path()).unwrap()).unwrap();
        let rec = record("a", "/t/a");
        assert!(records.save(&rec).unwrap());
        let file = std::fs::read_dir(tmp.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        // Replace the file's content behind the cache's back: a write would
        // put the record back.
        std::fs::write(&file, b"sentinel").unwrap();

        assert!(!records.save(&rec).unwrap(), "nothing changed");
        assert_eq!(std::fs::read(&file).unwrap(), b"sentinel", "not rewritten");

        let mut moved = rec.clone();
        moved.phase = Phase::Mounted {
            generation: "g2".into(),
            refresh_at: None,
        };
        assert!(records.save(&moved).unwrap());
        let reread = StateDir::open(tmp.path()).unwrap().load("a").unwrap();
        assert_eq!(reread, Some(moved), "a change is written");
    }
}
