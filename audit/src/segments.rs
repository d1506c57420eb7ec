//! The log as a series of files, so it can run for years: the active file
//! (the configured path) is sealed when it grows past a size or an age and
//! a fresh one begun. Sealed segments keep the configured name with the
//! first record's sequence number appended (`audit.log.000000000101`), so
//! they sort by name and say where they belong.
//!
//! The chain does not restart: the first record of a segment carries the
//! `hash` of the last record of the previous one, and sequence numbers run
//! on. Concatenating the segments in order gives one valid log, which is
//! what [`verify()`](super::verify()), [`query`](super::query()) and
//! [`export`](super::export()) read.
//!
//! Sealing never leaves the configured path missing: the active file is
//! first hard-linked under its sealed name, then a new empty file is
//! renamed over the configured path. A crash in between leaves the sealed
//! name and the active file as the same file; opening the log undoes that
//! half-done sealing ([`undo_interrupted_seal`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::LineReader;
use super::signer::sync_parent;

/// Digits of the sequence number in a sealed segment's name.
const SEQ_DIGITS: usize = 12;

/// When the active segment is sealed and a new one begun.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Seal before a record, or the records of one append, would take the
    /// segment past this many bytes (0: no size limit). A segment always
    /// holds at least one append's records: one append is never split.
    pub max_bytes: u64,
    /// Seal before writing once the segment's first record is this old.
    pub max_age: Option<Duration>,
}

impl Rotation {
    /// Whether the next record (`line_len` bytes, written at `now_ms`) goes
    /// into a new segment. `first_ms` is the active segment's first record's
    /// time, `None` while it is empty (an empty segment is never sealed).
    pub(super) fn due(
        &self,
        active_len: u64,
        first_ms: Option<i64>,
        line_len: usize,
        now_ms: i64,
    ) -> bool {
        let Some(first_ms) = first_ms else {
            return false;
        };
        let too_big = self.max_bytes > 0 && active_len + line_len as u64 > self.max_bytes;
        let too_old = self.max_age.is_some_and(|age| {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            now_ms.saturating_sub(first_ms) >= age_ms
        });
        too_big || too_old
    }
}

/// One file of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The file.
    pub path: PathBuf,
    /// The first record's sequence number, from a sealed segment's name;
    /// `None` for the active file.
    pub named_first: Option<u64>,
}

/// The segments of the log whose active file is `path`: sealed ones by
/// their first sequence number, then the active file if it exists. A log
/// that was never rotated (or a single exported file) is one segment.
pub fn segments(path: &Path) -> io::Result<Vec<Segment>> {
    let (dir, name) = split(path)?;
    let prefix = format!("{name}.");
    let mut sealed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(seq) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .filter(|digits| {
                digits.len() == SEQ_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            continue;
        };
        sealed.push(Segment {
            path: entry.path(),
            named_first: Some(seq),
        });
    }
    sealed.sort_by_key(|s| s.named_first);
    if path.exists() {
        sealed.push(Segment {
            path: path.to_path_buf(),
            named_first: None,
        });
    }
    Ok(sealed)
}

/// The name the active file `path` gets when sealed with `first_seq` as its
/// first record.
pub fn sealed_name(path: &Path, first_seq: u64) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{first_seq:0SEQ_DIGITS$}"));
    PathBuf::from(name)
}

/// Seals the active file `path` (whose first record is `first_seq`) and
/// puts a new, empty, locked file in its place, which is returned. On error
/// the caller keeps appending to the old file: a later open undoes
/// whatever half of the sealing was done.
pub(super) fn seal(path: &Path, first_seq: u64) -> io::Result<File> {
    let sealed = sealed_name(path, first_seq);
    match std::fs::hard_link(path, &sealed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && same_file(path, &sealed)? => {}
        Err(e) => return Err(e),
    }
    sync_parent(path)?;
    let next = next_name(path);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&next)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(io::Error::other(format!(
                "{} is locked by another process",
                next.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    std::fs::rename(&next, path)?;
    sync_parent(path)?;
    Ok(file)
}

/// Undoes a sealing a crash interrupted: the newest sealed name still
/// being the active file (a second name for it) is removed, and so is a
/// new file that was never put in place.
pub(super) fn undo_interrupted_seal(path: &Path) -> io::Result<()> {
    let next = next_name(path);
    if next.exists() {
        std::fs::remove_file(&next)?;
    }
    let all = segments(path)?;
    if let [.., last_sealed, active] = all.as_slice()
        && active.named_first.is_none()
        && same_file(&last_sealed.path, &active.path)?
    {
        tracing::warn!(
            segment = %last_sealed.path.display(),
            "audit log: undoing a segment sealing a crash interrupted"
        );
        std::fs::remove_file(&last_sealed.path)?;
        sync_parent(path)?;
    }
    Ok(())
}

/// The newest sealed segment, if any.
pub(super) fn last_sealed(path: &Path) -> io::Result<Option<PathBuf>> {
    Ok(segments(path)?
        .into_iter()
        .rev()
        .find(|s| s.named_first.is_some())
        .map(|s| s.path))
}

/// The sequence number and time of a file's first record, if it has a
/// readable one (only used to time rotation and name the sealed file).
pub(super) fn first_record(file: &File) -> Option<(u64, i64)> {
    let mut lines = LineReader::new(file);
    let rec = lines.next_line().ok()??.parse().ok()?;
    Some((rec.seq, rec.unix_ms))
}

fn next_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".next");
    PathBuf::from(name)
}

fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    is_same_file(&std::fs::metadata(a)?, b)
}

/// Whether `path` names the file `held` describes (another name for it).
pub(super) fn is_same_file(held: &std::fs::Metadata, path: &Path) -> io::Result<bool> {
    let other = std::fs::metadata(path)?;
    Ok(held.dev() == other.dev() && held.ino() == other.ino())
}

fn split(path: &Path) -> io::Result<(&Path, &str)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("the audit log path has no UTF-8 file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}
