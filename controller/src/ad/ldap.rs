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

use super::{AdConfig, Bind};
use crate::kadmin::KadminError;

/// `msDS-SupportedEncryptionTypes` for AES128 + AES256 only.
const AES_ONLY: u32 = 0x18;

/// The least SASL security strength a Kerberos bind accepts: encrypted
/// (AD requires 128-bit encryption to set a password).
const MIN_SSF: &str = "minssf=128";

/// The paged results control for searches that may return many entries.
const PAGED: &str = "pr=500/noprompt";

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
pub(super) fn escape_filter(value: &str) -> String {
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
    cmd.env("LDAPTLS_REQCERT", "demand");
    if let Some(ca) = &cfg.ca_file {
        cmd.env("LDAPTLS_CACERT", ca);
    }
    match &cfg.bind {
        Bind::Simple { dn, password_file } => {
            cmd.args(["-x", "-H", &cfg.ldap_url, "-D", dn, "-y"])
                .arg(password_file);
        }
        Bind::Kerberos { keytab } => {
            // -N: the service is ldap/<the URL's host>, no reverse DNS;
            // minssf: never without the SASL layer's encryption.
            cmd.env("KRB5_CLIENT_KTNAME", keytab).args([
                "-Y",
                "GSSAPI",
                "-Q",
                "-N",
                "-O",
                MIN_SSF,
                "-H",
                &cfg.ldap_url,
            ]);
        }
    }
    cmd.args([
        "-o",
        &format!("nettimeout={}", cfg.timeout.as_secs().max(1)),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    cmd
}

/// What an LDAP tool said: its exit code (the LDAP result code) and output.
struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs an LDAP tool with `stdin`, failing only if it cannot run or hangs.
async fn exec(
    cfg: &AdConfig,
    mut cmd: Command,
    what: &str,
    stdin: &[u8],
) -> Result<Ran, KadminError> {
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
    Ok(Ran {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; "),
    })
}

/// A failed tool's error, classified by its exit code: OpenLDAP exits with
/// the LDAP result code (255 for "can't contact").
fn failure(ran: &Ran, what: &str) -> KadminError {
    let message = format!("{what}: {}", ran.stderr);
    match ran.code {
        Some(255) | Some(51) | Some(52) | None => KadminError::Unavailable(message),
        Some(32) => KadminError::NoSuchPrincipal(message),
        Some(code) => KadminError::Refused {
            principal: what.to_string(),
            message: format!("LDAP result {code}: {message}"),
        },
    }
}

/// Runs an LDAP tool with `stdin`; its stdout on success.
async fn run(
    cfg: &AdConfig,
    cmd: Command,
    what: &str,
    stdin: &[u8],
) -> Result<String, KadminError> {
    let ran = exec(cfg, cmd, what, stdin).await?;
    if ran.code != Some(0) {
        return Err(failure(&ran, what));
    }
    String::from_utf8(ran.stdout)
        .map_err(|_| KadminError::Failed(format!("{what} printed non-UTF-8 output")))
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

/// `unicodePwd`'s value: the password in double quotes, UTF-16LE, base64.
fn unicode_pwd(password: &str) -> Zeroizing<String> {
    let quoted = Zeroizing::new(format!("\"{password}\""));
    let utf16: Zeroizing<Vec<u8>> =
        Zeroizing::new(quoted.encode_utf16().flat_map(u16::to_le_bytes).collect());
    Zeroizing::new(B64.encode(utf16.as_slice()))
}

/// Replaces the account's password (an administrative reset: no old
/// password needed, which is why AD insists on an encrypted connection) and
/// limits it to AES keys.
pub async fn set_password(
    cfg: &AdConfig,
    account: &Account,
    password: &str,
) -> Result<(), KadminError> {
    let ldif = Zeroizing::new(format!(
        "dn:: {dn}\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: {pw}\n-\n\
         replace: msDS-SupportedEncryptionTypes\nmsDS-SupportedEncryptionTypes: {AES_ONLY}\n-\n",
        dn = B64.encode(account.dn.as_bytes()),
        pw = unicode_pwd(password).as_str(),
    ));
    let cmd = base_command(cfg, &cfg.ldapmodify);
    run(cfg, cmd, "ldapmodify", ldif.as_bytes()).await.map(drop)
}

/// A service account kcred is about to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// Where it goes: `CN=<sam_account_name>,<accounts_ou>`.
    pub dn: String,
    /// Its logon name.
    pub sam_account_name: String,
    /// Its `userPrincipalName` (`<sam_account_name>@<REALM>`).
    pub user_principal_name: String,
    /// The one service principal name it holds (without realm).
    pub spn: String,
    /// Its `manager`, if configured.
    pub manager: Option<String>,
}

/// `userAccountControl` of a created account: NORMAL_ACCOUNT (enabled)
/// and DONT_EXPIRE_PASSWORD (kcred, not a password policy, decides when
/// its keys change).
const NEW_ACCOUNT_CONTROL: u32 = 0x200 | 0x1_0000;

/// Whether [`create`] made the account, or one of that name was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The account now exists with the given password.
    Created,
    /// An entry with that DN or logon name already existed; nothing changed.
    AlreadyExists,
}

/// The LDIF adding `account` with `password`, enabled, AES only.
fn add_ldif(account: &NewAccount, password: &str) -> Zeroizing<String> {
    let mut ldif = Zeroizing::new(format!(
        "dn:: {dn}\nchangetype: add\nobjectClass: user\nsAMAccountName:: {sam}\n\
         userPrincipalName:: {upn}\nservicePrincipalName:: {spn}\n\
         msDS-SupportedEncryptionTypes: {AES_ONLY}\nuserAccountControl: {NEW_ACCOUNT_CONTROL}\n\
         description:: {description}\nunicodePwd:: {pw}\n",
        dn = B64.encode(account.dn.as_bytes()),
        sam = B64.encode(account.sam_account_name.as_bytes()),
        upn = B64.encode(account.user_principal_name.as_bytes()),
        spn = B64.encode(account.spn.as_bytes()),
        description = B64.encode(format!("kcred service account for {}", account.spn)),
        pw = unicode_pwd(password).as_str(),
    ));
    if let Some(manager) = &account.manager {
        ldif.push_str(&format!("manager:: {}\n", B64.encode(manager.as_bytes())));
    }
    ldif
}

/// Adds the account, enabled, with its password and AES keys only, in one
/// LDAP add (AD takes the password in the add over an encrypted
/// connection). An existing entry of that name is not an error: the caller
/// looks again (another controller may have made it first).
pub async fn create(
    cfg: &AdConfig,
    account: &NewAccount,
    password: &str,
) -> Result<Created, KadminError> {
    let ldif = add_ldif(account, password);
    let cmd = base_command(cfg, &cfg.ldapmodify);
    let ran = exec(cfg, cmd, "ldapmodify (add)", ldif.as_bytes()).await?;
    match ran.code {
        Some(0) => Ok(Created::Created),
        // entryAlreadyExists; a duplicate sAMAccountName is a constraint
        // violation naming it.
        Some(68) => Ok(Created::AlreadyExists),
        _ => Err(failure(&ran, "ldapmodify (add)")),
    }
}

/// A directory entry: its DN and its attributes (names lower-cased).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its distinguished name.
    pub dn: String,
    /// Attribute values by lower-case attribute name.
    pub attrs: std::collections::BTreeMap<String, Vec<String>>,
}

