//! `kcred-controller check-config`: everything the controller would refuse
//! at start, found before it is started (in CI, before a deploy, on a new
//! host), each finding named with its setting.
//!
//! Exit codes, from the most basic problem found:
//! - 0: everything checked is fine;
//! - 3 ([`Problem::Invalid`]): the configuration, the policy or the pods
//!   file is not valid;
//! - 4 ([`Problem::File`]): a file is missing, unreadable, not what it
//!   should be, or readable by others than the controller (keys, keytabs);
//! - 5 ([`Problem::Unreachable`]): with `--reach`, kadmind or the KDC did
//!   not accept the admin principal's keytab.
//!
//! (2 is a command-line usage error, from the argument parser.)

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::config::{AuthMode, Config};
use crate::crypto::MasterKey;
use crate::store::settings::BackendKind;

/// What kind of problem a finding is; each has its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A file's content breaks a rule.
    Invalid,
    /// A file is missing, unreadable or too widely readable.
    File,
    /// kadmind or the KDC cannot be used.
    Unreachable,
}

impl Problem {
    /// The process exit code for this problem.
    pub fn exit_code(self) -> u8 {
        match self {
            Problem::Invalid => 3,
            Problem::File => 4,
            Problem::Unreachable => 5,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Problem::Invalid => "invalid",
            Problem::File => "file",
            Problem::Unreachable => "unreachable",
        }
    }
}

/// One line of the report: a check passed, or a problem with a setting.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `None`: the check passed.
    pub problem: Option<Problem>,
    /// The setting checked (`policy_file`, `auth.keytab`, ...).
    pub setting: String,
    /// What was found.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.problem.map_or("ok", Problem::label);
        write!(f, "{status:<12} {}: {}", self.setting, self.message)
    }
}

/// Every finding of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order checked.
    pub findings: Vec<Finding>,
}

impl Report {
    fn ok(&mut self, setting: &str, message: impl Into<String>) {
        self.push(None, setting, message);
    }

    fn bad(&mut self, problem: Problem, setting: &str, message: impl Into<String>) {
        self.push(Some(problem), setting, message);
    }

    fn push(&mut self, problem: Option<Problem>, setting: &str, message: impl Into<String>) {
        self.findings.push(Finding {
            problem,
            setting: setting.to_string(),
            message: message.into(),
        });
    }

    /// 0, or the code of the most basic problem found.
    pub fn exit_code(&self) -> u8 {
        self.findings
            .iter()
            .filter_map(|f| f.problem)
            .min()
            .map_or(0, Problem::exit_code)
    }
}

/// Checks a configuration file and every file it names; with `reach`, also
/// that kadmind and the KDC accept the admin principal's keytab.
pub async fn check(config: &Path, reach: bool) -> Report {
    let mut r = Report::default();
    let cfg = match Config::load(config) {
        Ok(cfg) => {
            r.ok("config", format!("{} is valid", config.display()));
            cfg
        }
        Err(e) => {
            r.bad(Problem::Invalid, "config", e.to_string());
            return r;
        }
    };
    check_sources(&cfg, &mut r);
    check_secrets(&cfg, &mut r);
    check_other_files(&cfg, &mut r);
    if reach {
        check_reach(&cfg, &mut r).await;
    }
    r
}

/// Reads a file the configuration names; a failure is a finding.
fn read(r: &mut Report, setting: &str, path: &Path) -> Option<Zeroizing<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(Zeroizing::new(bytes)),
        Err(e) => {
            r.bad(Problem::File, setting, format!("{}: {e}", path.display()));
            None
        }
    }
}

fn as_text<'a>(r: &mut Report, setting: &str, path: &Path, bytes: &'a [u8]) -> Option<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Some(t),
        Err(_) => {
            r.bad(
                Problem::Invalid,
                setting,
                format!("{} is not UTF-8", path.display()),
            );
            None
        }
    }
}

/// The hot-reloaded policy and the pod source.
fn check_sources(cfg: &Config, r: &mut Report) {
    // Without a policy file the policy is synced from the directory (the
    // config's own validation requires one of the two).
    if let Some(path) = &cfg.policy_file
        && let Some(bytes) = read(r, "policy_file", path)
        && let Some(text) = as_text(r, "policy_file", path, &bytes)
    {
        match crate::policy::parse_policy(path, text, &crate::realms::served(cfg)) {
            Ok(p) => r.ok(
                "policy_file",
                format!("{}: {} role accounts", path.display(), p.len()),
            ),
            Err(e) => r.bad(Problem::Invalid, "policy_file", e.to_string()),
        }
    }
    if let Some(path) = &cfg.pods_file
        && let Some(bytes) = read(r, "pods_file", path)
        && let Some(text) = as_text(r, "pods_file", path, &bytes)
    {
        match crate::pods::file_source::parse_pods(path, text) {
            Ok(p) => r.ok("pods_file", format!("{}: {} pods", path.display(), p.len())),
            Err(e) => r.bad(Problem::Invalid, "pods_file", e.to_string()),
        }
    }
    if let Some(kubeconfig) = cfg.kubernetes.as_ref().and_then(|k| k.kubeconfig.as_ref())
        && read(r, "kubernetes.kubeconfig", kubeconfig).is_some()
    {
        r.ok(
            "kubernetes.kubeconfig",
            format!("{} is readable", kubeconfig.display()),
        );
    }
}

