//! Running MIT `kinit` on private scratch files, and reading its verdict.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{TicketConfig, TicketError};

/// Names of per-operation directories inside the work dir; anything else
/// there is left alone.
pub(super) const SCRATCH_PREFIX: &str = "kcred-tkt-";
/// A ccache with one TGT is about 1 KiB; refuse to slurp anything absurd.
const MAX_CCACHE: u64 = 1 << 20;
/// Longest kinit message kept in an error.
const MAX_MESSAGE: usize = 300;

/// Why `kinit` did not succeed.
pub(super) enum Failure {
    /// It could not be run or waited for.
    Local(String),
    /// It ran longer than allowed and was killed.
    Timeout(Duration),
    /// It exited non-zero with this message.
    Said(String),
}

/// `FILE:<path>`, so a path with a colon is not read as a cache type.
pub(super) fn file_name(path: &Path) -> OsString {
    let mut name = OsString::from("FILE:");
    name.push(path);
    name
}

/// Runs `kinit -c FILE:ccache ARGS` with a cleared environment, killing it
/// on timeout or when the caller's future is dropped.
pub(super) async fn run(
    cfg: &TicketConfig,
    args: Vec<OsString>,
    ccache: &Path,
) -> Result<(), Failure> {
    let mut cmd = tokio::process::Command::new(&cfg.kinit);
    cmd.arg("-c")
        .arg(file_name(ccache))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    crate::child_env::minimal(&mut cmd, cfg.krb5_config.as_deref(), file_name(ccache));
    let child = cmd
        .spawn()
        .map_err(|e| Failure::Local(format!("running {}: {e}", cfg.kinit.display())))?;
    let out = match tokio::time::timeout(cfg.timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|e| Failure::Local(format!("waiting for kinit: {e}")))?,
        Err(_) => return Err(Failure::Timeout(cfg.timeout)),
    };
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let msg = match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => line
            .trim_start_matches("kinit: ")
            .chars()
            .take(MAX_MESSAGE)
            .collect(),
        None => format!("kinit exited with {}", out.status),
    };
    Err(Failure::Said(msg))
}

/// Maps a kinit failure (C-locale messages of MIT krb5 1.20) to an error.
pub(super) fn classify(principal: &str, failure: Failure, renewing: bool) -> TicketError {
    const UNAVAILABLE: &[&str] = &["Cannot contact any KDC", "Cannot find KDC"];
    // "Ticket expired": past renew_till; "can't fulfill": not renewable.
    const NOT_RENEWABLE: &[&str] = &["Ticket expired", "KDC can't fulfill requested option"];
    const REFUSED: &[&str] = &[
        "not found in Kerberos database",
        "Password incorrect",
        "Preauthentication failed",
        "Keytab contains no suitable keys",
        "Key table entry not found",
        "Decrypt integrity check failed",
        "Specified version of key is not available",
        "credentials have been revoked",
        "entry in database has expired",
        "Password has expired",
        "KDC policy rejects request",
        "KDC has no support for encryption type",
    ];
    let msg = match failure {
        Failure::Local(m) => return TicketError::Failed(m),
        Failure::Timeout(t) => {
            return TicketError::KdcUnavailable(format!("kinit did not finish within {t:?}"));
        }
        Failure::Said(m) => m,
    };
    let has = |list: &[&str]| list.iter().any(|p| msg.contains(p));
    if has(UNAVAILABLE) {
        TicketError::KdcUnavailable(msg)
    } else if renewing && has(NOT_RENEWABLE) {
        TicketError::NotRenewable(msg)
    } else if has(REFUSED) {
        TicketError::Refused {
            principal: principal.to_string(),
            message: msg,
        }
    } else {
        TicketError::Failed(msg)
    }
}

/// One operation's private directory; zeroed and removed when dropped.
pub(super) struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    /// Creates `work_dir/kcred-tkt-<pid>-<n>` (0700), trying further `n`s
    /// if a name is taken.
    pub fn create(work_dir: &Path, mut next: impl FnMut() -> u64) -> Result<Self, TicketError> {
        let pid = std::process::id();
        for _ in 0..16 {
            let dir = work_dir.join(format!("{SCRATCH_PREFIX}{pid}-{}", next()));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch { dir }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    let msg = format!("creating {}: {e}", dir.display());
                    return Err(TicketError::Failed(msg));
                }
            }
        }
        Err(TicketError::Failed("no free scratch directory name".into()))
    }

    /// Writes a new 0600 file.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, TicketError> {
        let path = self.dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| TicketError::Failed(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    }

    /// Reads a file back into memory that is zeroed on drop.
    pub fn read(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, TicketError> {
        let path = self.dir.join(name);
        let err = |e: io::Error| TicketError::Failed(format!("reading {}: {e}", path.display()));
        let file = fs::File::open(&path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if len > MAX_CCACHE {
            return Err(TicketError::Malformed(format!("ccache is {len} bytes")));
        }
        // Sized up front so the buffer never reallocates, leaving copies.
        let mut buf = Zeroizing::new(Vec::with_capacity(len as usize));
        file.take(len).read_to_end(&mut buf).map_err(err)?;
        Ok(buf)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        wipe_dir(&self.dir);
    }
}

/// Overwrites the regular files in `dir` with zeros, then removes it (a
/// stray non-directory is just removed). Best effort: there is nobody to
/// report to, and the next `KdcClient::new` retries leftovers.
pub(super) fn wipe_dir(dir: &Path) {
    if fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        let _ = fs::remove_file(dir);
        return;
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            // Only regular files: opening a FIFO for writing would block.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Ok(mut f) = fs::OpenOptions::new().write(true).open(entry.path()) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = io::copy(&mut io::repeat(0).take(len), &mut f);
            }
        }
    }
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove ticket scratch dir");
    }
}
