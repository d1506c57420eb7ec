//! Bytes on the node: where a pod's credentials physically live.
//!
//! The model, and why:
//!
//! * **tmpfs only.** Every published volume is its own size-limited tmpfs
//!   mounted at kubelet's target path (`nosuid,nodev,noexec`). Secrets are
//!   written only inside that mount, so they live in RAM, are bounded in size,
//!   and vanish with the unmount (or a node reboot) without any shredding.
//!   The node's disk only ever holds [`state`]: non-secret metadata that lets
//!   the driver resume after a restart.
//! * **One symlink swap per update.** Kubelet re-publishes a volume every
//!   minute or so while the pod may be reading it. [`atomic_writer`] follows
//!   kubelet's own `AtomicWriter`: each version of the files is written into a
//!   fresh hidden generation directory, and a single `rename(2)` of the
//!   `..data` symlink switches the whole set at once. Each visible file
//!   (`krb5.keytab` → `..data/krb5.keytab`) therefore always resolves to a
//!   complete file, and a reader that resolves `..data` once sees one
//!   consistent generation of every file.
//! * **Crash safety by construction.** Nothing visible changes before that
//!   rename, so an interrupted write leaves the previous view intact; its
//!   leftovers are removed by the next write.

//!
//! Where the bytes go is behind one small trait, [`Medium`]: [`tmpfs`] is
//! the real one (needs root), [`dir`] keeps plain directories so the
//! volume lifecycle and its tests run without root.

pub mod atomic_writer;
pub mod dir;
pub mod records;
pub mod state;
pub mod tmpfs;
pub mod tmpfs_medium;

use std::path::{Path, PathBuf};

use atomic_writer::FileSpec;
use state::PublishedVolume;

/// What a target path holds right now, as far as the medium can tell.
/// Whose a mount is, only the records say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing there.
    Missing,
    /// An empty directory (a mount point waiting for its mount).
    EmptyDir,
    /// A directory with something in it: mounting over it would hide it.
    NonEmptyDir,
    /// A mount point of the medium's kind (a tmpfs).
    Mount,
    /// Anything else: another kind of mount, a file, a symlink.
    Foreign,
}

/// Where a volume's credential bytes live. Every method is idempotent
/// where kubelet's retries need it: mounting what is mounted keeps it,
/// unmounting what is gone succeeds.
pub trait Medium: Send + Sync {
    /// What `target` holds.
    fn inspect(&self, target: &Path) -> Result<Target>;
    /// Mounts a fresh, empty volume at the volume's target (creating the
    /// target directory if missing); read-only for the pod if the volume
    /// is, while the driver keeps a way to write it.
    fn mount(&self, volume: &PublishedVolume) -> Result<()>;
    /// Makes `files` (exactly those) the volume's visible content, at
    /// once; `false` if it already was. The last good files stay if it
    /// fails.
    fn write(&self, volume: &PublishedVolume, files: &[FileSpec]) -> Result<bool>;
    /// Unmounts the volume and removes its target directory.
    fn unmount(&self, volume: &PublishedVolume) -> Result<()>;
    /// Lets go of what the driver keeps for the volume apart from its
    /// target, touching nothing at the target (what is there now is not
    /// this driver's): a read-only volume's private view, its files wiped
    /// first.
    fn forget(&self, volume: &PublishedVolume) -> Result<()>;
}

/// Removes an empty mount-point directory; succeeds if it is gone.
pub fn remove_mount_point(target: &Path) -> Result<()> {
    match std::fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            op: "removing mount point",
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// Everything that can go wrong while putting bytes on the node; each variant
/// names the operation and the path so a log line alone locates the problem.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// mount(2) of the volume's tmpfs failed.
    #[error("mounting tmpfs at {path}: {source}")]
    Mount {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// umount2(2) failed even with the lazy-detach fallback.
    #[error("unmounting {path}: {source}")]
    Unmount {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// A raw system call (openat, renameat, statfs, ...) failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// The operation that failed.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: nix::Error,
    },
    /// A std I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another driver process holds the state directory: two would keep
    /// different records in memory and overwrite each other's.
    #[error("{0} is held by another kcred-csi-driver process on this node; one driver per node")]
    StateDirHeld(PathBuf),
    /// Mount options that would silently weaken isolation (e.g. `size=0`,
    /// which tmpfs reads as "unlimited").
    #[error("invalid tmpfs options: {0}")]
    InvalidTmpfsOptions(&'static str),
    /// Refused to write credentials into a directory that is not on tmpfs:
    /// they would land on the node's disk.
    #[error("refusing to write credentials to {0}: not on tmpfs")]
    NotTmpfs(PathBuf),
    /// A credential file name that is not a plain, non-hidden file name.
    #[error("invalid credential file name {0:?}")]
    InvalidFileName(String),
    /// The same file name appears twice in one payload.
    #[error("duplicate credential file name {0:?}")]
    DuplicateFileName(String),
    /// A file mode with bits outside 0o777 (setuid, setgid, sticky, type bits).
    #[error("invalid mode {mode:#o} for credential file {name:?}")]
    InvalidMode {
        /// The file name.
        name: String,
        /// The mode asked for.
        mode: u32,
    },
    /// Something on disk is not what this module would ever have written.
    #[error("corrupt or unexpected entry {path}: {reason}")]
    Corrupt {
        /// The entry.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A state record could not be serialized.
    #[error("encoding state record for {path}: {source}")]
    Encode {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// Shorthand used throughout the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
