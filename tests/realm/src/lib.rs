//! A throwaway MIT Kerberos realm for kcred's tests.
//!
//! kcred's behaviour only means something against a real KDC and a real
//! kadmind, so each test gets its own: [`Realm::start`] creates a database in
//! a temporary directory, runs `krb5kdc` and `kadmind` on free loopback ports
//! and stops both when the [`Realm`] is dropped. Every tool is run with the
//! realm's configuration set on that one [`Command`], never process-wide, so
//! tests can run many realms in parallel threads. The API is blocking and has
//! no async runtime, so it works from sync and async tests alike (call it from
//! `spawn_blocking` if blocking a runtime thread matters).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod daemons;
mod principals;

#[cfg(test)]
use principals::is_harmless_kadmin_line;
use principals::{run, ss_quote};

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Realm name used when the test does not care, so logs and fixtures agree.
pub const DEFAULT_REALM: &str = "KCRED.TEST";

/// Master key password; the realm is thrown away, so it need not be secret.
const MASTER_PASSWORD: &str = "kcred-testrealm-master";
/// A daemon can lose its port to another process between picking and binding;
/// starting over with fresh ports makes that race harmless.
const START_ATTEMPTS: u32 = 3;
/// How long a daemon may take to bind its ports before start-up is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Renewable lifetime given to the TGS and to every principal this crate adds,
/// because MIT's default of 0 makes renewal tests impossible.
const MAX_RENEW_LIFE: &str = "7d";
/// Where the kcred controller's admin keytab lives inside the realm directory.
const ADMIN_KEYTAB_FILE: &str = "kcred-admin.keytab";
/// Directories searched after `PATH`, because non-root users often lack
/// `/usr/sbin` (where Debian puts `krb5kdc`, `kadmind`, `kdb5_util`).
const FALLBACK_TOOL_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// Settings a test may need to vary; everything else is fixed so realms are
/// predictable.
#[derive(Debug, Clone)]
pub struct RealmOptions {
    /// Realm name, so tests can check realm handling (e.g. cross-realm names).
    pub realm: String,
    /// Extra `kadm5.acl` lines, written before the default
    /// `kcred/admin@REALM e */*@REALM` (kadmind uses the first matching
    /// line, so these can widen or narrow it).
    pub acl: Vec<String>,
    /// What the KDC asks of a login before it answers.
    pub preauth: Preauth,
}

impl Default for RealmOptions {
    fn default() -> Self {
        RealmOptions {
            realm: DEFAULT_REALM.to_string(),
            acl: Vec::new(),
            preauth: Preauth::Optional,
        }
    }
}

/// Pre-authentication: how a client proves it holds its key before the KDC
/// sends a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preauth {
    /// MIT's default for new principals: none asked.
    Optional,
    /// Every principal added asks for it; encrypted timestamp and SPAKE
    /// are both offered.
    Required,
    /// Every principal added asks for it, and the realm's `krb5.conf` tells
    /// clients never to use encrypted timestamp
    /// (`disable_encrypted_timestamp`, a client setting), as a realm
    /// hardened against password guessing does: SPAKE is the only way in.
    SpakeOnly,
    /// Every principal added asks for it, and the KDC's encrypted
    /// timestamp module is off (`[plugins] kdcpreauth`): the KDC offers
    /// only SPAKE.
    KdcSpakeOnly,
}

/// Why the realm or one of its tools failed; carries the failing command and
/// its stderr (or the daemon's log) so a failed test explains itself.
#[derive(Debug, thiserror::Error)]
pub enum RealmError {
    /// A file or process operation failed (e.g. a Kerberos tool is missing).
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A Kerberos tool exited non-zero, or reported an error on stderr.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line (secrets redacted).
        command: String,
        /// Exit status as text.
        status: String,
        /// What the tool printed on stderr.
        stderr: String,
    },
    /// `krb5kdc` or `kadmind` exited or did not listen in time.
    #[error("{daemon} did not start: {reason}\n--- {daemon} log ---\n{log}")]
    DaemonStart {
        /// `krb5kdc` or `kadmind`.
        daemon: &'static str,
        /// Exit status or timeout.
        reason: String,
        /// Tail of the daemon's log file and stderr.
        log: String,
    },
    /// A tool's output did not have the expected shape.
    #[error("unexpected output from `{command}`: {output}")]
    Parse {
        /// The command whose output was parsed.
        command: String,
        /// The output that could not be understood.
        output: String,
    },
    /// An argument would corrupt the generated configuration.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// A running realm. Dropping it kills and reaps `krb5kdc` and `kadmind` and
