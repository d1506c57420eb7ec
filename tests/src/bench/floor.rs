//! Floors: what the work kcred does costs when done by hand, with nothing
//! of kcred around it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// About a keytab holding three enctypes, and a pod's krb5.conf.
const KEYTAB: [u8; 600] = [7; 600];
const KRB5_CONF: &[u8] = b"[libdefaults]\n  default_realm = KCRED.TEST\n  dns_lookup_kdc = false\n[realms]\n  KCRED.TEST = {\n    kdc = 127.0.0.1:88\n  }\n";

/// Publishes volumes by hand into a directory, one per call, doing what
/// publishing a volume cannot avoid: make the target directory, mount a
/// tmpfs on it, write the keytab and krb5.conf into a timestamped
/// directory and switch `..data` to it by rename (as kubelet's atomic
/// writer does). Needs root; its mounts are undone when it is dropped.
pub struct Publisher {
    dir: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Publisher {
    /// Volumes go into `dir`, which must exist.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            mounted: Vec::new(),
        }
    }

    /// One more volume; how long it took.
    pub fn publish_one(&mut self) -> anyhow::Result<Duration> {
        let target = self.dir.join(format!("vol-{}", self.mounted.len()));
        let t = Instant::now();
        std::fs::create_dir(&target)?;
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=64k,mode=0750"),
        )?;
        self.mounted.push(target.clone());
        let ts = target.join("..2026_01_01_00_00_00.000000001");
        std::fs::create_dir(&ts)?;
        std::fs::write(ts.join("keytab"), KEYTAB)?;
        std::fs::write(ts.join("krb5.conf"), KRB5_CONF)?;
        std::os::unix::fs::symlink(
            ts.file_name().unwrap_or_default(),
            target.join("..data_tmp"),
        )?;
        std::fs::rename(target.join("..data_tmp"), target.join("..data"))?;
        std::os::unix::fs::symlink("..data/keytab", target.join("keytab"))?;
        std::os::unix::fs::symlink("..data/krb5.conf", target.join("krb5.conf"))?;
        Ok(t.elapsed())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        for m in self.mounted.drain(..) {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
    }
}

/// [`Publisher::publish_one`] `n` times, back to back.
pub fn publish(dir: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut publisher = Publisher::new(dir);
    (0..n).map(|_| publisher.publish_one()).collect()
}

/// Appends audit-sized lines to a file, each `fdatasync`ed.
pub struct Appender(std::fs::File);

impl Appender {
    /// Appends to `path`, creating it if missing.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self(
            OpenOptions::new().create(true).append(true).open(path)?,
        ))
    }

    /// One line, synced; how long it took.
    pub fn append_one(&mut self) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.0.write_all(&[b'x'; 400])?;
        self.0.sync_data()?;
        Ok(t.elapsed())
    }
}

/// [`Appender::append_one`] `n` times, back to back.
pub fn append_sync(path: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut appender = Appender::open(path)?;
    (0..n).map(|_| appender.append_one()).collect()
}

/// `stat` of each path, once per path.
pub fn stat(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(paths.len());
    for p in paths {
        let t = Instant::now();
        std::fs::metadata(p)?;
        times.push(t.elapsed());
    }
    Ok(times)
}
