//! A throwaway Samba Active Directory domain controller for kcred's tests.
//!
//! kcred's Active Directory backend only means something against a real
//! DC: LDAPS password resets, `msDS-KeyVersionNumber`, the salt the KDC
//! announces. Provisioning a domain takes seconds, so it is done once per
//! machine into a template directory (kept between runs, keyed by the
//! provisioning options), and each [`DomainController`] copies the template
//! and runs `samba -i -M single` on the copy, which is up in about a second.
//!
//! A DC listens on fixed ports (88, 389, 636): each test first calls
//! [`isolate_network`], which moves the calling thread into a fresh network
//! namespace with its own loopback. Everything that thread starts afterwards
//! (the DC, `kinit`, the controller's children, threads of a runtime built
//! on it) shares that loopback and no other test's. Needs root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The Kerberos realm of the test domain.
pub const REALM: &str = "AD.KCRED.TEST";
/// The DNS name of the test domain.
pub const DNS_DOMAIN: &str = "ad.kcred.test";
/// The NetBIOS name of the test domain.
pub const NETBIOS_DOMAIN: &str = "KCRED";
/// The base DN of the test domain.
pub const BASE_DN: &str = "DC=ad,DC=kcred,DC=test";
/// The domain administrator's DN.
pub const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=ad,DC=kcred,DC=test";
/// The domain administrator's password; the domain is thrown away.
pub const ADMIN_PASSWORD: &str = "Kcred-Test-Adm1n!";
/// The OU delegated to kcred: [`DomainController::add_service_account`]
/// creates accounts here.
pub const KCRED_OU: &str = "OU=kcred,DC=ad,DC=kcred,DC=test";
/// The account kcred binds as: on [`KCRED_OU`] only, the right to create
/// user objects, and on its users the Reset Password right and write
/// access to `msDS-SupportedEncryptionTypes`; no other rights beyond what
/// every authenticated user has.
pub const KCRED_BIND_DN: &str = "CN=kcred-admin,CN=Users,DC=ad,DC=kcred,DC=test";
/// [`KCRED_BIND_DN`]'s password.
pub const KCRED_BIND_PASSWORD: &str = "Kcred-Delegated-Bind1!";

/// The "Reset Password" extended right (User-Force-Change-Password).
const RESET_PASSWORD_RIGHT: &str = "00299570-246d-11d0-a768-00aa006e0529";
/// The schemaIDGUID of `msDS-SupportedEncryptionTypes`.
const SUPPORTED_ENCTYPES_ATTR: &str = "20119867-1d04-4ab7-9371-cfc3d5df0afd";
/// The schemaIDGUID of the `user` class.
const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";

/// Bumped when the provisioning below changes, so a stale template from an
/// older version of this crate is never reused.
const TEMPLATE_VERSION: u32 = 3;
/// How long a DC may take to listen before start-up is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Directories searched after `PATH` (`samba` lives in `/usr/sbin`).
const FALLBACK_TOOL_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// Why the DC or one of its tools failed, with the tool's words.
#[derive(Debug, thiserror::Error)]
pub enum SambaError {
    /// A file or process operation failed (e.g. Samba is not installed).
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A tool exited non-zero.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// What the tool printed.
        output: String,
    },
    /// The DC exited or did not listen in time.
    #[error("samba did not start: {reason}\n--- samba log ---\n{log}")]
    Start {
        /// Exit status or timeout.
        reason: String,
        /// Tail of the DC's output.
        log: String,
    },
    /// The namespace could not be set up, or was not set up before use.
    #[error("network namespace: {0}")]
    Namespace(String),
}

/// Moves the calling thread into a new network namespace whose loopback is
/// up. Call it first in a test, before starting anything that talks to the
/// DC: processes and threads started from this thread afterwards share the
/// namespace; other threads (and other tests) do not.
pub fn isolate_network() -> Result<(), SambaError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| SambaError::Namespace(format!("unshare(CLONE_NEWNET): {e} (needs root)")))?;
    let mut ip = Command::new(find_tool("ip"));
    ip.args(["link", "set", "lo", "up"]);
    run(ip, "ip link set lo up").map(drop)
}

