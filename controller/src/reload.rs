//! Hot-reloaded configuration files (policy, static pods).
//!
//! A file is polled rather than watched with inotify: Kubernetes ConfigMaps
//! and config-management tools replace files through symlink swaps that
//! inotify watches miss, while a poll of the content digest sees every
//! change. A file that fails to parse is logged (once per bad version) and
//! the last good version stays in force: a typo never empties the policy.
//! `SIGHUP` ([`ReloadTrigger`]) makes every file be checked at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::metrics::Metrics;

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
    path: PathBuf,
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
            path: path.to_path_buf(),
            parse,
            current: RwLock::new((Arc::new(value), digest)),
        }))
    }

    /// A value that no file backs, replaced only by [`Watched::set`] (the
    /// directory sync), so request paths read file and directory policies
    /// alike. Never poll it: it has no file to read.
    pub fn fed(value: T) -> Arc<Self> {
        Arc::new(Watched {
            path: PathBuf::new(),
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
        self.reload_keyed().map_err(|(_, e)| e)
    }

    /// Like [`Watched::reload`]; a failure comes with what identifies it
    /// (the content's digest, or the error for an unreadable file), so one
    /// bad version is reported once however often it is polled.
    fn reload_keyed(&self) -> Result<bool, (String, LoadError)> {
        let bytes = std::fs::read(&self.path).map_err(|source| {
            let e = LoadError::Read {
                path: self.path.clone(),
                source,
            };
            (e.to_string(), e)
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let unchanged = crate::locks::read(&self.current).1 == digest;
        if unchanged {
            return Ok(false);
        }
        let key = hex::encode(digest);
        let text = String::from_utf8(bytes).map_err(|_| {
            let e = LoadError::Invalid {
                path: self.path.clone(),
                reason: "not UTF-8".into(),
            };
            (key.clone(), e)
        })?;
        let value = (self.parse)(&self.path, &text).map_err(|e| (key, e))?;
        let mut g = crate::locks::write(&self.current);
        *g = (Arc::new(value), digest);
        Ok(true)
    }

    /// Polls the file every `every`, and at once when `trigger` fires
    /// (SIGHUP), until the task is aborted; `on_change` sees each new
    /// version. A bad version is logged once (not at every poll) and the
    /// return to a good one is logged too; `file` names the file in the
    /// reload metrics.
    pub fn spawn_poller(
        self: &Arc<Self>,
        every: Duration,
        trigger: &ReloadTrigger,
        file: &'static str,
        metrics: Arc<Metrics>,
        on_change: impl Fn(Arc<T>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let mut fired = trigger.subscribe();
        let ok = metrics.config_reload_ok.with_label_values(&[file]);
        let loaded_at = metrics.config_reload_success.with_label_values(&[file]);
        ok.set(1);
        loaded_at.set(now_unix());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // What the last failure was, while the file stays bad.
            let mut failing: Option<String> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    Ok(()) = fired.changed() => {}
                }
                let w = Arc::clone(&me);
                let outcome = match tokio::task::spawn_blocking(move || w.reload_keyed()).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::error!(error = %e, "reload task failed");
                        continue;
                    }
                };
                let path = me.path.display();
                match outcome {
                    Ok(changed) => {
                        if failing.take().is_some() {
                            tracing::info!(%path, "reload recovered: the file is valid again");
                        }
                        ok.set(1);
                        if changed {
                            tracing::info!(%path, "reloaded");
                            loaded_at.set(now_unix());
                            on_change(me.get());
                        }
                    }
                    Err((key, e)) => {
                        ok.set(0);
                        if failing.as_deref() != Some(key.as_str()) {
                            tracing::error!(
                                error = %e,
                                "reload failed; keeping the last good version (logged again only when the file changes)"
                            );
                            failing = Some(key);
                        }
                    }
                }
            }
        })
    }
}

/// Makes every hot-reloaded file be checked at once (on `SIGHUP`), instead
/// of at its next poll.
#[derive(Clone)]
pub struct ReloadTrigger(Arc<watch::Sender<()>>);

impl Default for ReloadTrigger {
    fn default() -> Self {
        ReloadTrigger(Arc::new(watch::channel(()).0))
    }
}

impl ReloadTrigger {
    /// Every poller checks its file now.
    pub fn fire(&self) {
        self.0.send_replace(());
    }

    /// What a poller waits on.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