/// A file only the controller may read; for keytabs, also a whole keytab.
fn private(r: &mut Report, setting: &str, path: &Path, keytab: bool) {
    if let Err(reason) = crate::private_file::check(path) {
        r.bad(
            Problem::File,
            setting,
            format!("{}: {reason}", path.display()),
        );
        return;
    }
    if keytab {
        let Some(bytes) = read(r, setting, path) else {
            return;
        };
        if let Err(e) = crate::keytab::Keytab::parse(bytes) {
            r.bad(Problem::File, setting, format!("{}: {e}", path.display()));
            return;
        }
    }
    r.ok(
        setting,
        format!("{} is private to its owner", path.display()),
    );
}

/// Keys and keytabs: present, private, well formed.
fn check_secrets(cfg: &Config, r: &mut Report) {
    match MasterKey::load(&cfg.master_key_file) {
        Ok(k) => r.ok(
            "master_key_file",
            format!("{}: key {}", cfg.master_key_file.display(), k.id()),
        ),
        Err(e) => r.bad(Problem::File, "master_key_file", e.to_string()),
    }
    private(r, "kadmin.keytab", &cfg.kadmin.keytab, true);
    if cfg.auth.mode == AuthMode::Kerberos
        && let Some(keytab) = &cfg.auth.keytab
    {
        private(r, "auth.keytab", keytab, true);
    }
    // Created at first start if missing.
    if cfg.audit_key.exists() {
        private(r, "audit_key", &cfg.audit_key, false);
    } else {
        parent_exists(r, "audit_key", &cfg.audit_key);
    }
    if let Some(key) = &cfg.certs.ca_key_file {
        private(r, "certs.ca_key_file", key, false);
    }
    if let Some(key) = cfg.tls.as_ref().and_then(|t| t.key_file.as_ref()) {
        private(r, "tls.key_file", key, false);
    }
    // Further realms' admin credentials.
    for realm in &cfg.realms {
        let at = |field: &str| format!("realms[{:?}].{field}", realm.name);
        if let Some(k) = &realm.kadmin {
            private(r, &at("kadmin.keytab"), &k.keytab, true);
        }
        if let Some(ad) = &realm.active_directory {
            if let Some(pw) = &ad.bind_password_file {
                private(r, &at("active_directory.bind_password_file"), pw, false);
            }
            if let Some(kt) = &ad.bind_keytab {
                private(r, &at("active_directory.bind_keytab"), kt, true);
            }
        }
    }
}

fn parent_exists(r: &mut Report, setting: &str, path: &Path) {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent.map(|p| (p, p.is_dir())) {
        Some((_, true)) | None => r.ok(setting, format!("{} will be created", path.display())),
        Some((p, false)) => r.bad(
            Problem::File,
            setting,
            format!(
                "{}: directory {} does not exist",
                path.display(),
                p.display()
            ),
        ),
    }
}

/// Files that are not secret but must be there.
fn check_other_files(cfg: &Config, r: &mut Report) {
    let mut readable = |setting: &str, path: &Path| {
        if read(r, setting, path).is_some() {
            r.ok(setting, format!("{} is readable", path.display()));
        }
    };
    if let Some(p) = &cfg.krb5_config {
        readable("krb5_config", p);
    }
    readable("pod_krb5_conf", &cfg.pod_krb5_conf_path());
    for realm in &cfg.realms {
        if let Some(p) = &realm.krb5_config {
            readable(&format!("realms[{:?}].krb5_config", realm.name), p);
        }
        if let Some(p) = realm
            .active_directory
            .as_ref()
            .and_then(|ad| ad.ca_file.as_ref())
        {
            readable(
                &format!("realms[{:?}].active_directory.ca_file", realm.name),
                p,
            );
        }
    }
    if let Some(p) = &cfg.certs.ca_cert_file {
        readable("certs.ca_cert_file", p);
    }
    if let Some(t) = &cfg.tls {
        for (setting, p) in [
            ("tls.cert_file", &t.cert_file),
            ("tls.client_ca_file", &t.client_ca_file),
        ] {
            if let Some(p) = p {
                readable(setting, p);
            }
        }
        for p in &t.extra_trusted_ca_files {
            readable("tls.extra_trusted_ca_files", p);
        }
    }
    if cfg.audit_log.exists() {
        match std::fs::OpenOptions::new()
            .append(true)
            .open(&cfg.audit_log)
        {
            Ok(_) => r.ok(
                "audit_log",
                format!("{} is writable", cfg.audit_log.display()),
            ),
            Err(e) => r.bad(
                Problem::File,
                "audit_log",
                format!("{}: {e}", cfg.audit_log.display()),
            ),
        }
    } else {
        parent_exists(r, "audit_log", &cfg.audit_log);
    }
    if cfg.store.backend == BackendKind::Embedded
        && let Some(p) = &cfg.store_path
    {
        if p.exists() {
            r.ok("store_path", format!("{} exists", p.display()));
        } else {
            parent_exists(r, "store_path", p);
        }
    }
}

