//! The Kerberos configuration of a process that logs in only with a keytab.
//!
//! MIT loads every client pre-authentication module it finds when a login
//! starts, whether or not the KDC will ask for it. Its SPAKE module links
//! OpenSSL's libcrypto, about 1.4 MiB of a node agent's resident memory
//! that would otherwise be 10. SPAKE protects a password that a captured
//! login could be used to guess; a host keytab made by `ktadd` (or an AD
//! machine account's) holds random keys, which encrypted-timestamp
//! pre-authentication exposes to no such guessing. So a keytab-only
//! process turns the module off. It must keep it for a key made from a
//! password, or where SPAKE is the only way in: the client's `krb5.conf`
//! sets `disable_encrypted_timestamp` or `clpreauth` `enable_only = spake`,
//! or the KDC's `kdc.conf` disables its `encrypted_timestamp` module.
//!
//! It does so the way an operator would: a profile of its own in front of
//! the one it was given, in `KRB5_CONFIG`, which MIT reads in order and
//! whose `disable` values it adds up across files. (MIT accepts a `module`
//! line only in the first file it reads: a profile that starts with one
//! cannot be used behind this one. The PKINIT module, where installed,
//! loads libcrypto too and is left as configured.)

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::AuthError;

/// The profile's file, in the directory the caller owns.
pub const FILE_NAME: &str = "krb5-keytab-login.conf";

/// What MIT reads when `KRB5_CONFIG` is unset (as built by Debian, Ubuntu
/// and Red Hat; a build of its own may add `/usr/local/etc/krb5.conf`).
const SYSTEM_PROFILE: &str = "/etc/krb5.conf";

const PROFILE: &str = "\
# Written by kcred at start: changes here are overwritten.
# This process logs in with a keytab's random keys, which SPAKE
# pre-authentication adds nothing to; its module would load libcrypto.
[plugins]
\tclpreauth = {
\t\tdisable = spake
\t}
";

/// Writes the profile into `dir` (made 0700 if missing) and returns the
/// `KRB5_CONFIG` to start Kerberos with: that profile, then `inherited`
/// (the process's own `KRB5_CONFIG`), else the system's. Set it before the
/// process has other threads, as MIT reads it from the environment.
pub fn without_spake(dir: &Path, inherited: Option<&OsStr>) -> Result<OsString, AuthError> {
    if dir.as_os_str().as_bytes().contains(&b':') {
        return Err(AuthError::invalid(
            "Kerberos profile directory",
            format!(
                "{} contains ':', which separates KRB5_CONFIG's files",
                dir.display()
            ),
        ));
    }
    let path = dir.join(FILE_NAME);
    write_atomically(dir, &path).map_err(|source| AuthError::Profile {
        path: path.clone(),
        source,
    })?;
    let mut value = path.into_os_string();
    value.push(":");
    match inherited.filter(|v| !v.is_empty()) {
        Some(files) => value.push(files),
        None => value.push(SYSTEM_PROFILE),
    }
    Ok(value)
}

/// Written whole or not at all: a half-written profile would fail every
/// login with a parse error.
fn write_atomically(dir: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The prefix the driver's state directory sweeps at start.
    let tmp = dir.join(format!(".tmp-{FILE_NAME}"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut file| file.write_all(PROFILE.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_goes_first_then_the_inherited_files_else_the_systems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join(FILE_NAME);
        let inherited = OsStr::new("/etc/a.conf:/etc/b.conf");
        assert_eq!(
            without_spake(dir.path(), Some(inherited)).expect("written"),
            OsString::from(format!("{}:/etc/a.conf:/etc/b.conf", own.display()))
        );
        for unset in [None, Some(OsStr::new(""))] {
            assert_eq!(
                without_spake(dir.path(), unset).expect("written"),
                OsString::from(format!("{}:/etc/krb5.conf", own.display()))
            );
        }
        assert_eq!(std::fs::read_to_string(&own).expect("read"), PROFILE);
    }

    #[test]
    fn a_directory_kerberos_could_not_name_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = dir.path().join("a:b");
        let err = without_spake(&odd, None).expect_err("':' refused");
        assert!(err.to_string().contains("contains ':'"), "{err}");
        assert!(!odd.exists());
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "").expect("write");
        let err = without_spake(&file.join("sub"), None).expect_err("not a directory");
        assert!(matches!(err, AuthError::Profile { .. }), "{err:?}");
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }
}
