//! The directory side: finding an account, resetting its password, reading
//! its key version, with OpenLDAP's `ldapsearch` / `ldapmodify` over LDAPS.
//!
//! Password writes are rare (first issue and rotation of an account), so a
//! child process per operation costs nothing that matters, and the TLS and
//! LDAP encoding stay in a mature client. Secrets never reach a command
//! line: the bind password is read by the tool from its file (`-y`), the new
//! password travels in the LDIF on stdin.

use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use zeroize::Zeroizing;

use super::AdConfig;
use crate::kadmin::KadminError;

/// `msDS-SupportedEncryptionTypes` for AES128 + AES256 only.
const AES_ONLY: u32 = 0x18;

/// An account as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its distinguished name.
    pub dn: String,
    /// Its logon name, the client name its keys are salted with.
    pub sam_account_name: String,
    /// Its service principal names (without realm).
    pub spns: Vec<String>,
    /// Its `msDS-KeyVersionNumber`.
    pub kvno: u32,
}

/// What to look an account up by.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// The account holding this service principal name (`HTTP/web.example`).
    Spn(&'a str),
    /// The account with this logon name.
    SamAccountName(&'a str),
}

impl Lookup<'_> {
    fn filter(&self) -> String {
        match self {
            Lookup::Spn(spn) => format!("(servicePrincipalName={})", escape_filter(spn)),
            Lookup::SamAccountName(sam) => format!(
                "(&(objectClass=user)(sAMAccountName={}))",
                escape_filter(sam)
            ),
        }
    }
}

