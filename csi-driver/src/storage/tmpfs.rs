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
mod tests {
    use super::fixture::MountedTmpfs;
    use super::*;
    use nix::sys::statvfs::{FsFlags, statvfs};

    const OPTS: TmpfsOptions = TmpfsOptions {
        size_bytes: 1 << 20,
        uid: 4242,
        gid: 4343,
        mode: 0o750,
    };

    #[test]
    #[ignore = "needs root"]
    fn mount_creates_locked_down_tmpfs_with_owner_mode_and_size() {
        let m = MountedTmpfs::new(&OPTS);
        assert!(is_tmpfs_mount(&m.path).unwrap());
        let meta = std::fs::metadata(&m.path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        assert_eq!(meta.mode() & 0o7777, 0o750);
        let vfs = statvfs(&m.path).unwrap();
        for flag in [FsFlags::ST_NOSUID, FsFlags::ST_NODEV, FsFlags::ST_NOEXEC] {
            assert!(vfs.flags().contains(flag), "missing {flag:?}");
        }
        let bytes = vfs.blocks() * vfs.fragment_size();
        assert_eq!(bytes, 1 << 20);
    }

    #[test]
    #[ignore = "needs root"]
    fn mount_is_idempotent_and_never_stacks() {
        let m = MountedTmpfs::new(&OPTS);
        std::fs::write(m.path.join("marker"), b"x").unwrap();
        mount_tmpfs(&m.path, &OPTS).unwrap();
        // Had a second tmpfs been stacked on top, the marker would be hidden.
        assert!(m.path.join("marker").exists());
        unmount(&m.path).unwrap();
        assert!(!is_tmpfs_mount(&m.path).unwrap());
    }

    #[test]
    fn mount_rejects_unlimited_size_and_symlink_target() {
        let dir = tempfile::tempdir().unwrap();
        let zero = TmpfsOptions {
            size_bytes: 0,
            ..OPTS
        };
        let err = mount_tmpfs(&dir.path().join("m"), &zero).unwrap_err();
        assert!(matches!(err, StorageError::InvalidTmpfsOptions(_)), "{err}");
        assert!(!dir.path().join("m").exists());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = mount_tmpfs(&link, &OPTS).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn is_tmpfs_mount_false_for_plain_dirs_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_tmpfs_mount(dir.path()).unwrap());
        assert!(!is_tmpfs_mount(&dir.path().join("missing")).unwrap());
    }

    #[test]
    fn inspect_tells_missing_empty_and_non_empty_directories_apart() {
        use crate::storage::Target;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            inspect(&dir.path().join("missing")).unwrap(),
            Target::Missing
        );
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        assert_eq!(inspect(&d).unwrap(), Target::EmptyDir);
        std::fs::write(d.join("f"), b"x").unwrap();
        assert_eq!(inspect(&d).unwrap(), Target::NonEmptyDir);
        assert_eq!(inspect(&d.join("f")).unwrap(), Target::Foreign);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert_eq!(inspect(&link).unwrap(), Target::Foreign);
    }

    #[test]
    #[ignore = "needs root"]
    fn inspect_sees_tmpfs_mounts_and_other_mounts() {
        use crate::storage::Target;
        let m = MountedTmpfs::new(&OPTS);
        assert_eq!(inspect(&m.path).unwrap(), Target::Mount);
        // A mount of another filesystem (ramfs) is not a tmpfs to use.
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        nix::mount::mount(
            Some("other"),
            &dst,
            Some("ramfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let seen = inspect(&dst);
        nix::mount::umount2(&dst, MntFlags::MNT_DETACH).unwrap();
        assert_eq!(seen.unwrap(), Target::Foreign);
    }

    #[test]
    #[ignore = "needs root"]
    fn a_read_only_bind_shares_the_tmpfs_but_refuses_writes() {
        let m = MountedTmpfs::new(&OPTS);
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        bind(&m.path, &ro, true).unwrap();
        std::fs::write(m.path.join("f"), b"through the writable view").unwrap();
        let read = std::fs::read(ro.join("f"));
        let write = std::fs::write(ro.join("g"), b"x");
        let dev = (device(&ro).unwrap(), device(&m.path).unwrap());
        let flags = statvfs(&ro).unwrap().flags();
        unmount(&ro).unwrap();
        assert_eq!(read.unwrap(), b"through the writable view");
        assert_eq!(
            write.unwrap_err().raw_os_error(),
            Some(nix::libc::EROFS),
            "the read-only view refuses writes"
        );
        assert_eq!(dev.0, dev.1, "one tmpfs, two views");
        for flag in [
            FsFlags::ST_RDONLY,
            FsFlags::ST_NOSUID,
            FsFlags::ST_NODEV,
            FsFlags::ST_NOEXEC,
        ] {
            assert!(flags.contains(flag), "missing {flag:?}");
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn is_tmpfs_mount_false_for_subdirs_and_symlinks_of_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let m = MountedTmpfs::new(&OPTS);
        // A directory on the tmpfs is tmpfs but not a mount point.
        let sub = m.path.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_tmpfs_mount(&sub).unwrap());
        // A symlink to a tmpfs mount is not one either.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&m.path, &link).unwrap();
        assert!(!is_tmpfs_mount(&link).unwrap());
    }

    #[test]
    #[ignore = "needs root"]
    fn unmount_is_idempotent_for_unmounted_and_missing_paths() {
        let m = MountedTmpfs::new(&OPTS);
        unmount(&m.path).unwrap();
        assert!(!is_tmpfs_mount(&m.path).unwrap());
        unmount(&m.path).unwrap();
        unmount(&m.path.join("missing")).unwrap();
    }

    #[test]
    #[ignore = "needs root"]
    fn unmount_detaches_a_busy_mount() {
        let m = MountedTmpfs::new(&OPTS);
        std::fs::write(m.path.join("f"), b"secret").unwrap();
        let open = std::fs::File::open(m.path.join("f")).unwrap();
        unmount(&m.path).unwrap();
        assert!(!is_tmpfs_mount(&m.path).unwrap());
        assert!(!m.path.join("f").exists());
        drop(open);
    }
}