/// deletes its directory, so a test cannot leak daemons or files even when it
/// panics.
#[derive(Debug)]
pub struct Realm {
    name: String,
    ports: Ports,
    kdc: Option<Child>,
    kadmind: Option<Child>,
    ccache_seq: AtomicU64,
    // Last so the directory outlives the daemons that write into it.
    dir: tempfile::TempDir,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    kdc: u16,
    kadmind: u16,
    kpasswd: u16,
}

impl Realm {
    /// Starts a realm named [`DEFAULT_REALM`] with the default ACL; what most
    /// tests want.
    pub fn start() -> Result<Realm, RealmError> {
        Realm::start_with(RealmOptions::default())
    }

    /// Starts a realm with custom options. Retries with fresh ports when a
    /// daemon fails to come up, since another process may grab a port between
    /// picking it and the daemon binding it.
    pub fn start_with(opts: RealmOptions) -> Result<Realm, RealmError> {
        validate_options(&opts)?;
        let mut attempt = 1;
        loop {
            match Realm::try_start(&opts) {
                Err(RealmError::DaemonStart { .. }) if attempt < START_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    fn try_start(opts: &RealmOptions) -> Result<Realm, RealmError> {
        let dir = tempfile::Builder::new()
            .prefix("kcred-realm-")
            .tempdir()
            .map_err(|e| io_err("creating realm directory", e))?;
        let ports = pick_ports()?;
        let realm = Realm {
            name: opts.realm.clone(),
            ports,
            kdc: None,
            kadmind: None,
            ccache_seq: AtomicU64::new(0),
            dir,
        };
        realm.write_config(&opts.acl, opts.preauth)?;

        let mut create = realm.tool("kdb5_util");
        create.args(["create", "-s", "-r", &realm.name, "-P", MASTER_PASSWORD]);
        run(
            create,
            format!("kdb5_util create -s -r {} -P ***", realm.name),
        )?;
        realm.kadmin_local(&format!(
            "modprinc -maxrenewlife {MAX_RENEW_LIFE} {}",
            ss_quote(&format!("krbtgt/{0}@{0}", realm.name))
        ))?;
        let admin = realm.admin_principal();
        realm.add_principal(&admin)?;
        realm.extract_keytab(&admin, &realm.admin_keytab())?;

        let mut realm = realm;
        realm.start_kdc()?;
        realm.start_kadmind()?;
        Ok(realm)
    }

    fn write_config(&self, extra_acl: &[String], preauth: Preauth) -> Result<(), RealmError> {
        let d = self.dir().display();
        let realm = &self.name;
        let Ports {
            kdc,
            kadmind,
            kpasswd,
        } = self.ports;
        // Groups the KDC offers SPAKE with (it offers none by default); the
        // client reads the same file and accepts this one anyway.
        let required = preauth != Preauth::Optional;
        let spake_groups = if required {
            "\tspake_preauth_groups = edwards25519\n"
        } else {
            ""
        };
        let flags = if required {
            "\t\tdefault_principal_flags = +preauth\n"
        } else {
            ""
        };
        let no_timestamp = if preauth == Preauth::SpakeOnly {
            "\t\tdisable_encrypted_timestamp = true\n"
        } else {
            ""
        };
        let kdc_plugins = if preauth == Preauth::KdcSpakeOnly {
            "\n[plugins]\n\tkdcpreauth = {\n\t\tdisable = encrypted_timestamp\n\t}\n"
        } else {
            ""
        };
        let krb5_conf = format!(
            "[libdefaults]\n\
             \tdefault_realm = {realm}\n\
             {spake_groups}\
             \tdns_lookup_kdc = false\n\
             \tdns_lookup_realm = false\n\
             \tdns_canonicalize_hostname = false\n\
             \trdns = false\n\
             \tudp_preference_limit = 1\n\
             \n\
             [realms]\n\
             \t{realm} = {{\n\
             \t\tkdc = 127.0.0.1:{kdc}\n\
             \t\tadmin_server = 127.0.0.1:{kadmind}\n\
             \t\tkpasswd_server = 127.0.0.1:{kpasswd}\n\
             {no_timestamp}\
             \t}}\n"
        );
        let kdc_conf = format!(
            "[kdcdefaults]\n\
             \tkdc_listen = 127.0.0.1:{kdc}\n\
             \tkdc_tcp_listen = 127.0.0.1:{kdc}\n\
             \n\
             [realms]\n\
             \t{realm} = {{\n\
             \t\tdatabase_name = {d}/principal\n\
             \t\tkey_stash_file = {d}/stash\n\
             \t\tacl_file = {d}/kadm5.acl\n\
             \t\tkadmind_listen = 127.0.0.1:{kadmind}\n\
             \t\tkpasswd_listen = 127.0.0.1:{kpasswd}\n\
             \t\tmax_life = 1d\n\
             \t\tmax_renewable_life = {MAX_RENEW_LIFE}\n\
             {flags}\
             \t}}\n\
             \n\
             [logging]\n\
             \tkdc = FILE:{d}/kdc.log\n\
             \tadmin_server = FILE:{d}/kadmind.log\n\
             \tdefault = FILE:{d}/krb5.log\n\
             {kdc_plugins}"
        );
        // kadmind uses the first matching line: extra lines go first so a
        // test can widen or narrow the default.
        let mut acl = String::new();
        for line in extra_acl {
            acl.push_str(line);
            acl.push('\n');
        }
        acl.push_str(&format!("{} e */*@{realm}\n", self.admin_principal()));
        write_file(&self.krb5_conf_path(), &krb5_conf)?;
        write_file(&self.kdc_conf_path(), &kdc_conf)?;
        write_file(&self.dir().join("kadm5.acl"), &acl)
    }

    /// The realm name, for building principal names in tests.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The realm's private directory (database, configs, logs, keytabs);
    /// a convenient place for test files that must vanish with the realm.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Client configuration; point `KRB5_CONFIG` at it to reach this realm.
    pub fn krb5_conf_path(&self) -> PathBuf {
        self.dir().join("krb5.conf")
    }

    /// KDC profile; only the admin tools and daemons need it.
    pub fn kdc_conf_path(&self) -> PathBuf {
        self.dir().join("kdc.conf")
    }

    /// Where the KDC listens (TCP and UDP), for code that takes an address
    /// rather than a krb5.conf.
    pub fn kdc_addr(&self) -> SocketAddr {
        loopback(self.ports.kdc)
    }

    /// Where kadmind listens for remote kadmin (the controller's path).
    pub fn kadmind_addr(&self) -> SocketAddr {
        loopback(self.ports.kadmind)
    }

    /// Process id of the running KDC, so tests can check it really stops.
    pub fn kdc_pid(&self) -> Option<u32> {
        self.kdc.as_ref().map(Child::id)
    }

    /// Process id of the running kadmind, so tests can check it really stops.
    pub fn kadmind_pid(&self) -> Option<u32> {
        self.kadmind.as_ref().map(Child::id)
    }

    /// Env vars a child process needs to talk to this realm (`KRB5_CONFIG`,
    /// `KRB5_KDC_PROFILE`); set them on the child's `Command`, never on this
    /// process, because parallel tests each have their own realm.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "KRB5_CONFIG".to_string(),
                self.krb5_conf_path().display().to_string(),
            ),
            (
                "KRB5_KDC_PROFILE".to_string(),
                self.kdc_conf_path().display().to_string(),
            ),
        ]
    }

