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
}