/// kadmind and the KDC, reached as the controller reaches them: the admin
/// principal's keytab, the configured tools and `krb5.conf`; for each
/// further MIT realm the same with its `[realms.kadmin]` and the
/// `krb5.conf` the controller would write for it (or its `krb5_config`).
async fn check_reach(cfg: &Config, r: &mut Report) {
    reach_mit(
        cfg,
        r,
        "",
        cfg.krb5_config.as_deref(),
        &cfg.kadmin.principal,
        &cfg.kadmin.keytab,
    )
    .await;
    for realm in &cfg.realms {
        let Some(k) = &realm.kadmin else {
            continue;
        };
        let at = format!("realms[{:?}].", realm.name);
        let scratch = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => {
                r.bad(Problem::File, &format!("{at}krb5_config"), e.to_string());
                continue;
            }
        };
        let conf = match &realm.krb5_config {
            Some(p) => p.clone(),
            None => {
                let p = scratch.path().join("krb5.conf");
                let text = crate::realms::krb5_conf::for_tools(
                    &realm.name,
                    &crate::realms::krb5_conf::RealmServers {
                        kdcs: realm.kdcs.clone(),
                        admin_server: Some(k.admin_server.clone()),
                    },
                );
                if let Err(e) = std::fs::write(&p, text) {
                    r.bad(Problem::File, &format!("{at}krb5_config"), e.to_string());
                    continue;
                }
                p
            }
        };
        reach_mit(cfg, r, &at, Some(&conf), &k.principal, &k.keytab).await;
    }
}

/// One MIT realm: a ticket for its admin principal from its KDC, and its
/// kadmind's answer (settings `<prefix>kdc`, `<prefix>kadmin`).
async fn reach_mit(
    cfg: &Config,
    r: &mut Report,
    prefix: &str,
    krb5: Option<&Path>,
    principal: &str,
    keytab: &Path,
) {
    let timeout = Duration::from_secs(cfg.kadmin.timeout_secs);
    let (kdc_setting, kadmin_setting) = (format!("{prefix}kdc"), format!("{prefix}kadmin"));
    let kinit = run_tool(
        krb5,
        &cfg.tickets.kinit,
        &[
            "-k".as_ref(),
            "-t".as_ref(),
            keytab.as_os_str(),
            principal.as_ref(),
        ],
        timeout,
    )
    .await;
    match kinit {
        Ok(_) => r.ok(
            &kdc_setting,
            format!("the KDC issued a ticket to {principal}"),
        ),
        Err(e) => r.bad(Problem::Unreachable, &kdc_setting, e),
    }
    let kadmin = run_tool(
        krb5,
        &cfg.kadmin.program,
        &[
            "-k".as_ref(),
            "-t".as_ref(),
            keytab.as_os_str(),
            "-p".as_ref(),
            principal.as_ref(),
            "-q".as_ref(),
            "get_privs".as_ref(),
        ],
        timeout,
    )
    .await;
    match kadmin {
        Ok(out) => {
            let privs = out
                .lines()
                .find(|l| l.starts_with("current privileges:"))
                .unwrap_or("logged in")
                .to_string();
            r.ok(&kadmin_setting, format!("kadmind: {privs}"))
        }
        Err(e) => r.bad(Problem::Unreachable, &kadmin_setting, e),
    }
}

/// Runs a Kerberos tool with the controller's environment rules; its
/// stdout, or the first line it complained with.
async fn run_tool(
    krb5: Option<&Path>,
    program: &Path,
    args: &[&std::ffi::OsStr],
    timeout: Duration,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    crate::child_env::minimal(&mut cmd, krb5, "MEMORY:kcred-check");
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{}: {e}", program.display())),
        Err(_) => {
            return Err(format!(
                "{} did not answer within {} s",
                program.display(),
                timeout.as_secs()
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // kadmin -q reports a failed query on stderr but exits 0.
    let complaint = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Authenticating as"));
    let tool = program.file_name().unwrap_or_default().to_string_lossy();
    match (out.status.success(), complaint) {
        (true, None) => Ok(stdout),
        // The tools name themselves ("kinit: Cannot find KDC...").
        (_, Some(line)) if line.starts_with(&format!("{tool}:")) => Err(line.to_string()),
        (_, Some(line)) => Err(format!("{tool}: {line}")),
        (false, None) => Err(format!("{} exited with {}", program.display(), out.status)),
    }
}
