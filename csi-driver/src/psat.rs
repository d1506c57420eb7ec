//! The driver pod's own projected service-account token: its node
//! identity where nodes have no host keytab (psat).
//!
//! kubelet writes the token into the pod's projected volume and replaces
//! it before it expires (an atomic symlink swap). The file is checked on
//! every call (one `stat`) and read again when it changed, so calls always
//! carry the token kubelet last wrote, never an expired one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use kcred_auth::BearerToken;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// What it holds is not a token.
    #[error("token file {path}: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kcred_auth::bearer::BearerError,
    },
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A token file, read again when it changes.
pub struct TokenFile {
    path: PathBuf,
    held: Mutex<Option<(Stamp, BearerToken)>>,
}

impl TokenFile {
    /// Reads the token at `path` once, so a wrong path stops the driver at
    /// start.
    pub fn open(path: &Path) -> Result<Self, TokenFileError> {
        let file = TokenFile {
            path: path.to_path_buf(),
            held: Mutex::new(None),
        };
        file.current()?;
        Ok(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token the file holds now.
    pub fn current(&self) -> Result<BearerToken, TokenFileError> {
        let read_err = |source| TokenFileError::Read {
            path: self.path.clone(),
            source,
        };
        let now = stamp(&self.path).map_err(read_err)?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, token)) = held.as_ref()
            && *s == now
        {
            return Ok(token.clone());
        }
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&self.path).map_err(read_err)?);
        let token =
            BearerToken::new(text.as_str()).map_err(|source| TokenFileError::Malformed {
                path: self.path.clone(),
                source,
            })?;
        *held = Some((now, token.clone()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_is_read_again_and_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first.token.sig\n").unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.current().unwrap().expose(), "first.token.sig");
        // As kubelet rotates it: a new file swapped in.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second.token.longer-sig\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.current().unwrap().expose(), "second.token.longer-sig");
        std::fs::remove_file(&path).unwrap();
        let err = file.current().unwrap_err();
        assert!(err.to_string().contains("token file"), "{err}");
        assert!(TokenFile::open(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn an_empty_token_file_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let err = TokenFile::open(&path).err().unwrap();
        assert!(matches!(err, TokenFileError::Malformed { .. }), "{err}");
    }
}
