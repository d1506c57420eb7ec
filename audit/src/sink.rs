//! A second copy of every record for a SIEM: standard output (for a
//! collector reading the container's or unit's output) or the local syslog
//! daemon. Best effort: the file is the durable record, so a sink that
//! cannot take a record loses that copy, logs it once, and never holds up
//! or fails an append. Each copy is the record's stored JSON line, which
//! the SIEM can check on its own ([`AuditRecord::verify_alone`]).

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::AuditRecord;

/// Where the copies go.
#[derive(Debug)]
pub struct Sink {
    target: Target,
    /// The last copy failed: logged once, until one succeeds again.
    failing: AtomicBool,
}

#[derive(Debug)]
enum Target {
    Stdout,
    Syslog {
        socket: UnixDatagram,
        path: PathBuf,
        hostname: String,
    },
}

/// Syslog priority: facility authpriv (10), severity informational (6).
const PRIORITY: u32 = 10 * 8 + 6;

impl Sink {
    /// One JSON line per record on standard output.
    pub fn stdout() -> Self {
        Sink::new(Target::Stdout)
    }

    /// RFC 5424 messages to the syslog daemon's datagram socket (usually
    /// `/dev/log`): `<86>1 TIME HOST kcred-controller PID audit - JSON`.
    /// The socket is not checked here: the daemon may start later.
    pub fn syslog(socket_path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        // A busy daemon drops the copy rather than stall an issuance.
        socket.set_nonblocking(true)?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_string());
        Ok(Sink::new(Target::Syslog {
            socket,
            path: socket_path.to_path_buf(),
            hostname,
        }))
    }

    fn new(target: Target) -> Self {
        Sink {
            target,
            failing: AtomicBool::new(false),
        }
    }

    /// Sends one record (`line`: its stored JSON, without newline).
    pub(super) fn send(&self, record: &AuditRecord, line: &[u8]) {
        let sent = match &self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush())
            }
            Target::Syslog {
                socket,
                path,
                hostname,
            } => {
                let message = syslog_message(hostname, &record.time, line);
                socket.send_to(&message, path).map(drop)
            }
        };
        match sent {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(seq = record.seq, "audit sink takes records again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        seq = record.seq,
                        %error,
                        "audit sink lost a record copy (the audit file has it); \
                         further losses are not logged until it recovers"
                    );
                }
            }
        }
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG`.
fn syslog_message(hostname: &str, time: &str, line: &[u8]) -> Vec<u8> {
    let header = format!(
        "<{PRIORITY}>1 {time} {hostname} kcred-controller {} audit - ",
        std::process::id()
    );
    let mut message = header.into_bytes();
    message.extend_from_slice(line);
    message
}
