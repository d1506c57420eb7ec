//! Non-secret per-volume metadata on the node's disk, so a restarted driver
//! knows which volumes it published and can keep refreshing them.
//!
//! One JSON file per volume, named by the SHA-256 of the volume id: ids come
//! from the CSI caller and are untrusted, hashing makes any id a safe, fixed
//! length file name. Records hold identities and paths, never secret bytes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kcred_proto::kcred::v1::PodRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Result, StorageError};
use crate::support::time::Deadline;

/// Prefix of in-flight files; never listed, removed by [`StateDir::claim`].
const TMP_PREFIX: &str = ".tmp-";
const SUFFIX: &str = ".json";

/// Where a volume is in its life, as recorded on disk.
///
/// ```text
///  (none) ──record──▶ Publishing ──mounted and filled──▶ Mounted ──revoked──▶ Wiped
///                         │                               │  ▲
///                         └── failed: record removed      └──┘ refreshed
/// ```
/// A record is written *before* anything touches the node, so every mount
/// this driver made has a record, and nothing without one is ever written
/// into or unmounted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// The first publish is under way (or was interrupted by a crash):
    /// the target may hold an empty or partly written mount of ours.
    Publishing,
    /// The pod sees the files of `generation`.
    Mounted {
        /// The controller's digest of the files (equal digests, equal
        /// files).
        generation: String,
        /// When the controller asked to be asked again (a ticket or
        /// certificate nearing its end); `None`: only on kubelet's
        /// republish or a pushed update.
        refresh_at: Option<Deadline>,
    },
    /// The credentials were removed; the (empty) mount stays until kubelet
    /// unpublishes it, and nothing is fetched for it again.
    Wiped {
        /// Why.
        reason: WipeReason,
    },
}

/// Why a volume's credentials were removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WipeReason {
    /// An operator revoked the volume (or its pod).
    Revoked,
}

/// What the driver must remember about a published volume to resume it.
/// Deliberately no credential material: this lives on disk.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PublishedVolume {
    /// CSI volume id (untrusted; only ever used hashed as a file name).
    pub volume_id: String,
    /// Kubelet's target path: the mount point the pod sees.
    #[serde(rename = "target_path")]
    pub target: PathBuf,
    /// Pod the volume belongs to, for re-issuing its credentials.
    pub pod_namespace: String,
    /// Name of that pod.
    pub pod_name: String,
    /// UID of that pod, which tells a re-created pod of the same name apart.
    pub pod_uid: String,
    /// Service account whose role the credentials were issued for.
    pub service_account: String,
    /// Whether the pod sees the volume read-only.
    pub readonly: bool,
    /// Owner uid of the written files.
    pub uid: u32,
    /// Group of the written files.
    pub gid: u32,
    /// When the volume was first published.
    #[serde(rename = "published_at_unix")]
    pub published_at: Deadline,
    /// Where it is in its life.
    pub phase: Phase,
}

impl PublishedVolume {
    /// The pod, as the controller's API names it.
    pub fn pod(&self) -> PodRef {
        PodRef {
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
            uid: self.pod_uid.clone(),
            service_account: self.service_account.clone(),
        }
    }

    /// Whether the volume's files were wiped for good.
    pub fn is_wiped(&self) -> bool {
        matches!(self.phase, Phase::Wiped { .. })
    }
}

/// A record as stored, also in the shape older drivers wrote (a
/// `generation` string, `"wiped"` once wiped, and `refresh_after_unix`
/// with 0 for "no deadline"): those are read into the typed [`Phase`].
#[derive(Deserialize)]
struct Stored {
    volume_id: String,
    target_path: PathBuf,
    pod_namespace: String,
    pod_name: String,
    pod_uid: String,
    service_account: String,
    #[serde(default)]
    readonly: bool,
    uid: u32,
    gid: u32,
    published_at_unix: Deadline,
    #[serde(default)]
    phase: Option<Phase>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    refresh_after_unix: i64,
}