/// A running domain controller. Dropping it kills and reaps `samba` and
/// deletes its directory.
#[derive(Debug)]
pub struct DomainController {
    child: Option<Child>,
    // Last so the directory outlives the daemon writing into it.
    dir: tempfile::TempDir,
}

impl DomainController {
    /// Copies the provisioned template and starts a DC on it. The calling
    /// thread must have called [`isolate_network`].
    pub fn start() -> Result<DomainController, SambaError> {
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 88)).is_ok();
        if !free {
            return Err(SambaError::Namespace(
                "port 88 is taken: call isolate_network() on this thread first".into(),
            ));
        }
        let template = template()?;
        let dir = tempfile::Builder::new()
            .prefix("kcred-samba-")
            .tempdir()
            .map_err(|e| io_err("creating the DC directory", e))?;
        let mut cp = Command::new("cp");
        cp.arg("-a")
            .arg(format!("{}/.", template.display()))
            .arg(dir.path());
        run(cp, "cp -a template")?;
        let mut dc = DomainController { child: None, dir };
        dc.write_config(&template)?;
        dc.spawn()?;
        Ok(dc)
    }

    /// Rewrites the copied `smb.conf` to point at this copy, run only the
    /// LDAP and KDC services, and serve LDAPS with the template's
    /// certificate (whose names include 127.0.0.1); writes a client
    /// `krb5.conf` for the realm.
    fn write_config(&self, template: &Path) -> Result<(), SambaError> {
        let d = self.dir().display().to_string();
        let conf_path = self.smb_conf_path();
        let text = fs::read_to_string(&conf_path)
            .map_err(|e| io_err(format!("reading {}", conf_path.display()), e))?;
        let mut out = String::new();
        for line in text.replace(&template.display().to_string(), &d).lines() {
            let key = line.trim_start();
            if key.starts_with("server services")
                || key.starts_with("pid directory")
                || key.starts_with("log file")
                || key.starts_with("logging")
            {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if line.trim() == "[global]" {
                out.push_str(&format!(
                    "\tserver services = ldap, kdc\n\
                     \tlog file = {d}/samba.log\n\
                     \tlogging = file\n\
                     \ttls enabled = yes\n\
                     \ttls keyfile = {d}/private/tls/kcred-key.pem\n\
                     \ttls certfile = {d}/private/tls/kcred-cert.pem\n\
                     \ttls cafile = \n\
                     \tpid directory = {d}/run\n\
                     \tncalrpc dir = {d}/run/ncalrpc\n\
                     \twinbindd socket directory = {d}/run/winbindd\n\
                     \tntp signd socket directory = {d}/run/ntp_signd\n"
                ));
            }
        }
        write_file(&conf_path, &out)?;
        let krb5 = format!(
            "[libdefaults]\n\
             \tdefault_realm = {REALM}\n\
             \tdns_lookup_kdc = false\n\
             \tdns_lookup_realm = false\n\
             \tdns_canonicalize_hostname = false\n\
             \trdns = false\n\
             \tudp_preference_limit = 1\n\
             \n\
             [realms]\n\
             \t{REALM} = {{\n\
             \t\tkdc = 127.0.0.1:88\n\
             \t\tadmin_server = 127.0.0.1:464\n\
             \t\tkpasswd_server = 127.0.0.1:464\n\
             \t}}\n"
        );
        write_file(&self.krb5_conf_path(), &krb5)?;
        write_file(&self.admin_password_file(), ADMIN_PASSWORD)?;
        set_private(&self.admin_password_file())?;
        write_file(&self.kcred_password_file(), KCRED_BIND_PASSWORD)?;
        set_private(&self.kcred_password_file())
    }

    fn spawn(&mut self) -> Result<(), SambaError> {
        let log_file = self.dir().join("samba.out");
        let out = fs::File::create(&log_file)
            .map_err(|e| io_err(format!("creating {}", log_file.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| io_err("duplicating the log file", e))?;
        let mut cmd = Command::new(find_tool("samba"));
        cmd.args(["-i", "-M", "single", "-s"])
            .arg(self.smb_conf_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = cmd.spawn().map_err(|e| io_err("spawning samba", e))?;
        let log = || {
            let mut text = fs::read_to_string(&log_file).unwrap_or_default();
            text.push_str(&fs::read_to_string(self.dir().join("samba.log")).unwrap_or_default());
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SambaError::Start {
                    reason: format!("exited with {status}"),
                    log: log(),
                });
            }
            let up = [88, 636].iter().all(|p| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, *p)),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if up {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SambaError::Start {
                    reason: format!("not listening on 88 and 636 after {READY_TIMEOUT:?}"),
                    log: log(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The DC's private directory (database, configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The realm name.
    pub fn realm(&self) -> &str {
        REALM
    }

    /// Where to reach LDAPS.
    pub fn ldap_url(&self) -> String {
        "ldaps://127.0.0.1:636".to_string()
    }

    /// Where to reach plain LDAP with a Kerberos (SASL GSSAPI) bind: the
    /// DC's account gets the service principal `ldap/127.0.0.1`, the name
    /// a client asks a ticket for when it reaches the DC by that address.
    pub fn kerberos_ldap_url(&self) -> Result<String, SambaError> {
        self.samba_tool(&["spn", "add", "ldap/127.0.0.1", "DC1$"])?;
        Ok("ldap://127.0.0.1".to_string())
    }

    /// The CA certificate that verifies the DC's LDAPS certificate.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir().join("private/tls/kcred-cert.pem")
    }

    /// A file holding the administrator's password (mode 0600).
    pub fn admin_password_file(&self) -> PathBuf {
        self.dir().join("admin.password")
    }

    /// A file holding [`KCRED_BIND_PASSWORD`] (mode 0600).
    pub fn kcred_password_file(&self) -> PathBuf {
        self.dir().join("kcred-bind.password")
    }

    /// Client configuration for the realm; point `KRB5_CONFIG` at it.
    pub fn krb5_conf_path(&self) -> PathBuf {
        self.dir().join("krb5.conf")
    }

    fn smb_conf_path(&self) -> PathBuf {
        self.dir().join("etc/smb.conf")
    }

    /// The credential cache [`DomainController::command`] uses by default.
    pub fn ccache_path(&self) -> PathBuf {
        self.dir().join("ccache")
    }

    /// A `Command` for a Kerberos or LDAP client tool set up for this
    /// realm: `KRB5_CONFIG`, a ccache in the DC's directory, and the DC's
    /// CA for LDAPS, so nothing touches the host's defaults.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(find_tool(program));
        cmd.env("KRB5_CONFIG", self.krb5_conf_path())
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", self.ccache_path().display()),
            )
            .env("LDAPTLS_CACERT", self.ca_cert_path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `samba-tool` on this DC's database (`-H sam.ldb -s smb.conf`);
    /// returns its output.
    pub fn samba_tool(&self, args: &[&str]) -> Result<String, SambaError> {
        let mut cmd = self.command("samba-tool");
        cmd.args(args)
            .arg("-H")
            .arg(self.dir().join("private/sam.ldb"))
            .arg("-s")
            .arg(self.smb_conf_path());
        let out = run(cmd, &format!("samba-tool {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `principal`'s current keys to `keytab` (`samba-tool domain
    /// exportkeytab`, which reads the database through `smb.conf`).
    pub fn export_keytab(&self, principal: &str, keytab: &Path) -> Result<(), SambaError> {
        let mut cmd = self.command("samba-tool");
        cmd.args(["domain", "exportkeytab"])
            .arg(keytab)
            .arg(format!("--principal={principal}"))
            .arg("-s")
            .arg(self.smb_conf_path());
        run(cmd, &format!("samba-tool domain exportkeytab {principal}")).map(drop)
    }

    /// Creates a user account in [`KCRED_OU`] with a throwaway password
    /// (kcred replaces it) and the given service principal names.
    pub fn add_service_account(&self, account: &str, spns: &[&str]) -> Result<(), SambaError> {
        self.samba_tool(&[
            "user",
            "add",
            account,
            "Throwaway-Initial-Pw1!",
            "--userou=OU=kcred",
        ])?;
        for spn in spns {
            self.samba_tool(&["spn", "add", spn, account])?;
        }
        Ok(())
    }

    /// The DNs of every account in the domain holding `spn`, read from the
    /// database with `ldbsearch`.
    pub fn accounts_holding(&self, spn: &str) -> Result<Vec<String>, SambaError> {
        let mut cmd = self.command("ldbsearch");
        cmd.arg("-H")
            .arg(self.dir().join("private/sam.ldb"))
            .arg(format!("(servicePrincipalName={spn})"))
            .arg("dn");
        let out = run(cmd, &format!("ldbsearch servicePrincipalName={spn}"))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("dn: "))
            .map(str::to_string)
            .collect())
    }

    /// An account's attribute values as `samba-tool user show` prints them.
    pub fn attribute(&self, account: &str, attr: &str) -> Result<Vec<String>, SambaError> {
        let out = self.samba_tool(&["user", "show", account, &format!("--attributes={attr}")])?;
        let prefix = format!("{attr}: ");
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().to_string())
            .collect())
    }

    /// An account's `msDS-KeyVersionNumber` as the directory holds it.
    pub fn key_version(&self, account: &str) -> Result<u32, SambaError> {
        let out = self.samba_tool(&[
            "user",
            "show",
            account,
            "--attributes=msDS-KeyVersionNumber",
        ])?;
        out.lines()
            .find_map(|l| l.strip_prefix("msDS-KeyVersionNumber: "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| SambaError::Command {
                command: format!("samba-tool user show {account}"),
                status: "no msDS-KeyVersionNumber".into(),
                output: out.clone(),
            })
    }

    /// Gets the administrator a TGT in [`DomainController::ccache_path`],
    /// so `kvno` can ask for service tickets.
    pub fn kinit_admin(&self) -> Result<(), SambaError> {
        let mut cmd = self.command("kinit");
        cmd.arg(format!("Administrator@{REALM}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| io_err("spawning kinit", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            writeln!(stdin, "{ADMIN_PASSWORD}").map_err(|e| io_err("writing to kinit", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| io_err("waiting for kinit", e))?;
        check(out, "kinit Administrator").map(drop)
    }
}

impl Drop for DomainController {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Serializes provisioning within this process; across processes the
/// template appears by an atomic rename.
static TEMPLATE: Mutex<()> = Mutex::new(());

/// The provisioned template directory, provisioning it if no earlier run
/// left one.
fn template() -> Result<PathBuf, SambaError> {
    let _one = TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    let uid = nix::unistd::getuid();
    let path = std::env::temp_dir().join(format!(
        "kcred-testsamba-template-v{TEMPLATE_VERSION}-uid{uid}"
    ));
    if path.join(".complete").is_file() {
        return Ok(path);
    }
    let staging = tempfile::Builder::new()
        .prefix("kcred-testsamba-provision-")
        .tempdir()
        .map_err(|e| io_err("creating a provisioning directory", e))?;
    let target = staging.path().join("dc");
    let mut provision = Command::new(find_tool("samba-tool"));
    provision
        .args(["domain", "provision"])
        .arg(format!("--realm={REALM}"))
        .arg(format!("--domain={NETBIOS_DOMAIN}"))
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg(format!("--targetdir={}", target.display()))
        .args([
            "--use-rfc2307",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--host-name=dc1",
            "--option=interfaces=lo",
            "--option=bind interfaces only=yes",
        ]);
    run(provision, "samba-tool domain provision")?;
    // No password expiry or minimum age: tests reset passwords freely.
    let mut policy = Command::new(find_tool("samba-tool"));
    policy
        .args([
            "domain",
            "passwordsettings",
            "set",
            "--min-pwd-age=0",
            "--max-pwd-age=0",
            "-H",
        ])
        .arg(target.join("private/sam.ldb"))
        .arg("-s")
        .arg(target.join("etc/smb.conf"));
    run(policy, "samba-tool domain passwordsettings set")?;
    delegate_to_kcred(&target)?;
    // A certificate that names 127.0.0.1, so clients verify LDAPS fully.
    let tls = target.join("private/tls");
    fs::create_dir_all(&tls).map_err(|e| io_err("creating private/tls", e))?;
    let mut openssl = Command::new("openssl");
    openssl
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", &format!("/CN=dc1.{DNS_DOMAIN}")])
        .args([
            "-addext",
            &format!("subjectAltName=IP:127.0.0.1,DNS:dc1.{DNS_DOMAIN}"),
        ])
        .arg("-keyout")
        .arg(tls.join("kcred-key.pem"))
        .arg("-out")
        .arg(tls.join("kcred-cert.pem"));
    run(openssl, "openssl req -x509")?;
    set_private(&tls.join("kcred-key.pem"))?;
    let target = rewrite_paths(&target, &path)?;
    write_file(&target.join(".complete"), "")?;
    match fs::rename(&target, &path) {
        Ok(()) => Ok(path),
        // Another process finished first: use its template.
        Err(_) if path.join(".complete").is_file() => Ok(path),
        Err(e) => Err(io_err(
            format!("moving the template to {}", path.display()),
            e,
        )),
    }
}

/// Creates [`KCRED_OU`] and [`KCRED_BIND_DN`], and grants that account the
/// rights kcred needs on the OU (create users) and its users (reset their
/// password, write their enctypes), as an AD administrator would.
fn delegate_to_kcred(target: &Path) -> Result<(), SambaError> {
    let tool = |args: &[&str]| {
        let mut cmd = Command::new(find_tool("samba-tool"));
        cmd.args(args)
            .arg("-H")
            .arg(target.join("private/sam.ldb"))
            .arg("-s")
            .arg(target.join("etc/smb.conf"));
        run(cmd, &format!("samba-tool {}", args.join(" ")))
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    tool(&["ou", "add", "OU=kcred"])?;
    tool(&["user", "add", "kcred-admin", KCRED_BIND_PASSWORD])?;
    let shown = tool(&["user", "show", "kcred-admin", "--attributes=objectSid"])?;
    let sid = shown
        .lines()
        .find_map(|l| l.strip_prefix("objectSid: "))
        .map(str::trim)
        .ok_or_else(|| SambaError::Command {
            command: "samba-tool user show kcred-admin".into(),
            status: "no objectSid".into(),
            output: shown.clone(),
        })?;
    let sddl = format!(
        "(OA;;CC;{USER_CLASS};;{sid})\
         (OA;CIIO;CR;{RESET_PASSWORD_RIGHT};{USER_CLASS};{sid})\
         (OA;CIIO;WP;{SUPPORTED_ENCTYPES_ATTR};{USER_CLASS};{sid})"
    );
    tool(&[
        "dsacl",
        "set",
        &format!("--objectdn={KCRED_OU}"),
        &format!("--sddl={sddl}"),
    ])
    .map(drop)
}

/// Points the provisioned `smb.conf` at the template's final location.
fn rewrite_paths(target: &Path, final_path: &Path) -> Result<PathBuf, SambaError> {
    let conf = target.join("etc/smb.conf");
    let text =
        fs::read_to_string(&conf).map_err(|e| io_err(format!("reading {}", conf.display()), e))?;
    write_file(
        &conf,
        &text.replace(
            &target.display().to_string(),
            &final_path.display().to_string(),
        ),
    )?;
    Ok(target.to_path_buf())
}

/// Resolves a tool via `PATH`, then the usual sbin directories.
fn find_tool(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

fn run(mut cmd: Command, what: &str) -> Result<Output, SambaError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_err(format!("running {what}"), e))?;
    check(out, what)
}

fn check(out: Output, what: &str) -> Result<Output, SambaError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(SambaError::Command {
        command: what.to_string(),
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn write_file(path: &Path, contents: &str) -> Result<(), SambaError> {
    fs::write(path, contents).map_err(|e| io_err(format!("writing {}", path.display()), e))
}

fn set_private(path: &Path) -> Result<(), SambaError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err(format!("chmod 600 {}", path.display()), e))
}

fn io_err(context: impl Into<String>, source: io::Error) -> SambaError {
    SambaError::Io {
        context: context.into(),
        source,
    }
}