    /// The credential cache [`Realm::command`] uses by default, so a test can
    /// `kinit` in one command and `klist` in the next.
    pub fn ccache_path(&self) -> PathBuf {
        self.dir().join("ccache")
    }

    /// A `Command` for `program` (e.g. `kinit`, `klist`, `kvno`, `kadmin`)
    /// configured for this realm: realm env, the shared ccache
    /// [`Realm::ccache_path`] and a default keytab inside the realm directory,
    /// so nothing touches the host's `/tmp/krb5cc_*` or `/etc/krb5.keytab`.
    /// Override `KRB5CCNAME` on the returned command for a separate cache.
    /// `program` is looked up in `PATH`, then in `/usr/sbin` and friends.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(find_tool(program));
        cmd.envs(self.env())
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", self.ccache_path().display()),
            )
            .env(
                "KRB5_KTNAME",
                format!("FILE:{}", self.dir().join("krb5.keytab").display()),
            );
        cmd
    }

    /// Internal tool invocation: realm command with a C locale so error
    /// messages are stable enough to parse, and no stdin so nothing prompts.
    fn tool(&self, program: &str) -> Command {
        let mut cmd = self.command(program);
        cmd.env("LC_ALL", "C").stdin(Stdio::null());
        cmd
    }

    /// The controller's admin identity, created at start and allowed by the
    /// default ACL to extract keys (`e`) of every two-component principal.
    pub fn admin_principal(&self) -> String {
        format!("kcred/admin@{}", self.name)
    }

    /// Keytab for [`Realm::admin_principal`], what the controller authenticates
    /// to kadmind with.
    pub fn admin_keytab(&self) -> PathBuf {
        self.dir().join(ADMIN_KEYTAB_FILE)
    }
}

