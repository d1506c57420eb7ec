//! Per-volume tmpfs mounts: the only place credential bytes may live.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};

use super::{Result, StorageError};

/// Source name shown in /proc/mounts, so operators can tell our mounts apart.
const SOURCE: &str = "kcred";

/// Mode of the mount-point directory we create; it is hidden by the mount and
/// only visible (empty) when nothing is mounted.
const MOUNT_POINT_MODE: u32 = 0o750;

/// How the volume's tmpfs root looks to the pod. `size_bytes` caps memory use
/// (tmpfs rounds it up to whole pages); `uid`/`gid`/`mode` apply to the
/// mount's root directory, the outer gate in front of the files' own modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmpfsOptions {
    /// Upper bound on memory use; must be > 0.
    pub size_bytes: u64,
    /// Owner of the mount root; 0 keeps the pod from chmod-ing it.
    pub uid: u32,
    /// Group of the mount root, e.g. the pod's gid or fsGroup.
    pub gid: u32,
    /// Mode of the mount root, e.g. 0o550 or 0o555.
    pub mode: u32,
}

impl TmpfsOptions {
    fn mount_data(&self) -> Result<String> {
        // tmpfs treats size=0 as "no limit": refuse rather than silently let
        // one volume eat node memory.
        if self.size_bytes == 0 {
            return Err(StorageError::InvalidTmpfsOptions("size_bytes must be > 0"));
        }
        if self.mode & !0o7777 != 0 {
            return Err(StorageError::InvalidTmpfsOptions(
                "mode has bits outside 0o7777",
            ));
        }
        Ok(format!(
            "size={},mode={:04o},uid={},gid={}",
            self.size_bytes, self.mode, self.uid, self.gid
        ))
    }
}

