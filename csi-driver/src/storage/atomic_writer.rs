//! kubelet's `AtomicWriter` (pkg/volume/util/atomic_writer.go), adapted.
//!
//! Layout of a volume root (the tmpfs mount point):
//!
//! ```text
//! ..2026_05_01_12_00_00.1f2e3d4c5b6a7988/   one generation, 0555, never modified
//! ..data -> ..2026_05_01_12_00_00.1f2e3d4c5b6a7988
//! krb5.keytab -> ..data/krb5.keytab
//! krb5.conf -> ..data/krb5.conf
//! ```
//!
//! A generation directory is filled completely, then published by renaming
//! a `..data_tmp` symlink over `..data`. Readers never see a partial file, and
//! a reader that opens `..data` once sees one consistent set of files. Every
//! mutation is an `*at` call relative to a root opened with `O_NOFOLLOW`, and
//! files are only ever created inside a directory we just made, so symlinks
//! planted by the pod are never written through.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::sys::statfs::{TMPFS_MAGIC, fstatfs};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, symlinkat, unlinkat};
use time::macros::format_description;
use zeroize::Zeroizing;

use super::{Result, StorageError};

const DATA_LINK: &str = "..data";
const DATA_TMP_LINK: &str = "..data_tmp";
/// Root-owned and read-only: the pod's uid cannot chmod it and add files, and
/// each file's own mode decides who may read it.
const GENERATION_DIR_MODE: u32 = 0o555;
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// One credential file of a payload. `content` is wiped from memory on drop.
#[derive(Clone)]
pub struct FileSpec {
    /// Plain file name as the pod sees it, e.g. `krb5.keytab`.
    pub name: String,
    /// The bytes; zeroized when dropped.
    pub content: Zeroizing<Vec<u8>>,
    /// Permission bits only (<= 0o777), e.g. 0o400 or 0o440 for an fsGroup.
    pub mode: u32,
}

impl fmt::Debug for FileSpec {
    // Never print secret bytes, not even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSpec")
            .field("name", &self.name)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// Who owns the written files: the pod's role account (or its fsGroup as gid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Owner of every file.
    pub uid: u32,
    /// Group of every file; the fsGroup when the files are group-readable.
    pub gid: u32,
}

/// Publishes payloads into one volume root. Not for concurrent use on the same
/// root: the caller serializes writes per volume.
#[derive(Clone, Debug)]
pub struct AtomicWriter {
    root: PathBuf,
}

impl AtomicWriter {
    /// `root` is the volume's tmpfs mount point.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The volume root this writer publishes into.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `files` (exactly those) the visible content of the volume, all
    /// at once. Returns whether a new generation was published: `false` means
    /// the current one already had the same names, bytes, modes and owner.
    ///
    /// Names are validated before anything is touched. Leftovers of an
    /// interrupted earlier write are removed first; a failure before the
    /// `..data` rename leaves the previous view intact.
    pub fn write(&self, files: &[FileSpec], owner: Ownership) -> Result<bool> {
        validate(files)?;
        let root = open(&self.root, DIR_FLAGS, Mode::empty()).map_err(self.sys("open", ""))?;
        let fs = fstatfs(&root).map_err(self.sys("fstatfs", ""))?;
        if fs.filesystem_type() != TMPFS_MAGIC {
            return Err(StorageError::NotTmpfs(self.root.clone()));
        }
        let current = self.data_link(&root)?;
        self.remove_leftovers(&root, current.as_deref())?;
        let unchanged = match &current {
            Some(gen_name) => self.generation_matches(&root, gen_name, files, owner)?,
            None => false,
        };
        if !unchanged {
            let gen_name = self.write_generation(&root, files, owner)?;
            if let Err(e) = self.swap_data_link(&root, &gen_name) {
                self.discard(&root, &gen_name);
                return Err(e);
            }
            tracing::debug!(root = %self.root.display(), generation = %gen_name, "published");
        }
        self.reconcile_visible_links(&root, files)?;
        if let (false, Some(old)) = (unchanged, current) {
            // Already unreachable; a failure here is retried by the next write.
            self.discard(&root, &old);
        }
        Ok(!unchanged)
    }

