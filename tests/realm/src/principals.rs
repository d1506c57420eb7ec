//! Principals and keys, through `kadmin.local` and the client tools.

use super::*;

impl Realm {
    /// Runs `kadmin.local -q QUERY` and returns its stdout (without the
    /// "Authenticating as ..." banner). kadmin.local exits 0 on most failures,
    /// so any stderr line other than known-harmless notices counts as an
    /// error; a test never silently continues after a failed admin step.
    pub fn kadmin_local(&self, query: &str) -> Result<String, RealmError> {
        self.kadmin_local_redacted(query, query)
    }

    fn kadmin_local_redacted(&self, query: &str, shown: &str) -> Result<String, RealmError> {
        let mut cmd = self.tool("kadmin.local");
        cmd.args(["-r", &self.name, "-q", query]);
        let command = format!("kadmin.local -q {shown}");
        let out = run(cmd, command.clone())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !is_harmless_kadmin_line(l))
            .collect();
        if !errors.is_empty() {
            return Err(RealmError::Command {
                command,
                status: out.status.to_string(),
                stderr: errors.join("\n"),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout
            .lines()
            .filter(|l| !l.starts_with("Authenticating as principal "))
            .map(|l| format!("{l}\n"))
            .collect())
    }

    /// Adds a service-style principal with random keys (kvno 1) and a 7-day
    /// renewable lifetime, the shape kcred manages.
    pub fn add_principal(&self, principal: &str) -> Result<(), RealmError> {
        self.kadmin_local(&format!(
            "addprinc -randkey -maxrenewlife {MAX_RENEW_LIFE} {}",
            ss_quote(principal)
        ))
        .map(drop)
    }

    /// Adds a user-style principal with a known password, for tests that
    /// `kinit` interactively. The password is redacted from error messages.
    pub fn add_principal_with_password(
        &self,
        principal: &str,
        password: &str,
    ) -> Result<(), RealmError> {
        let tail = format!("-maxrenewlife {MAX_RENEW_LIFE} {}", ss_quote(principal));
        self.kadmin_local_redacted(
            &format!("addprinc -pw {} {tail}", ss_quote(password)),
            &format!("addprinc -pw *** {tail}"),
        )
        .map(drop)
    }

    /// Deletes a principal, for tests of what happens when an identity goes
    /// away under kcred.
    pub fn delete_principal(&self, principal: &str) -> Result<(), RealmError> {
        self.kadmin_local(&format!("delprinc -force {}", ss_quote(principal)))
            .map(drop)
    }

    /// Gives a principal new random keys (kvno + 1), i.e. a rotation done
    /// behind kcred's back, so tests can check that stale keytabs are noticed.
    pub fn randomize_key(&self, principal: &str) -> Result<(), RealmError> {
        self.kadmin_local(&format!("cpw -randkey {}", ss_quote(principal)))
            .map(drop)
    }

    /// Appends a principal's current keys to `keytab` without changing them
    /// (`ktadd -norandkey`), so tests can prepare keytabs without bumping the
    /// kvno.
    pub fn extract_keytab(&self, principal: &str, keytab: &Path) -> Result<(), RealmError> {
        self.kadmin_local(&format!(
            "ktadd -k {} -norandkey {}",
            ss_quote(&keytab.display().to_string()),
            ss_quote(principal)
        ))
        .map(drop)
    }

    /// Current kvno of a principal as the KDC database holds it (highest
    /// `Key: vno N` in `getprinc`), to check whether an operation rotated keys.
    pub fn kvno(&self, principal: &str) -> Result<u32, RealmError> {
        let query = format!("getprinc {}", ss_quote(principal));
        let out = self.kadmin_local(&query)?;
        out.lines()
            .filter_map(|l| l.strip_prefix("Key: vno "))
            .filter_map(|rest| rest.split(',').next()?.trim().parse::<u32>().ok())
            .max()
            .ok_or_else(|| RealmError::Parse {
                command: format!("kadmin.local -q {query}"),
                output: out.clone(),
            })
    }

    /// Gets a TGT with `kinit -k -t KEYTAB PRINCIPAL` into a fresh private
    /// ccache: the end-to-end proof that a delivered keytab is usable.
    pub fn kinit_keytab(&self, keytab: &Path, principal: &str) -> Result<(), RealmError> {
        let n = self.ccache_seq.fetch_add(1, Ordering::Relaxed);
        let ccache = self.dir().join(format!("kinit-{n}.ccache"));
        let mut cmd = self.tool("kinit");
        cmd.env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
            .arg("-k")
            .arg("-t")
            .arg(keytab)
            .arg(principal);
        run(cmd, format!("kinit -k -t {} {principal}", keytab.display())).map(drop)
    }

    /// Number of successful key extractions kadmind has logged for
    /// `principal` (or for any principal if `None`): what reached the
    /// server, counted at the server.
    pub fn kadmind_extractions(&self, principal: Option<&str>) -> Result<Vec<String>, RealmError> {
        let log = self.dir().join("kadmind.log");
        let text = fs::read_to_string(&log)
            .map_err(|e| io_err(format!("reading {}", log.display()), e))?;
        Ok(text
            .lines()
            .filter(|l| l.contains("Request: kadm5_get_principal_keys, "))
            .filter(|l| l.contains(", success, "))
            .filter(|l| {
                principal.is_none_or(|p| l.contains(&format!("kadm5_get_principal_keys, {p}@")))
            })
            .map(str::to_string)
            .collect())
    }
}

/// Notices kadmin.local prints on stderr even when it succeeds.
pub(crate) fn is_harmless_kadmin_line(line: &str) -> bool {
    let line = line.trim();
    line.is_empty()
        || line.starts_with("No policy specified for ")
        || line.starts_with("WARNING: no policy specified for ")
        || line.starts_with("Authenticating as principal ")
}

/// Quotes an argument for kadmin's request parser (libss): double quotes,
/// with embedded quotes doubled, so spaces and quotes survive.
pub(crate) fn ss_quote(arg: &str) -> String {
    format!("\"{}\"", arg.replace('"', "\"\""))
}

/// Runs a command to completion; non-zero exit becomes an error with stderr.
pub(crate) fn run(mut cmd: Command, display: String) -> Result<Output, RealmError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_err(format!("running `{display}`"), e))?;
    if !out.status.success() {
        return Err(RealmError::Command {
            command: display,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}
