//! Floors: what the work kcred does costs when done by hand, with nothing
//! of kcred around it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// About a keytab holding three enctypes, and a pod's krb5.conf.
const KEYTAB: [u8; 600] = [7; 600];
const KRB5_CONF: &[u8] = b"[libdefaults]\n  default_realm = KCRED.TEST\n  dns_lookup_kdc = false\n[realms]\n  KCRED.TEST = {\n    kdc = 127.0.0.1:88\n  }\n";

/// What publishing a volume cannot avoid: make the target directory,
/// mount a tmpfs on it, write the keytab and krb5.conf into a timestamped
/// directory and switch `..data` to it by rename (as kubelet's atomic
/// writer does), `n` times. Needs root; every mount is undone before
/// returning.
pub fn publish(dir: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    let mut mounted = Vec::with_capacity(n);
    let result = (|| -> anyhow::Result<()> {
        for i in 0..n {
            let target = dir.join(format!("vol-{i}"));
            let t = Instant::now();
            std::fs::create_dir(&target)?;
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=64k,mode=0750"),
            )?;
            mounted.push(target.clone());
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
            times.push(t.elapsed());
        }
        Ok(())
    })();
    for m in mounted {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    result.map(|()| times)
}

/// One audit-sized line appended and `fdatasync`ed, `n` times.
pub fn append_sync(path: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let line = [b'x'; 400];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&line)?;
        file.sync_data()?;
        times.push(t.elapsed());
    }
    Ok(times)
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