    /// The directory `..data` points at, if anything was published yet;
    /// its file name identifies the generation.
    pub fn current_generation_dir(&self) -> Result<Option<PathBuf>> {
        let root = open(&self.root, DIR_FLAGS, Mode::empty()).map_err(self.sys("open", ""))?;
        let Some(gen_name) = self.data_link(&root)? else {
            return Ok(None);
        };
        match fstatat(&root, gen_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if is_type(st.st_mode, SFlag::S_IFDIR) => Ok(Some(self.root.join(gen_name))),
            Ok(_) | Err(Errno::ENOENT) => Err(self.corrupt(DATA_LINK, "points to no directory")),
            Err(e) => Err(self.sys("stat", &gen_name)(e)),
        }
    }

    fn sys<'a>(&'a self, op: &'static str, name: &'a str) -> impl FnOnce(Errno) -> StorageError {
        move |source| StorageError::Sys {
            op,
            path: self.root.join(name),
            source,
        }
    }

    fn io<'a>(&'a self, op: &'static str, name: &'a str) -> impl Fn(io::Error) -> StorageError {
        move |source| StorageError::Io {
            op,
            path: self.root.join(name),
            source,
        }
    }

    fn corrupt(&self, name: &str, reason: &str) -> StorageError {
        StorageError::Corrupt {
            path: self.root.join(name),
            reason: reason.to_owned(),
        }
    }

    /// Target of `..data`, checked to be one of our generation names.
    fn data_link(&self, root: &OwnedFd) -> Result<Option<String>> {
        match readlinkat(root, DATA_LINK) {
            Ok(target) => match target.to_str() {
                Some(t) if is_generation_name(t) => Ok(Some(t.to_owned())),
                _ => Err(self.corrupt(DATA_LINK, "does not point to a generation directory")),
            },
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::EINVAL) => Err(self.corrupt(DATA_LINK, "is not a symlink")),
            Err(e) => Err(self.sys("readlink", DATA_LINK)(e)),
        }
    }

    /// Removes `..data_tmp` and generation dirs `..data` does not point to.
    fn remove_leftovers(&self, root: &OwnedFd, current: Option<&str>) -> Result<()> {
        match unlinkat(root, DATA_TMP_LINK, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => tracing::info!(root = %self.root.display(), "removed stale ..data_tmp"),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.sys("unlink", DATA_TMP_LINK)(e)),
        }
        for (name, _) in self.list("")? {
            if is_generation_name(&name) && Some(name.as_str()) != current {
                let root_path = self.root.display();
                tracing::info!(root = %root_path, generation = %name, "removing stale generation");
                self.remove_generation(root, &name)?;
            }
        }
        Ok(())
    }

    /// Entries (name, is_symlink) of `sub` (relative to the root). Names
    /// only: every later access goes through `*at` calls with `O_NOFOLLOW`.
    fn list(&self, sub: &str) -> Result<Vec<(String, bool)>> {
        let io = self.io("listing", sub);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.join(sub)).map_err(&io)? {
            let entry = entry.map_err(&io)?;
            // Non-UTF-8 names are never ours: we only create UTF-8 names.
            if let Ok(name) = entry.file_name().into_string() {
                out.push((name, entry.file_type().map_err(&io)?.is_symlink()));
            }
        }
        Ok(out)
    }

    fn remove_generation(&self, root: &OwnedFd, name: &str) -> Result<()> {
        match openat(root, name, DIR_FLAGS, Mode::empty()) {
            // Make it writable so removal works even without CAP_DAC_OVERRIDE.
            Ok(fd) => fchmod(&fd, Mode::S_IRWXU).map_err(self.sys("chmod", name))?,
            // Not a directory (e.g. a planted symlink): just unlink the entry.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return unlinkat(root, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(self.sys("unlink", name));
            }
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.sys("open", name)(e)),
        }
        // std's remove_dir_all never follows symlinks inside the tree.
        std::fs::remove_dir_all(self.root.join(name)).map_err(self.io("removing", name))
    }

    /// Best-effort removal for paths where the outcome is already decided.
    fn discard(&self, root: &OwnedFd, name: &str) {
        if let Err(e) = self.remove_generation(root, name) {
            tracing::warn!(error = %e, "could not remove generation; next write retries");
        }
    }

    fn generation_matches(
        &self,
        root: &OwnedFd,
        gen_name: &str,
        files: &[FileSpec],
        owner: Ownership,
    ) -> Result<bool> {
        // Open first: proves it is a real directory, not a planted symlink.
        let dir = match openat(root, gen_name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(self.sys("open", gen_name)(e)),
        };
        let present: BTreeSet<String> = self.list(gen_name)?.into_iter().map(|(n, _)| n).collect();
        let wanted: BTreeSet<String> = files.iter().map(|f| f.name.clone()).collect();
        if present != wanted {
            return Ok(false);
        }
        for spec in files {
            let path = format!("{gen_name}/{}", spec.name);
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = match openat(&dir, spec.name.as_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ELOOP) => return Ok(false),
                Err(e) => return Err(self.sys("open", &path)(e)),
            };
            let st = fstat(&fd).map_err(self.sys("stat", &path))?;
            let same_meta = is_type(st.st_mode, SFlag::S_IFREG)
                && st.st_mode & 0o7777 == spec.mode
                && (st.st_uid, st.st_gid) == (owner.uid, owner.gid)
                && u64::try_from(st.st_size).ok() == u64::try_from(spec.content.len()).ok();
            if !same_meta {
                return Ok(false);
            }
            let mut file = File::from(fd);
            let mut buf = Zeroizing::new(vec![0u8; spec.content.len()]);
            file.read_exact(&mut buf).map_err(self.io("read", &path))?;
            let mut probe = [0u8; 1];
            if file.read(&mut probe).map_err(self.io("read", &path))? != 0 || *buf != *spec.content
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Creates and fills a new generation dir; removes it again on failure.
    fn write_generation(
        &self,
        root: &OwnedFd,
        files: &[FileSpec],
        owner: Ownership,
    ) -> Result<String> {
        let gen_name = new_generation_name(SystemTime::now());
        mkdirat(root, gen_name.as_str(), Mode::S_IRWXU).map_err(self.sys("mkdir", &gen_name))?;
        let filled = (|| {
            let dir = openat(root, gen_name.as_str(), DIR_FLAGS, Mode::empty())
                .map_err(self.sys("open", &gen_name))?;
            for spec in files {
                self.write_file(&dir, &gen_name, spec, owner)?;
            }
            fchmod(&dir, Mode::from_bits_truncate(GENERATION_DIR_MODE))
                .map_err(self.sys("chmod", &gen_name))?;
            fsync(&dir).map_err(self.sys("fsync", &gen_name))
        })();
        match filled {
            Ok(()) => Ok(gen_name),
            Err(e) => {
                self.discard(root, &gen_name);
                Err(e)
            }
        }
    }

    fn write_file(
        &self,
        dir: &OwnedFd,
        gen_name: &str,
        spec: &FileSpec,
        owner: Ownership,
    ) -> Result<()> {
        let path = format!("{gen_name}/{}", spec.name);
        let mode = Mode::from_bits_truncate(spec.mode);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(dir, spec.name.as_str(), flags, mode).map_err(self.sys("create", &path))?;
        fchown(
            &fd,
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
        )
        .map_err(self.sys("chown", &path))?;
        // Explicit chmod: the umask may have narrowed the create mode.
        fchmod(&fd, mode).map_err(self.sys("chmod", &path))?;
        let mut file = File::from(fd);
        file.write_all(&spec.content)
            .map_err(self.io("write", &path))?;
        file.sync_all().map_err(self.io("fsync", &path))
    }

    /// The atomic switch: `..data_tmp` -> `gen_name`, renamed over `..data`.
    fn swap_data_link(&self, root: &OwnedFd, gen_name: &str) -> Result<()> {
        symlinkat(gen_name, root, DATA_TMP_LINK).map_err(self.sys("symlink", DATA_TMP_LINK))?;
        if let Err(e) = renameat(root, DATA_TMP_LINK, root, DATA_LINK) {
            let _ = unlinkat(root, DATA_TMP_LINK, UnlinkatFlags::NoRemoveDir);
            return Err(self.sys("rename", DATA_TMP_LINK)(e));
        }
        fsync(root).map_err(self.sys("fsync", ""))
    }

    /// Points `<name>` at `..data/<name>` for every file, and removes our
    /// links for names no longer in the payload.
    fn reconcile_visible_links(&self, root: &OwnedFd, files: &[FileSpec]) -> Result<()> {
        for spec in files {
            let name = spec.name.as_str();
            let want = format!("{DATA_LINK}/{name}");
            match readlinkat(root, name) {
                Ok(t) if t.to_str() == Some(want.as_str()) => continue,
                Ok(_) => unlinkat(root, name, UnlinkatFlags::NoRemoveDir)
                    .map_err(self.sys("unlink", name))?,
                Err(Errno::ENOENT) => {}
                Err(Errno::EINVAL) => {
                    return Err(self.corrupt(name, "not a symlink; would shadow a credential file"));
                }
                Err(e) => return Err(self.sys("readlink", name)(e)),
            }
            symlinkat(want.as_str(), root, name).map_err(self.sys("symlink", name))?;
        }
        let wanted: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
        for (name, is_link) in self.list("")? {
            if !is_link || name.starts_with("..") || wanted.contains(name.as_str()) {
                continue;
            }
            let ours = readlinkat(root, name.as_str())
                .ok()
                .and_then(|t| t.to_str().map(|t| t == format!("{DATA_LINK}/{name}")))
                .unwrap_or(false);
            if ours {
                unlinkat(root, name.as_str(), UnlinkatFlags::NoRemoveDir)
                    .map_err(self.sys("unlink", &name))?;
            }
        }
        Ok(())
    }
}