/// Mounts a fresh `nosuid,nodev,noexec` tmpfs at `target`, creating the
/// `target` directory itself if missing (its parent must exist: kubelet owns
/// it, and creating more would hide a wrong path).
///
/// Idempotent: if `target` already is a tmpfs mount point, nothing is mounted
/// on top of it (stacking would hide the live files from the pod) and the
/// existing mount is kept as is, even if `opts` differ.
pub fn mount_tmpfs(target: &Path, opts: &TmpfsOptions) -> Result<()> {
    let data = opts.mount_data()?;
    create_mount_point(target)?;
    if is_tmpfs_mount(target)? {
        tracing::debug!(path = %target.display(), "tmpfs already mounted, not stacking");
        return Ok(());
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // `noswap` (Linux 6.4+) keeps secrets off swap on nodes that have it;
    // older kernels refuse the option, and then it is mounted without.
    let with_noswap = format!("{data},noswap");
    let mounted = nix::mount::mount(
        Some(SOURCE),
        target,
        Some("tmpfs"),
        flags,
        Some(with_noswap.as_str()),
    );
    let mounted = match mounted {
        Err(nix::errno::Errno::EINVAL) => {
            tracing::warn!(path = %target.display(), "kernel has no tmpfs noswap; mounting without it");
            nix::mount::mount(
                Some(SOURCE),
                target,
                Some("tmpfs"),
                flags,
                Some(data.as_str()),
            )
        }
        other => other,
    };
    mounted.map_err(|source| StorageError::Mount {
        path: target.to_path_buf(),
        source,
    })?;
    tracing::debug!(path = %target.display(), %data, "mounted tmpfs");
    Ok(())
}

/// Makes sure `target` is a directory, creating it (not its parents:
/// kubelet owns them, and creating more would hide a wrong path) if
/// missing. Anything else there, a symlink included, is refused: mount(2)
/// would follow it somewhere else.
pub fn create_mount_point(target: &Path) -> Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(_) => Err(StorageError::Corrupt {
            path: target.to_path_buf(),
            reason: "mount target exists and is not a directory".into(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(MOUNT_POINT_MODE)
            .create(target)
            .map_err(|source| StorageError::Io {
                op: "creating mount point",
                path: target.to_path_buf(),
                source,
            }),
        Err(source) => Err(StorageError::Io {
            op: "inspecting mount target",
            path: target.to_path_buf(),
            source,
        }),
    }
}

const LOCKED_DOWN: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Bind-mounts the mount at `source` onto `target` (an existing
/// directory), then sets the new mount point's own flags: read-only or
/// writable, always `nosuid,nodev,noexec`. Read-only is a per-mount-point
/// flag: the same tmpfs can be read-only at the pod's target and writable
/// at the driver's private view.
pub fn bind(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    let err = |source| StorageError::Mount {
        path: target.to_path_buf(),
        source,
    };
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err)?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | LOCKED_DOWN;
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
        let _ = unmount(target);
        return Err(err(e));
    }
    Ok(())
}

/// What `path` holds: nothing, an empty or non-empty directory, a tmpfs
/// mount point, or something else.
pub fn inspect(path: &Path) -> Result<super::Target> {
    use super::Target;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Target::Missing),
        Err(source) => {
            return Err(StorageError::Io {
                op: "stat",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_dir() {
        return Ok(Target::Foreign);
    }
    if is_mount_point(path, &meta)? {
        return Ok(if is_tmpfs(path)? {
            Target::Mount
        } else {
            Target::Foreign
        });
    }
    let mut entries = std::fs::read_dir(path).map_err(|source| StorageError::Io {
        op: "listing",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(if entries.next().is_none() {
        Target::EmptyDir
    } else {
        Target::NonEmptyDir
    })
}

/// The device number of the filesystem at `path` (following symlinks):
/// two mount points show the same tmpfs exactly when their devices match.
pub fn device(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|source| StorageError::Io {
            op: "stat",
            path: path.to_path_buf(),
            source,
        })
}

/// Unmounts whatever is mounted at `target`, for NodeUnpublishVolume.
///
/// Idempotent because kubelet retries unpublish: a missing path or a path that
/// is not a mount point is success. If the mount is busy (a process still has
/// a file open), it is lazily detached: it disappears from the tree at once,
/// and the kernel frees the memory when the last reference goes away. The
/// directory itself is left for the caller to remove.
pub fn unmount(target: &Path) -> Result<()> {
    // UMOUNT_NOFOLLOW: never unmount something a symlink points at.
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => {
            tracing::warn!(path = %target.display(), "mount busy, detaching lazily");
            match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
                Err(source) => Err(StorageError::Unmount {
                    path: target.to_path_buf(),
                    source,
                }),
            }
        }
        Err(source) => Err(StorageError::Unmount {
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is itself the root of a tmpfs mount (not merely a directory
/// somewhere on a tmpfs), so publish can tell "already mounted" from "needs a
/// mount" and refuse to write secrets anywhere else.
///
/// Mount-point detection compares `st_dev` of `path` with that of `path/..`:
/// two `lstat` calls, no parsing, and no dependence on how `path` is spelled
/// (symlinked ancestors, escaping of spaces in /proc/self/mountinfo). Its known
/// blind spot, a bind mount from the same filesystem, cannot produce a false
/// positive here, and every fresh tmpfs gets its own anonymous device number.
/// A symlink is never a mount point; a missing path is `Ok(false)`.
pub fn is_tmpfs_mount(path: &Path) -> Result<bool> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StorageError::Io {
                op: "stat",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_dir() {
        return Ok(false);
    }
    Ok(is_mount_point(path, &meta)? && is_tmpfs(path)?)
}

/// Whether the directory `path` (with metadata `meta`) is a mount point.
fn is_mount_point(path: &Path, meta: &std::fs::Metadata) -> Result<bool> {
    // `..` of a mount root is resolved by the kernel into the parent mount.
    let parent = path.join("..");
    let parent_meta = std::fs::metadata(&parent).map_err(|source| StorageError::Io {
        op: "stat",
        path: parent.clone(),
        source,
    })?;
    // The root directory "/" is its own parent: treat it as a mount point.
    Ok(meta.dev() != parent_meta.dev() || meta.ino() == parent_meta.ino())
}

fn is_tmpfs(path: &Path) -> Result<bool> {
    let fs = statfs(path).map_err(|source| StorageError::Sys {
        op: "statfs",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(fs.filesystem_type() == TMPFS_MAGIC)
}

/// Test fixture shared by the storage tests: a real tmpfs under a tempdir,
/// unmounted on drop so a failing assertion never leaks a mount.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use std::path::PathBuf;

    pub(crate) struct MountedTmpfs {
        pub(crate) path: PathBuf,
        // Dropped after the unmount in `Drop`, so the tempdir is removable.
        _dir: tempfile::TempDir,
    }

    impl MountedTmpfs {
        pub(crate) fn new(opts: &TmpfsOptions) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("mount");
            mount_tmpfs(&path, opts).expect("mount tmpfs");
            Self { path, _dir: dir }
        }
    }

    impl Drop for MountedTmpfs {
        fn drop(&mut self) {
            // Loop in case a test stacked mounts; detach so busy never blocks.
            for _ in 0..4 {
                if nix::mount::umount2(&self.path, MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
