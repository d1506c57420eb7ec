//! The real [`Medium`]: one size-limited tmpfs per volume, written through
//! [`AtomicWriter`].
//!
//! A read-only volume is one tmpfs seen twice: mounted first at a private
//! view under the driver's own directory (writable, for refreshes), then
//! bound onto the pod's target and remounted `bind,ro`. After a driver
//! restart the private view may be gone (it lived in the old container's
//! mount namespace); it is bound again from the target on the next write.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::atomic_writer::{AtomicWriter, FileSpec, Ownership};
use super::state::PublishedVolume;
use super::tmpfs::{self, TmpfsOptions};
use super::{Medium, Result, StorageError, Target};

/// Per-volume tmpfs mounts.
#[derive(Debug, Clone)]
pub struct TmpfsMedium {
    size_bytes: u64,
    views: PathBuf,
}

impl TmpfsMedium {
    /// Volumes of at most `size_bytes`; read-only volumes keep their
    /// writable views under `views` (created 0700 when first needed).
    pub fn new(size_bytes: u64, views: impl Into<PathBuf>) -> Self {
        TmpfsMedium {
            size_bytes,
            views: views.into(),
        }
    }

    /// The private writable view of a read-only volume.
    fn view_of(&self, volume_id: &str) -> PathBuf {
        self.views
            .join(hex::encode(Sha256::digest(volume_id.as_bytes())))
    }

    fn options(&self, volume: &PublishedVolume) -> TmpfsOptions {
        // The root is root's, readable by the role account's group: a pod
        // that owned it could chmod it and tamper with `..data`.
        TmpfsOptions {
            size_bytes: self.size_bytes,
            uid: 0,
            gid: volume.gid,
            mode: 0o550,
        }
    }

    fn create_views_dir(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.views)
            .map_err(|source| StorageError::Io {
                op: "creating views directory",
                path: self.views.clone(),
                source,
            })
    }

    /// The directory writes go through: the target itself, or for a
    /// read-only volume its private view, bound again from the target if
    /// it is missing (after a restart).
    fn writable_root(&self, volume: &PublishedVolume) -> Result<PathBuf> {
        if !volume.readonly {
            return Ok(volume.target.clone());
        }
        let view = self.view_of(&volume.volume_id);
        if !tmpfs::is_tmpfs_mount(&volume.target)? {
            return Err(StorageError::NotTmpfs(volume.target.clone()));
        }
        if tmpfs::is_tmpfs_mount(&view)? && tmpfs::device(&view)? == tmpfs::device(&volume.target)?
        {
            return Ok(view);
        }
        // Whatever is at the view is not this volume's tmpfs: replace it.
        tmpfs::unmount(&view)?;
        self.create_views_dir()?;
        tmpfs::create_mount_point(&view)?;
        tmpfs::bind(&volume.target, &view, false)?;
        tracing::info!(volume = %volume.volume_id, "writable view of a read-only volume restored");
        Ok(view)
    }
}

impl Medium for TmpfsMedium {
    fn inspect(&self, target: &Path) -> Result<Target> {
        tmpfs::inspect(target)
    }

    fn mount(&self, volume: &PublishedVolume) -> Result<()> {
        let opts = self.options(volume);
        if !volume.readonly {
            return tmpfs::mount_tmpfs(&volume.target, &opts);
        }
        let view = self.view_of(&volume.volume_id);
        self.create_views_dir()?;
        tmpfs::mount_tmpfs(&view, &opts)?;
        let bound = tmpfs::create_mount_point(&volume.target)
            .and_then(|()| tmpfs::bind(&view, &volume.target, true));
        if let Err(e) = bound {
            let _ = tmpfs::unmount(&view);
            let _ = super::remove_mount_point(&view);
            return Err(e);
        }
        Ok(())
    }

    fn write(&self, volume: &PublishedVolume, files: &[FileSpec]) -> Result<bool> {
        let root = self.writable_root(volume)?;
        AtomicWriter::new(root).write(
            files,
            Ownership {
                uid: volume.uid,
                gid: volume.gid,
            },
        )
    }

    fn unmount(&self, volume: &PublishedVolume) -> Result<()> {
        tmpfs::unmount(&volume.target)?;
        if volume.readonly {
            let view = self.view_of(&volume.volume_id);
            tmpfs::unmount(&view)?;
            super::remove_mount_point(&view)?;
        }
        super::remove_mount_point(&volume.target)
    }