fn is_type(st_mode: u32, kind: SFlag) -> bool {
    st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

fn validate(files: &[FileSpec]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for f in files {
        let n = f.name.as_str();
        // ".."-prefixed names are reserved for ..data and generation dirs.
        if n.is_empty()
            || n == "."
            || n.starts_with("..")
            || n.contains(['/', '\0'])
            || n.len() > 255
        {
            return Err(StorageError::InvalidFileName(n.to_owned()));
        }
        if f.mode & !0o777 != 0 {
            return Err(StorageError::InvalidMode {
                name: n.to_owned(),
                mode: f.mode,
            });
        }
        if !seen.insert(n) {
            return Err(StorageError::DuplicateFileName(n.to_owned()));
        }
    }
    Ok(())
}

/// `..YYYY_MM_DD_HH_MM_SS.<16 hex>` (UTC): sortable, and unique thanks to
/// the random suffix (mkdirat fails rather than reuse a name).
fn new_generation_name(now: SystemTime) -> String {
    let stamp = time::OffsetDateTime::from(now)
        .format(format_description!(
            "[year]_[month]_[day]_[hour]_[minute]_[second]"
        ))
        // Only a year past 9999 fails to format; the suffix keeps it unique.
        .unwrap_or_else(|_| "9999_12_31_23_59_59".into());
    let r = crate::support::random::u64();
    format!("..{stamp}.{r:016x}")
}

/// Strict match of [`new_generation_name`], so cleanup only ever removes
/// directories this module created.
fn is_generation_name(s: &str) -> bool {
    let Some((ts, rnd)) = s.strip_prefix("..").and_then(|r| r.split_once('.')) else {
        return false;
    };
    let ts_ok = ts.len() == 19
        && ts.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 | 10 | 13 | 16 => b == b'_',
            _ => b.is_ascii_digit(),
        });
    ts_ok && rnd.len() == 16 && rnd.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
