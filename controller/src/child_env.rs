//! The environment of the Kerberos tools the controller runs (`kadmin`,
//! `kinit`): only what they need, never the controller's own. The
//! controller's environment may hold settings meant for it alone (proxy
//! credentials, tokens, `KRB5_TRACE` pointing at a readable file,
//! `KRB5_KTNAME`, ...); a child inherits none of them.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use tokio::process::Command;

/// Every variable a child may receive.
pub const ALLOWED: [&str; 4] = ["PATH", "LC_ALL", "KRB5_CONFIG", "KRB5CCNAME"];

/// Clears `cmd`'s environment, then passes `PATH` (to find helpers),
/// `LC_ALL=C` (messages the controller parses stay in English),
/// `KRB5_CONFIG` (the configured one, else the controller's) and
/// `KRB5CCNAME` = `ccache`.
pub fn minimal(cmd: &mut Command, krb5_config: Option<&Path>, ccache: impl AsRef<OsStr>) {
    cmd.env_clear().env("LC_ALL", "C").env("KRB5CCNAME", ccache);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let conf = krb5_config
        .map(OsString::from)
        .or_else(|| std::env::var_os("KRB5_CONFIG"));
    if let Some(conf) = conf {
        cmd.env("KRB5_CONFIG", conf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_sees_only_the_variables_it_needs() {
        // The test process has plenty (HOME, CARGO_*, ...).
        assert!(std::env::vars().count() > ALLOWED.len());
        let mut cmd = Command::new("env");
        minimal(&mut cmd, Some(Path::new("/etc/krb5-test.conf")), "MEMORY:x");
        let out = cmd.output().await.expect("env runs");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        let mut want = ALLOWED.to_vec();
        if std::env::var_os("PATH").is_none() {
            want.retain(|n| *n != "PATH");
        }
        want.sort();
        assert_eq!(names, want, "{text}");
        assert!(text.contains("KRB5_CONFIG=/etc/krb5-test.conf"));
        assert!(text.contains("KRB5CCNAME=MEMORY:x"));
        assert!(text.contains("LC_ALL=C"));
    }
}
