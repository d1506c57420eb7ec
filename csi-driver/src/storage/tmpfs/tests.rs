//! Tests for tmpfs mounts; most need root and are ignored otherwise.

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