/// Rejects values that would break or inject into the generated profiles.
fn validate_options(opts: &RealmOptions) -> Result<(), RealmError> {
    let bad_realm = opts.realm.is_empty()
        || opts
            .realm
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "{}[]=\"#;/@".contains(c));
    if bad_realm {
        return Err(RealmError::InvalidArgument(format!(
            "realm name {:?} cannot be used in krb5.conf",
            opts.realm
        )));
    }
    if let Some(line) = opts.acl.iter().find(|l| l.contains(['\n', '\r'])) {
        return Err(RealmError::InvalidArgument(format!(
            "ACL entry {line:?} spans several lines"
        )));
    }
    Ok(())
}

/// Picks ports for the KDC (TCP+UDP), kadmind (TCP) and kpasswd (TCP+UDP),
/// each one no other server started by this process gets.
fn pick_ports() -> Result<Ports, RealmError> {
    let err = |e| io_err("finding a free loopback port", e);
    Ok(Ports {
        kdc: kcred_testports::tcp_and_udp().map_err(err)?,
        kadmind: kcred_testports::tcp().map_err(err)?,
        kpasswd: kcred_testports::tcp_and_udp().map_err(err)?,
    })
}

/// Resolves a tool name via `PATH`, then the usual sbin directories; a name
/// with a slash, or one found nowhere, is returned unchanged so spawning
/// reports the real error.
fn find_tool(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn write_file(path: &Path, contents: &str) -> Result<(), RealmError> {
    fs::write(path, contents).map_err(|e| io_err(format!("writing {}", path.display()), e))
}

fn io_err(context: impl Into<String>, source: io::Error) -> RealmError {
    RealmError::Io {
        context: context.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmless_kadmin_lines() {
        assert!(is_harmless_kadmin_line(
            "No policy specified for foo@KCRED.TEST; defaulting to no policy"
        ));
        assert!(!is_harmless_kadmin_line(
            "add_principal: Principal or policy already exists while creating \"foo@KCRED.TEST\"."
        ));
        assert!(!is_harmless_kadmin_line(
            "kadmin.local: Command not found bogus"
        ));
    }

    #[test]
    fn ss_quoting_doubles_quotes() {
        assert_eq!(ss_quote(r#"a b"c"#), r#""a b""c""#);
    }

    #[test]
    fn bad_realm_names_are_rejected() {
        for realm in ["", "A B", "A}B", "A\nB"] {
            let opts = RealmOptions {
                realm: realm.to_string(),
                ..RealmOptions::default()
            };
            assert!(validate_options(&opts).is_err(), "{realm:?} accepted");
        }
        assert!(validate_options(&RealmOptions::default()).is_ok());
    }

    #[test]
    fn ports_are_distinct() {
        let p = pick_ports().expect("pick ports");
        assert_ne!(p.kdc, p.kadmind);
        assert_ne!(p.kdc, p.kpasswd);
        assert_ne!(p.kadmind, p.kpasswd);
    }
}