/// RFC 4515 escaping of a filter value.
fn escape_filter(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => out.push_str(&format!("\\{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn base_command(cfg: &AdConfig, program: &std::path::Path) -> Command {
    let mut cmd = Command::new(program);
    crate::child_env::minimal(&mut cmd, cfg.krb5_config.as_deref(), "MEMORY:kcred-ad");
    cmd.env("LDAPTLS_CACERT", &cfg.ca_file)
        .env("LDAPTLS_REQCERT", "demand")
        .args(["-x", "-H", &cfg.ldap_url, "-D", &cfg.bind_dn, "-y"])
        .arg(&cfg.bind_password_file)
        .args([
            "-o",
            &format!("nettimeout={}", cfg.timeout.as_secs().max(1)),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs an LDAP tool with `stdin`, classifying failures by its exit code.
async fn run(
    cfg: &AdConfig,
    mut cmd: Command,
    what: &str,
    stdin: &[u8],
) -> Result<String, KadminError> {
    let mut child = cmd
        .spawn()
        .map_err(|e| KadminError::Failed(format!("cannot start {what}: {e}")))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin)
            .await
            .map_err(|e| KadminError::Failed(format!("writing to {what}: {e}")))?;
    }
    let out = tokio::time::timeout(cfg.timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            KadminError::Unavailable(format!("{what} did not finish within {:?}", cfg.timeout))
        })?
        .map_err(|e| KadminError::Failed(format!("waiting for {what}: {e}")))?;
    if out.status.success() {
        return String::from_utf8(out.stdout)
            .map_err(|_| KadminError::Failed(format!("{what} printed non-UTF-8 output")));
    }
    let message = format!(
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ")
    );
    // OpenLDAP exits with the LDAP result code (255 for "can't contact").
    Err(match out.status.code() {
        Some(255) | Some(51) | Some(52) | None => KadminError::Unavailable(message),
        Some(32) => KadminError::NoSuchPrincipal(message),
        Some(code) => KadminError::Refused {
            principal: what.to_string(),
            message: format!("LDAP result {code}: {message}"),
        },
    })
}

/// Finds exactly one account; none or several is an error naming `lookup`.
pub async fn find(cfg: &AdConfig, lookup: Lookup<'_>) -> Result<Account, KadminError> {
    let mut cmd = base_command(cfg, &cfg.ldapsearch);
    cmd.args(["-LLL", "-o", "ldif-wrap=no", "-b", &cfg.base_dn])
        .arg(lookup.filter())
        .args([
            "sAMAccountName",
            "servicePrincipalName",
            "msDS-KeyVersionNumber",
        ]);
    let out = run(cfg, cmd, "ldapsearch", b"").await?;
    let mut accounts = parse_entries(&out)?;
    match accounts.len() {
        0 => Err(KadminError::NoSuchPrincipal(format!(
            "no account in {} matches {}",
            cfg.base_dn,
            lookup.filter()
        ))),
        1 => Ok(accounts.remove(0)),
        n => Err(KadminError::Failed(format!(
            "{n} accounts match {}; kcred needs exactly one",
            lookup.filter()
        ))),
    }
}

/// Replaces the account's password (an administrative reset: no old
/// password needed, which is why AD insists on an encrypted connection) and
/// limits it to AES keys.
pub async fn set_password(
    cfg: &AdConfig,
    account: &Account,
    password: &str,
) -> Result<(), KadminError> {
    // unicodePwd is the password in double quotes, UTF-16LE.
    let quoted = Zeroizing::new(format!("\"{password}\""));
    let utf16: Zeroizing<Vec<u8>> =
        Zeroizing::new(quoted.encode_utf16().flat_map(u16::to_le_bytes).collect());
    let ldif = Zeroizing::new(format!(
        "dn:: {dn}\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {pw}\n-\n\
         replace: msDS-SupportedEncryptionTypes\nmsDS-SupportedEncryptionTypes: {AES_ONLY}\n-\n",
        dn = B64.encode(account.dn.as_bytes()),
        pw = Zeroizing::new(B64.encode(utf16.as_slice())).as_str(),
    ));
    let cmd = base_command(cfg, &cfg.ldapmodify);
    run(cfg, cmd, "ldapmodify", ldif.as_bytes()).await.map(drop)
}

/// Parses `ldapsearch -LLL -o ldif-wrap=no` output into accounts.
fn parse_entries(text: &str) -> Result<Vec<Account>, KadminError> {
    let mut accounts = Vec::new();
    for block in text.split("\n\n") {
        let mut dn = None;
        let mut sam = None;
        let mut spns = Vec::new();
        let mut kvno = None;
        for line in block.lines().filter(|l| !l.starts_with('#')) {
            let Some((attr, value)) = line.split_once(':') else {
                continue;
            };
            let value = match value.strip_prefix(':') {
                Some(b64) => String::from_utf8(B64.decode(b64.trim()).map_err(|_| {
                    KadminError::Failed(format!("ldapsearch: bad base64 in {attr}"))
                })?)
                .map_err(|_| KadminError::Failed(format!("ldapsearch: {attr} is not UTF-8")))?,
                None => value.trim_start().to_string(),
            };
            match attr.to_ascii_lowercase().as_str() {
                "dn" => dn = Some(value),
                "samaccountname" => sam = Some(value),
                "serviceprincipalname" => spns.push(value),
                "msds-keyversionnumber" => kvno = value.trim().parse().ok(),
                _ => {}
            }
        }
        let Some(dn) = dn else { continue };
        let (Some(sam_account_name), Some(kvno)) = (sam, kvno) else {
            return Err(KadminError::Failed(format!(
                "account {dn}: sAMAccountName or msDS-KeyVersionNumber not readable (check the bind account's read rights)"
            )));
        };
        accounts.push(Account {
            dn,
            sam_account_name,
            spns,
            kvno,
        });
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_escape_what_ldap_treats_specially() {
        assert_eq!(
            Lookup::Spn("HTTP/a*b(c)").filter(),
            "(servicePrincipalName=HTTP/a\\2ab\\28c\\29)"
        );
    }

    #[test]
    fn entries_are_read_with_base64_values_and_without_referrals() {
        let text = "dn:: Q049d8OpYixEQz14\nsAMAccountName: web\nservicePrincipalName: HTTP/web.x\n\
                    msDS-KeyVersionNumber: 7\n\n# refldaps://x/CN=Configuration\n";
        let accounts = parse_entries(text).unwrap();
        assert_eq!(
            accounts,
            vec![Account {
                dn: "CN=wéb,DC=x".into(),
                sam_account_name: "web".into(),
                spns: vec!["HTTP/web.x".into()],
                kvno: 7,
            }]
        );
    }

    #[test]
    fn an_entry_without_a_readable_kvno_is_an_error_not_kvno_zero() {
        let text = "dn: CN=web,DC=x\nsAMAccountName: web\n";
        assert!(
            matches!(parse_entries(text), Err(KadminError::Failed(m)) if m.contains("msDS-KeyVersionNumber"))
        );
    }
}