impl<'de> Deserialize<'de> for PublishedVolume {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = Stored::deserialize(d)?;
        let phase = match (s.phase, s.generation) {
            (Some(phase), _) => phase,
            (None, Some(g)) if g == "wiped" => Phase::Wiped {
                reason: WipeReason::Revoked,
            },
            (None, Some(generation)) => Phase::Mounted {
                generation,
                refresh_at: Deadline::from_controller(s.refresh_after_unix),
            },
            (None, None) => return Err(serde::de::Error::missing_field("phase")),
        };
        Ok(PublishedVolume {
            volume_id: s.volume_id,
            target: s.target_path,
            pod_namespace: s.pod_namespace,
            pod_name: s.pod_name,
            pod_uid: s.pod_uid,
            service_account: s.service_account,
            readonly: s.readonly,
            uid: s.uid,
            gid: s.gid,
            published_at: s.published_at_unix,
            phase,
        })
    }
}

/// Ownership of a state directory, held until dropped ([`StateDir::claim`]).
#[derive(Debug)]
pub struct StateDirOwner {
    _held: nix::fcntl::Flock<File>,
}

/// The driver's private state directory. One driver process per node owns it.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

impl StateDir {
    /// Creates `root` (and parents) if needed and restricts it to 0700, since
    /// records reveal which pods hold which identities.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io_err("creating state dir", &root))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod state dir", &root))?;
        Ok(Self { root })
    }

    /// Removes the temp files a save that crashed left. Only the owner
    /// ([`StateDir::claim`]) may: another process's are saves under way.
    fn remove_stale_temp_files(&self) -> Result<()> {
        for entry in fs::read_dir(&self.root).map_err(io_err("listing", &self.root))? {
            let Ok(entry) = entry else { continue };
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX)
                && let Err(e) = fs::remove_file(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "stale temp file");
            }
        }
        Ok(())
    }

    /// Makes this process the directory's one owner for as long as the
    /// returned lock lives (an exclusive `flock` on the directory); fails
    /// at once, naming the directory, while another process owns it (a
    /// rolling update that let two drivers overlap). The kernel drops the
    /// lock when its owner dies, however it dies. The new owner then
    /// removes the temp files a crashed save left.
    pub fn claim(&self) -> Result<StateDirOwner> {
        let dir = File::open(&self.root).map_err(io_err("opening state dir", &self.root))?;
        match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                let owner = StateDirOwner { _held: held };
                self.remove_stale_temp_files()?;
                Ok(owner)
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(StorageError::StateDirHeld(self.root.clone()))
            }
            Err((_, source)) => Err(StorageError::Sys {
                op: "locking state dir",
                path: self.root.clone(),
                source,
            }),
        }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<hex sha256(volume_id)>.json`: safe for any id, including `../..`.
    fn path_for(&self, volume_id: &str) -> PathBuf {
        let digest = Sha256::digest(volume_id.as_bytes());
        self.root.join(format!("{}{SUFFIX}", hex::encode(digest)))
    }

    /// Stores `v`, replacing any previous record for the same volume, so
    /// that a crash of the driver leaves the old or the new record, never
    /// half of one. A new record is written to a temp file and renamed
    /// into place, with room to spare (see [`ROOM`]); a record that fits
    /// its file is then rewritten in place, in one write to the file's
    /// one page, which a process crash cannot tear (the kernel copies the
    /// page whole). In place, a save creates and deletes no inode: with a
    /// temp file per save, every save deleted one, and on ext4 without a
    /// journal each file created skips the inodes deleted in the last few
    /// seconds one by one, so a storm of publishes slowed down as it went.
    ///
    /// Nothing is fsynced. A record describes a tmpfs mount, and a power
    /// loss takes every mount with it: whatever records survive it (old,
    /// new, or none) describe mounts that are gone, which the driver
    /// handles as after any reboot (kubelet's republish mounts again; the
    /// heartbeat reports the rest, which the controller calls stale). A
    /// process crash keeps what was written (the page cache is the
    /// kernel's). Syncing bought nothing but two journal commits a write.
    pub fn save(&self, v: &PublishedVolume) -> Result<()> {
        let path = self.path_for(&v.volume_id);
        let mut json = serde_json::to_vec_pretty(v).map_err(|source| StorageError::Encode {
            path: path.clone(),
            source,
        })?;
        if rewrite_in_place(&path, &json).map_err(io_err("rewriting state record", &path))? {
            return Ok(());
        }
        // JSON allows trailing white space: the room later saves rewrite.
        for room in [ROOM, IN_PLACE_MAX as usize] {
            if json.len() < room {
                json.resize(room, b' ');
                break;
            }
        }
        let tmp = self.root.join(format!(
            "{TMP_PREFIX}{:016x}",
            crate::support::random::u64()
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            fs::rename(&tmp, &path)
        })();
        written.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StorageError::Io {
                op: "writing state record",
                path,
                source,
            }
        })
    }

    /// The record for `volume_id`, or `None` if none was saved.
    pub fn load(&self, volume_id: &str) -> Result<Option<PublishedVolume>> {
        let path = self.path_for(volume_id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_err("reading state record", &path)(source)),
        };
        let record = parse(&path, &bytes)?;
        if record.volume_id != volume_id {
            return Err(StorageError::Corrupt {
                path,
                reason: format!("holds volume {:?}", record.volume_id),
            });
        }
        Ok(Some(record))
    }

    /// Forgets `volume_id`; succeeds if it was never saved (unpublish retries).
    pub fn remove(&self, volume_id: &str) -> Result<()> {
        let path = self.path_for(volume_id);
        match fs::remove_file(&path) {
            // Not synced either (see `save`): a record a power loss brings
            // back names a mount that is gone, which the heartbeat settles.
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_err("removing state record", &path)(source)),
        }
    }

    /// All readable records, sorted by volume id. A corrupt or misplaced file
    /// is logged and skipped so one bad entry cannot stop the driver from
    /// resuming every other volume; only an unreadable directory fails.
    pub fn list(&self) -> Result<Vec<PublishedVolume>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err("listing", &self.root))? {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(dir = %self.root.display(), error = %e, "skipping state entry");
                    continue;
                }
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(SUFFIX) {
                continue;
            }
            let path = entry.path();
            let record = fs::read(&path)
                .map_err(io_err("reading state record", &path))
                .and_then(|bytes| parse(&path, &bytes))
                .and_then(|r| {
                    if self.path_for(&r.volume_id) == path {
                        Ok(r)
                    } else {
                        Err(StorageError::Corrupt {
                            path: path.clone(),
                            reason: "file name does not match its volume id".into(),
                        })
                    }
                });
            match record {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable state record"),
            }
        }
        out.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        Ok(out)
    }
}

/// Bytes a new record file holds at least (white space after the JSON), so
/// that its later versions, which name a generation and a deadline, fit
/// it and are rewritten in place.
pub(super) const ROOM: usize = 2048;

/// Bytes a record file may hold to be rewritten in place: one page, which
/// one write copies whole.
const IN_PLACE_MAX: u64 = 4096;

/// Rewrites the record file at `path` in place with `json`, padded with
/// white space to the file's length, if it is a plain file of one page at
/// most (not a link of any kind, nothing that could block an open) and
/// `json` fits it; whether it did. Anything else is left to a new file
/// renamed over it.
fn rewrite_in_place(path: &Path, json: &[u8]) -> std::io::Result<bool> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits())
        .open(path)
    else {
        return Ok(false);
    };
    let meta = file.metadata()?;
    let len = meta.len();
    let Ok(room) = usize::try_from(len) else {
        return Ok(false);
    };
    if !meta.is_file() || meta.nlink() != 1 || len > IN_PLACE_MAX || json.len() > room {
        return Ok(false);
    }
    let mut page = Vec::with_capacity(room);
    page.extend_from_slice(json);
    page.resize(room, b' ');
    // One call: a short write of a regular file's page happens only on an
    // I/O error, which is reported.
    let written = file.write_at(&page, 0)?;
    if written != room {
        return Err(std::io::Error::new(
            ErrorKind::WriteZero,
            format!("wrote {written} of {room} bytes"),
        ));
    }
    Ok(true)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<PublishedVolume> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