    fn forget(&self, volume: &PublishedVolume) -> Result<()> {
        if !volume.readonly {
            return Ok(());
        }
        let view = self.view_of(&volume.volume_id);
        if tmpfs::is_tmpfs_mount(&view)? {
            // The tmpfs may live on where it was bound (a container's copy
            // of the target): no credential stays in it.
            AtomicWriter::new(view.clone()).write(
                &[],
                Ownership {
                    uid: volume.uid,
                    gid: volume.gid,
                },
            )?;
            tmpfs::unmount(&view)?;
        }
        super::remove_mount_point(&view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::state::Phase;
    use crate::support::time::Deadline;
    use nix::mount::MntFlags;
    use nix::sys::statvfs::{FsFlags, statvfs};
    use zeroize::Zeroizing;

    /// A target and a views directory in a tempdir; detaches whatever is
    /// still mounted there on drop, so a failed assertion leaks no mount.
    struct Fixture {
        dir: tempfile::TempDir,
        medium: TmpfsMedium,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("pod")).unwrap();
            let medium = TmpfsMedium::new(1 << 20, dir.path().join("views"));
            Fixture { dir, medium }
        }

        fn volume(&self, readonly: bool) -> PublishedVolume {
            PublishedVolume {
                volume_id: "csi-v1".into(),
                target: self.dir.path().join("pod/mount"),
                pod_namespace: "web".into(),
                pod_name: "web-0".into(),
                pod_uid: "u1".into(),
                service_account: "default".into(),
                readonly,
                uid: 1500,
                gid: 1500,
                published_at: Deadline::now(),
                phase: Phase::Publishing,
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let view = self.medium.view_of("csi-v1");
            for path in [self.dir.path().join("pod/mount"), view] {
                while nix::mount::umount2(&path, MntFlags::MNT_DETACH).is_ok() {}
            }
        }
    }

    fn files(content: &str) -> Vec<FileSpec> {
        vec![FileSpec {
            name: "secret".into(),
            content: Zeroizing::new(content.as_bytes().to_vec()),
            mode: 0o440,
        }]
    }

    #[test]
    #[ignore = "needs root"]
    fn a_read_only_volume_is_read_only_for_the_pod_and_written_through_the_private_view() {
        let f = Fixture::new();
        let v = f.volume(true);
        f.medium.mount(&v).unwrap();
        assert!(f.medium.write(&v, &files("v1")).unwrap());
        assert_eq!(std::fs::read(v.target.join("secret")).unwrap(), b"v1");
        let refused = std::fs::write(v.target.join("planted"), b"x").unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(nix::libc::EROFS));
        assert!(
            statvfs(&v.target)
                .unwrap()
                .flags()
                .contains(FsFlags::ST_RDONLY)
        );

        assert!(f.medium.write(&v, &files("v2")).unwrap());
        assert_eq!(std::fs::read(v.target.join("secret")).unwrap(), b"v2");

        f.medium.unmount(&v).unwrap();
        assert!(!v.target.exists());
        assert!(!f.medium.view_of(&v.volume_id).exists());
    }

    #[test]
    #[ignore = "needs root"]
    fn a_lost_private_view_is_bound_again_from_the_target() {
        let f = Fixture::new();
        let v = f.volume(true);
        f.medium.mount(&v).unwrap();
        f.medium.write(&v, &files("v1")).unwrap();
        // A restarted driver container: its private mount is gone.
        let view = f.medium.view_of(&v.volume_id);
        tmpfs::unmount(&view).unwrap();

        assert!(f.medium.write(&v, &files("v2")).unwrap());

        assert_eq!(std::fs::read(v.target.join("secret")).unwrap(), b"v2");
        assert_eq!(
            tmpfs::device(&view).unwrap(),
            tmpfs::device(&v.target).unwrap()
        );
        assert!(std::fs::write(v.target.join("planted"), b"x").is_err());
    }

    #[test]
    #[ignore = "needs root"]
    fn a_writable_volume_is_one_tmpfs_at_the_target_and_nothing_else() {
        let f = Fixture::new();
        let v = f.volume(false);
        f.medium.mount(&v).unwrap();
        assert_eq!(f.medium.inspect(&v.target).unwrap(), Target::Mount);
        f.medium.write(&v, &files("v1")).unwrap();
        assert!(!f.medium.view_of(&v.volume_id).exists(), "no private view");
        f.medium.unmount(&v).unwrap();
        assert_eq!(f.medium.inspect(&v.target).unwrap(), Target::Missing);
        f.medium.unmount(&v).unwrap();
    }
}