impl Entry {
    /// The first value of `attr` (lower-case name), if any.
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.attrs
            .get(attr)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of `attr` (lower-case name).
    pub fn all(&self, attr: &str) -> &[String] {
        self.attrs.get(attr).map_or(&[], Vec::as_slice)
    }
}

/// Every entry under `base` matching `filter`, with `attrs`.
pub async fn search(
    cfg: &AdConfig,
    base: &str,
    filter: &str,
    attrs: &[&str],
) -> Result<Vec<Entry>, KadminError> {
    let mut cmd = base_command(cfg, &cfg.ldapsearch);
    // Paged: AD returns at most MaxPageSize (1000) entries per page.
    cmd.args(["-LLL", "-o", "ldif-wrap=no", "-E", PAGED, "-b", base])
        .arg(filter)
        .args(attrs);
    let out = run(cfg, cmd, "ldapsearch", b"").await?;
    parse_ldif(&out)
}

/// The DC's `highestCommittedUSN` (root DSE): it moves on every change
/// the DC commits, so an unchanged value means nothing changed there.
pub async fn highest_usn(cfg: &AdConfig) -> Result<u64, KadminError> {
    let mut cmd = base_command(cfg, &cfg.ldapsearch);
    cmd.args(["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b", ""])
        .arg("(objectClass=*)")
        .arg("highestCommittedUSN");
    let out = run(cfg, cmd, "ldapsearch", b"").await?;
    parse_usn(&out)
}

/// The `highestCommittedUSN` of a root DSE entry (whose DN is empty).
fn parse_usn(text: &str) -> Result<u64, KadminError> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(attr, _)| attr.eq_ignore_ascii_case("highestCommittedUSN"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| KadminError::Failed("the root DSE shows no highestCommittedUSN".into()))
}

/// Parses `ldapsearch -LLL -o ldif-wrap=no` output into entries, decoding
/// base64 values and skipping referrals.
pub fn parse_ldif(text: &str) -> Result<Vec<Entry>, KadminError> {
    let mut entries = Vec::new();
    for block in text.split("\n\n") {
        let mut entry = Entry::default();
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
            let attr = attr.to_ascii_lowercase();
            if attr == "dn" {
                entry.dn = value;
            } else {
                entry.attrs.entry(attr).or_default().push(value);
            }
        }
        if !entry.dn.is_empty() {
            entries.push(entry);
        }
    }
    Ok(entries)
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
    fn the_root_dse_usn_is_read_and_its_absence_is_an_error() {
        assert_eq!(parse_usn("dn:\nhighestCommittedUSN: 4242\n").unwrap(), 4242);
        assert!(parse_usn("dn:\n").is_err());
    }

    #[test]
    fn an_entry_without_a_readable_kvno_is_an_error_not_kvno_zero() {
        let text = "dn: CN=web,DC=x\nsAMAccountName: web\n";
        assert!(
            matches!(parse_entries(text), Err(KadminError::Failed(m)) if m.contains("msDS-KeyVersionNumber"))
        );
    }
}
