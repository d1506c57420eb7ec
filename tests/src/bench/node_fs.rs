//! A node's file system for benches: a tmpfs of its own.
//!
//! This project's test machine keeps its files on ext4 without a journal,
//! where creating a file checks every inode deleted in the last seconds,
//! one by one: a bench that creates thousands of directories right after
//! another run's cleanup pays seconds for that alone, which no node with a
//! journaled file system pays. Benches put the nodes' side (kubelet
//! directory, drivers' state) here, and the controller's store and audit
//! log, whose `fdatasync`s are part of what is measured, on the disk.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A tmpfs mounted on a fresh directory, unmounted (with whatever is
/// mounted under it) on drop. Needs root.
pub struct NodeFs(tempfile::TempDir);

impl NodeFs {
    /// Mounts a fresh one.
    pub fn mount() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("size=256m,mode=0755"),
        )?;
        Ok(NodeFs(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for NodeFs {
    fn drop(&mut self) {
        let _ = umount2(self.0.path(), MntFlags::MNT_DETACH);
    }
}
