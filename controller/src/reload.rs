//! Hot-reloaded configuration files (policy, static pods).
//!
//! A file is polled rather than watched with inotify: Kubernetes ConfigMaps
//! and config-management tools replace files through symlink swaps that
//! inotify watches miss, while a poll of the content digest sees every
//! change. A file that fails to parse is logged and the last good version
//! stays in force: a typo never empties the policy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Why a watched file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not valid.
    #[error("{path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with enough detail to fix it.
        reason: String,
    },
}

/// Parses a file's content into a value.
pub type Parser<T> = Box<dyn Fn(&Path, &str) -> Result<T, LoadError> + Send + Sync>;

/// A value loaded from a file, replaced whole when the file changes.
pub struct Watched<T> {
    /// None for a value fed by [`Watched::set`] (the directory sync).
    path: Option<PathBuf>,
    parse: Parser<T>,
    current: RwLock<(Arc<T>, [u8; 32])>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Loads the file once; fails if the first load fails (no silent empty
    /// policy at start).
    pub fn load(
        path: &Path,
        parse: impl Fn(&Path, &str) -> Result<T, LoadError> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, LoadError> {
        let parse: Parser<T> = Box::new(parse);
        let (value, digest) = read_and_parse(path, &parse)?;
        Ok(Arc::new(Watched {
            path: Some(path.to_path_buf()),
            parse,
            current: RwLock::new((Arc::new(value), digest)),
        }))
    }

    /// A value that no file backs: replaced only by [`Watched::set`], so
    /// the request paths read file and directory policies alike.
    pub fn fed(value: T) -> Arc<Self> {
        Arc::new(Watched {
            path: None,
            parse: Box::new(|path, _| {
                Err(LoadError::Invalid {
                    path: path.to_path_buf(),
                    reason: "not backed by a file".into(),
                })
            }),
            current: RwLock::new((Arc::new(value), [0; 32])),
        })
    }

    /// Replaces the value in force.
    pub fn set(&self, value: T) {
        crate::locks::write(&self.current).0 = Arc::new(value);
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&crate::locks::read(&self.current).0)
    }

    /// Reloads if the content changed; returns whether it did.
    pub fn reload(&self) -> Result<bool, LoadError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let unchanged = crate::locks::read(&self.current).1 == digest;
        if unchanged {
            return Ok(false);
        }
        let text = String::from_utf8(bytes).map_err(|_| LoadError::Invalid {
            path: path.clone(),
            reason: "not UTF-8".into(),
        })?;
        let value = (self.parse)(path, &text)?;
        let mut g = crate::locks::write(&self.current);
        *g = (Arc::new(value), digest);
        Ok(true)
    }

    /// Polls the file until the task is aborted; `on_change` sees each new
    /// version.
    pub fn spawn_poller(
        self: &Arc<Self>,
        every: Duration,
        on_change: impl Fn(Arc<T>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let w = Arc::clone(&me);
                match tokio::task::spawn_blocking(move || w.reload()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(path = ?me.path, "reloaded");
                        on_change(me.get());
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reload failed; keeping the last good version")
                    }
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
        })
    }
}

fn read_and_parse<T>(path: &Path, parse: &Parser<T>) -> Result<(T, [u8; 32]), LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let text = std::str::from_utf8(&bytes).map_err(|_| LoadError::Invalid {
        path: path.to_path_buf(),
        reason: "not UTF-8".into(),
    })?;
    Ok((parse(path, text)?, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_num(path: &Path, s: &str) -> Result<u32, LoadError> {
        s.trim().parse().map_err(|_| LoadError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{s:?} is not a number"),
        })
    }

    #[test]
    fn reload_swaps_on_change_and_keeps_last_good_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let w = Watched::load(&path, parse_num).expect("load");
        assert_eq!(*w.get(), 1);
        assert!(!w.reload().expect("unchanged"));
        std::fs::write(&path, "2").expect("write");
        assert!(w.reload().expect("changed"));
        assert_eq!(*w.get(), 2);
        std::fs::write(&path, "oops").expect("write");
        assert!(w.reload().is_err());
        assert_eq!(*w.get(), 2, "a bad file must not replace the good one");
    }
}
