//! A [`Medium`] of plain directories, for running the volume lifecycle
//! without root (its tests, development on a laptop).
//!
//! "Mounting" creates the target directory and remembers it as a mount;
//! writes replace the files in it; "unmounting" empties and removes it.
//! Nothing here is a security boundary: files are not chowned and the
//! bytes land on whatever filesystem the directory is on.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::atomic_writer::FileSpec;
use super::state::PublishedVolume;
use super::{Medium, Result, StorageError, Target};
use crate::support::lock::lock;

/// Plain directories standing in for tmpfs mounts.
#[derive(Debug, Default)]
pub struct DirMedium {
    mounts: Mutex<HashSet<PathBuf>>,
    fail_writes: AtomicBool,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

/// The regular files in `dir`, by name, with their bytes and modes.
fn files_in(dir: &Path) -> Result<BTreeMap<String, (Vec<u8>, u32)>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let entry = entry.map_err(io("listing", dir))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(io("stat", &path))?;
        if meta.is_file() {
            let bytes = std::fs::read(&path).map_err(io("read", &path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            out.insert(name, (bytes, meta.permissions().mode() & 0o777));
        }
    }
    Ok(out)
}

impl DirMedium {
    /// An empty medium: no mounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `target` look like a mount this driver did not make (another
    /// driver's tmpfs): creates the directory and counts it as a mount.
    pub fn simulate_foreign_mount(&self, target: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(target)?;
        lock(&self.mounts).insert(target.to_path_buf());
        Ok(())
    }

    /// Makes every later write fail (a full tmpfs, an I/O error), or work
    /// again.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    fn is_mount(&self, target: &Path) -> bool {
        lock(&self.mounts).contains(target)
    }
}

impl Medium for DirMedium {
    fn inspect(&self, target: &Path) -> Result<Target> {
        if self.is_mount(target) {
            return Ok(Target::Mount);
        }
        super::tmpfs::inspect(target)
    }

    fn mount(&self, volume: &PublishedVolume) -> Result<()> {
        if self.is_mount(&volume.target) {
            return Ok(());
        }
        super::tmpfs::create_mount_point(&volume.target)?;
        lock(&self.mounts).insert(volume.target.clone());
        Ok(())
    }

    fn write(&self, volume: &PublishedVolume, files: &[FileSpec]) -> Result<bool> {
        let root = &volume.target;
        if !self.is_mount(root) {
            return Err(StorageError::NotTmpfs(root.clone()));
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StorageError::Io {
                op: "write",
                path: root.clone(),
                source: std::io::Error::other("writes fail (simulated)"),
            });
        }
        let want: BTreeMap<String, (Vec<u8>, u32)> = files
            .iter()
            .map(|f| (f.name.clone(), (f.content.to_vec(), f.mode)))
            .collect();
        let have = files_in(root)?;
        if have == want {
            return Ok(false);
        }
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            let path = root.join(name);
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
        }
        for (name, (bytes, mode)) in &want {
            let path = root.join(name);
            // Replaced by rename, so a reader sees the old or the new file.
            let tmp = root.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))
                .map_err(io("chmod", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        }
        Ok(true)
    }

    fn unmount(&self, volume: &PublishedVolume) -> Result<()> {
        let root = &volume.target;
        if lock(&self.mounts).remove(root) {
            // The tmpfs's contents vanish with it.
            for name in files_in(root)?.keys() {
                let path = root.join(name);
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
        super::remove_mount_point(root)
    }

    fn forget(&self, _volume: &PublishedVolume) -> Result<()> {
        // Plain directories: nothing kept apart from the target.
        Ok(())
    }
}
