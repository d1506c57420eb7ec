//! From a password to keys, with the salt the KDC announces.
//!
//! AD salts an account's AES keys with a string of its choosing (for users
//! usually `REALMsAMAccountName`, for computers `REALMhost<name>.<domain>`;
//! a renamed account keeps its old salt). kcred never guesses it: MIT's
//! `ktutil addent -password ... -f` sends the KDC an AS-REQ without
//! pre-authentication and derives the key (PBKDF2 + DK, RFC 3962) with the
//! salt and iteration count of the ETYPE-INFO2 the KDC answers with. MIT's
//! code writes the keytab; the password reaches it on stdin only.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zeroize::Zeroizing;

use super::AdConfig;
use crate::kadmin::KadminError;
use crate::keytab::Keytab;

/// The enctypes kcred derives: AES only, as `msDS-SupportedEncryptionTypes`
/// is set.
const ENCTYPES: [&str; 2] = ["aes256-cts-hmac-sha1-96", "aes128-cts-hmac-sha1-96"];

/// Derives `client`'s keys for `kvno` from `password`; `client` is the
/// name the KDC knows the account by (`sAMAccountName@REALM`).
pub async fn keytab(
    cfg: &AdConfig,
    client: &str,
    kvno: u32,
    password: &str,
) -> Result<Keytab, KadminError> {
    let suffix = crate::crypto::random::u64().unwrap_or_default();
    let file = cfg.work_dir.join(format!("derive-{suffix:016x}.keytab"));
    let _cleanup = RemoveOnDrop(file.clone());
    let mut script = Zeroizing::new(String::new());
    for enctype in ENCTYPES {
        script.push_str(&format!(
            "addent -password -p {client} -k {kvno} -e {enctype} -f\n{password}\n"
        ));
    }
    script.push_str(&format!("wkt {}\nquit\n", file.display()));

    let mut cmd = Command::new(&cfg.ktutil);
    crate::child_env::minimal(&mut cmd, cfg.krb5_config.as_deref(), "MEMORY:kcred-ad");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| KadminError::Failed(format!("cannot start ktutil: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| KadminError::Failed(format!("writing to ktutil: {e}")))?;
    }
    let out = tokio::time::timeout(cfg.timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            KadminError::Unavailable(format!("ktutil did not finish within {:?}", cfg.timeout))
        })?
        .map_err(|e| KadminError::Failed(format!("waiting for ktutil: {e}")))?;
    // ktutil exits 0 whatever its commands did; its errors are the lines
    // naming a command ("addent: ...", "wkt: ...").
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("addent:") || l.starts_with("wkt:"))
        .collect();
    if !errors.is_empty() {
        let message = errors.join("; ");
        return Err(if message.contains("Cannot contact any KDC") {
            KadminError::Unavailable(message)
        } else if message.contains("not found in Kerberos database") {
            KadminError::NoSuchPrincipal(format!("{client}: {message}"))
        } else {
            KadminError::Failed(format!("deriving keys of {client}: {message}"))
        });
    }
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| KadminError::Failed(format!("ktutil wrote no keytab for {client}: {e}")))?;
    Keytab::parse(Zeroizing::new(bytes))
        .map_err(|e| KadminError::Failed(format!("keytab derived for {client}: {e}")))
}

/// Deletes the transient keytab whatever happens.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.0.display(), error = %e, "cannot remove transient keytab");
        }
    }
}
