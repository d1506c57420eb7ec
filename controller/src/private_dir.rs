//! Private working directories: where kadmin writes extracted keytabs and
//! kinit writes ticket caches for a moment. Each is created 0700 (and
//! restricted again if it existed), must be a real directory (not a
//! symlink someone planted), and is listed so its owner can clear what a
//! crashed run left behind.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Makes `dir` a private directory and returns what is in it.
pub fn prepare(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if !fs::symlink_metadata(dir)?.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_0700_and_lists_leftovers() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("work");
        assert!(prepare(&dir).expect("created").is_empty());
        fs::write(dir.join("left.keytab"), b"x").expect("write");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let left = prepare(&dir).expect("again");
        assert_eq!(left, vec![dir.join("left.keytab")]);
        let mode = fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_symlink_is_not_a_private_dir() {
        let root = tempfile::tempdir().expect("tempdir");
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        let link = root.path().join("work");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        assert!(prepare(&link).is_err());
    }
}
