//! One long-lived `kadmin` process and the command protocol over it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, Command};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::keytab::Keytab;
use crate::names::Principal;

/// How to reach kadmind.
#[derive(Debug, Clone)]
pub struct KadminConfig {
    /// The `kadmin` client binary.
    pub program: PathBuf,
    /// The controller's admin principal (needs the `e` privilege).
    pub principal: String,
    /// Keytab holding the admin principal's key.
    pub keytab: PathBuf,
    /// `KRB5_CONFIG` for the child, if not the system default.
    pub krb5_config: Option<PathBuf>,
    /// Private directory for transient keytab files (ideally tmpfs).
    pub work_dir: PathBuf,
    /// Longest wait for one command.
    pub timeout: Duration,
}

/// Why an extraction failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KadminError {
    /// The principal is not in the KDC database.
    #[error("principal {0} does not exist in the KDC")]
    NoSuchPrincipal(String),
    /// The admin side refused (kadmind: missing ACL privilege, locked-down
    /// keys; AD: LDAP rights or policy, an account shared between names).
    #[error("the KDC's administration refused {principal}: {message}")]
    Refused {
        /// The principal.
        principal: String,
        /// kadmin's words.
        message: String,
    },
    /// kadmind or the KDC cannot be reached; retry later.
    #[error("kadmind unavailable: {0}")]
    Unavailable(String),
    /// Anything else kadmin reported, or a local failure.
    #[error("kadmin failed: {0}")]
    Failed(String),
}

struct Session {
    child: Child,
    stdin: ChildStdin,
    stderr: Lines<BufReader<ChildStderr>>,
}

/// A client that owns one kadmin session and respawns it when it dies.
pub struct KadminClient {
    cfg: KadminConfig,
    session: Mutex<Option<Session>>,
    seq: AtomicU64,
}

fn path_is_safe_for_kadmin(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        s.starts_with('/')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
    })
}

/// Text kadmin prints when the server side is unreachable.
fn is_unavailable(msg: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "Cannot contact any KDC",
        "Communication failure",
        "while initializing kadmin interface",
        "Connection refused",
        "GSS-API (or Kerberos) error",
    ];
    MARKERS.iter().any(|m| msg.contains(m))
}

impl KadminClient {
    /// Prepares the work directory (created 0700, leftovers wiped); the
    /// session itself starts lazily on first use.
    pub fn new(cfg: KadminConfig) -> Result<Self, KadminError> {
        if !path_is_safe_for_kadmin(&cfg.work_dir) {
            return Err(KadminError::Failed(format!(
                "work dir {} must be an absolute path of letters, digits, '/', '.', '_' and '-'",
                cfg.work_dir.display()
            )));
        }
        let io = |e: std::io::Error| {
            KadminError::Failed(format!("work dir {}: {e}", cfg.work_dir.display()))
        };
        for path in crate::private_dir::prepare(&cfg.work_dir).map_err(io)? {
            if path.extension().is_some_and(|e| e == "keytab") {
                std::fs::remove_file(&path).map_err(io)?;
            }
        }
        Ok(KadminClient {
            cfg,
            session: Mutex::new(None),
            seq: AtomicU64::new(0),
        })
    }

    fn spawn(&self) -> Result<Session, KadminError> {
        let mut cmd = Command::new(&self.cfg.program);
        cmd.arg("-k")
            .arg("-t")
            .arg(&self.cfg.keytab)
            .arg("-p")
            .arg(&self.cfg.principal)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The controller's environment is not kadmin's.
        crate::child_env::minimal(
            &mut cmd,
            self.cfg.krb5_config.as_deref(),
            "MEMORY:kcred-kadmin",
        );
        let mut child = cmd.spawn().map_err(|e| {
            KadminError::Failed(format!("cannot start {}: {e}", self.cfg.program.display()))
        })?;
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            return Err(KadminError::Failed("kadmin pipes missing".into()));
        };
        Ok(Session {
            child,
            stdin,
            stderr: BufReader::new(stderr).lines(),
        })
    }

    /// Runs one command and returns the stderr lines it produced.
    async fn run(&self, session: &mut Session, command: &str) -> Result<Vec<String>, KadminError> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let marker = format!("kcred-sync-{n}");
        let input = format!("{command}\n{marker}\n");
        session
            .stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| KadminError::Unavailable(format!("kadmin session closed: {e}")))?;
        session
            .stdin
            .flush()
            .await
            .map_err(|e| KadminError::Unavailable(format!("kadmin session closed: {e}")))?;
        let mut lines = Vec::new();
        let read = async {
            loop {
                match session.stderr.next_line().await {
                    // kadmin's exact answer to the unknown sentinel request;
                    // validated names cannot contain quotes, so no error
                    // line can imitate it.
                    Ok(Some(line)) if line.contains(&format!("Unknown request \"{marker}\"")) => {
                        return Ok(());
                    }
                    Ok(Some(line)) => lines.push(line),
                    Ok(None) => {
                        return Err(KadminError::Unavailable(if lines.is_empty() {
                            "kadmin exited".to_string()
                        } else {
                            lines.join("; ")
                        }));
                    }
                    Err(e) => return Err(KadminError::Unavailable(format!("reading kadmin: {e}"))),
                }
            }
        };
        match tokio::time::timeout(self.cfg.timeout, read).await {
            Ok(Ok(())) => Ok(lines),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KadminError::Unavailable(format!(
                "kadmin did not answer within {:?}",
                self.cfg.timeout
            ))),
        }
    }

    /// Extracts a principal's current keys (every kvno kadmind holds)
    /// without changing them.
    pub async fn extract_keytab(&self, principal: &Principal) -> Result<Keytab, KadminError> {
        let file = self.cfg.work_dir.join(format!(
            "{}-{:016x}.keytab",
            self.seq.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        ));
        let _cleanup = RemoveOnDrop(file.clone());
        self.execute(
            principal,
            &format!("ktadd -k {} -norandkey {principal}", file.display()),
        )
        .await?;
        let bytes = tokio::fs::read(&file).await.map_err(|e| {
            KadminError::Failed(format!(
                "kadmin reported success but {} is unreadable: {e}",
                file.display()
            ))
        })?;
        Keytab::parse(Zeroizing::new(bytes))
            .map_err(|e| KadminError::Failed(format!("keytab from kadmin for {principal}: {e}")))
    }

    /// Gives the principal new random keys and keeps the old ones, so
    /// keytabs already out keep working during the grace period (privilege
    /// `c`).
    pub async fn randomize_keep_old(&self, principal: &Principal) -> Result<(), KadminError> {
        self.execute(principal, &format!("cpw -randkey -keepold {principal}"))
            .await
    }

    /// Ends a grace period: drops every key older than `keep_kvno`
    /// (privilege `m`). Never `-all`, which would restart kvnos at 1.
    pub async fn purge_keys(
        &self,
        principal: &Principal,
        keep_kvno: u32,
    ) -> Result<(), KadminError> {
        self.execute(
            principal,
            &format!("purgekeys -keepkvno {keep_kvno} {principal}"),
        )
        .await
    }

    /// Runs one command on the session; classifies what kadmin printed.
    /// Opens the session ahead of the first extraction (best effort): the
    /// connection and authentication to kadmind then never delay, and
    /// bunch up, the first operations the gate admits.
    pub async fn warm_up(&self) -> Result<(), KadminError> {
        let mut guard = self.session.lock().await;
        if guard.is_some() {
            return Ok(());
        }
        let mut session = self.spawn()?;
        // A blank line: no request, just the sentinel that proves the
        // session answers.
        let answered = self.run(&mut session, "").await;
        match answered {
            Ok(_) => {
                *guard = Some(session);
                Ok(())
            }
            Err(e) => {
                let _ = session.child.start_kill();
                Err(e)
            }
        }
    }

    async fn execute(&self, principal: &Principal, command: &str) -> Result<(), KadminError> {
        let mut guard = self.session.lock().await;
        // The session is out of the slot while a command runs, and goes
        // back only once its answer has been read to the end: a call
        // cancelled half way (its caller gave up) drops the session, which
        // kills the process, instead of leaving the next command to read
        // this one's answer as its own.
        let mut session = match guard.take() {
            Some(s) => s,
            None => self.spawn()?,
        };
        let errors = match self.run(&mut session, command).await {
            Ok(lines) => lines,
            Err(e) => {
                let _ = session.child.start_kill();
                return Err(e);
            }
        };
        let message = errors.join("; ");
        if !errors.is_empty() && is_unavailable(&message) {
            // The connection is broken: start afresh next time.
            let _ = session.child.start_kill();
            return Err(KadminError::Unavailable(message));
        }
        *guard = Some(session);
        if errors.is_empty() {
            return Ok(());
        }
        drop(guard);
        if message.contains("does not exist") {
            return Err(KadminError::NoSuchPrincipal(principal.to_string()));
        }
        if message.contains("privilege")
            || message.contains("not permitted")
            || message.contains("lockdown")
        {
            return Err(KadminError::Refused {
                principal: principal.to_string(),
                message,
            });
        }
        Err(KadminError::Failed(message))
    }
}

impl crate::gate::Transient for KadminError {
    fn is_transient(&self) -> bool {
        matches!(self, KadminError::Unavailable(_))
    }
}

fn rand_suffix() -> u64 {
    // Uniqueness comes from the sequence number beside it; a failed
    // generator only makes the name predictable, never reused.
    crate::crypto::random::u64().unwrap_or_default()
}

/// Deletes a transient keytab file whatever happens.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(path = %self.0.display(), error = %e, "cannot remove transient keytab");
        }
    }
}
