//! Prestashed tickets: renewable, forwardable TGTs for unix role accounts.
//!
//! The controller holds each role account's keytab (extracted earlier with
//! `ktadd -norandkey`); pods must only ever see a credential cache. An AS
//! exchange with that keytab yields the TGT, and TGS renewals keep it fresh
//! until its renewable lifetime ends, after which it is acquired anew.
//!
//! Mechanism: MIT's own `kinit`, run as a child process. It is the reference
//! client (preauth, enctype negotiation, FAST, KDC discovery from krb5.conf)
//! and writes exactly the ccache format the pods' libraries read, so kcred
//! carries no Kerberos crypto, no FFI and no unsafe code. GSSAPI's
//! `gss_acquire_cred_from` would reach the same library through FFI for no
//! gain; a pure-Rust AS client would mean reimplementing preauth and crypto.
//! The price is two files on disk for the few milliseconds `kinit` runs:
//! each operation gets a fresh 0700 directory (tmpfs in production) holding a
//! 0600 keytab and ccache, zeroed and removed by a drop guard on every path,
//! cancellation included. `kinit` runs with a cleared environment, `LC_ALL=C`
//! (its messages are then stable enough to classify) and arguments passed as
//! argv, never through a shell.
//!
//! Ticket times and flags are read from the ccache bytes themselves (the
//! `ccache` submodule), not from `klist`'s locale-dependent output.

mod ccache;
mod kinit;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use self::kinit::{Scratch, classify, file_name};
use crate::keytab::Keytab;

/// Share of a ticket's lifetime after which kcred refreshes it: late enough
/// to spare the KDC, early enough to survive a KDC outage of a third of it.
pub const REFRESH_FRACTION: f64 = 2.0 / 3.0;

/// How tickets are obtained.
#[derive(Debug, Clone)]
pub struct TicketConfig {
    /// The `kinit` program (looked up in `PATH` unless it has a slash).
    pub kinit: PathBuf,
    /// `KRB5_CONFIG` for `kinit`; `None` passes on this process's own.
    pub krb5_config: Option<PathBuf>,
    /// Private directory for the short-lived keytab and ccache files; should
    /// be on tmpfs and used by no other issuer.
    pub work_dir: PathBuf,
    /// Requested ticket lifetime (the KDC may shorten it).
    pub lifetime: Duration,
    /// Requested renewable lifetime; zero asks for a non-renewable ticket.
    pub renew_lifetime: Duration,
    /// How long one `kinit` run may take before it is killed.
    pub timeout: Duration,
}

impl TicketConfig {
    /// MIT's usual defaults: 24 h tickets, renewable for 7 days.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        TicketConfig {
            kinit: PathBuf::from("kinit"),
            krb5_config: None,
            work_dir: work_dir.into(),
            lifetime: Duration::from_secs(24 * 3600),
            renew_lifetime: Duration::from_secs(7 * 24 * 3600),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a ticket could not be obtained or renewed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TicketError {
    /// No KDC answered (or `kinit` timed out); retry later.
    #[error("KDC unavailable: {0}")]
    KdcUnavailable(String),
    /// The KDC or the keytab rejected the principal (unknown principal,
    /// stale keys, ...); retrying with the same keytab will not help.
    #[error("ticket for {principal} refused: {message}")]
    Refused {
        /// The principal asked for.
        principal: String,
        /// kinit's explanation.
        message: String,
    },
    /// The ticket cannot be renewed (not renewable, or its renewable
    /// lifetime is over); acquire a new one instead.
    #[error("ticket cannot be renewed: {0}")]
    NotRenewable(String),
    /// The ccache is not a v4 FILE ccache holding a TGT.
    #[error("malformed credential cache: {0}")]
    Malformed(String),
    /// The principal's name cannot be a Kerberos client name (a policy
    /// error: retrying will not help).
    #[error("invalid principal name {0:?}")]
    InvalidPrincipal(String),
    /// A local failure (files, spawning kinit, unexpected kinit errors).
    #[error("ticket operation failed: {0}")]
    Failed(String),
}

impl crate::gate::Transient for TicketError {
    fn is_transient(&self) -> bool {
        matches!(self, TicketError::KdcUnavailable(_))
    }
}

impl TicketError {
    /// Whether the same request may succeed later without changes.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TicketError::KdcUnavailable(_) | TicketError::Failed(_)
        )
    }
}

/// A TGT and the ccache holding it. Times are on this host's clock: the KDC
/// offset recorded in the cache is taken out. Never printed with its bytes.
#[derive(Clone)]
pub struct Ticket {
    ccache: Zeroizing<Vec<u8>>,
    /// Client principal, e.g. `tsfoo@KCRED.TEST`.
    pub client: String,
    /// When the ticket became valid.
    pub start: SystemTime,
    /// When it expires.
    pub end: SystemTime,
    /// Last moment it can be renewed; equals `end` when not renewable.
    pub renew_till: SystemTime,
    /// Carries the forwardable flag (needed for delegation from pods).
    pub forwardable: bool,
    /// Carries the renewable flag.
    pub renewable: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("client", &self.client)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("renew_till", &self.renew_till)
            .field("forwardable", &self.forwardable)
            .field("renewable", &self.renewable)
            .field("ccache_len", &self.ccache.len())
            .finish()
    }
}

impl Ticket {
    /// Reads a v4 FILE ccache such as `kinit` writes.
    pub fn parse(ccache: Zeroizing<Vec<u8>>) -> Result<Ticket, TicketError> {
        let tgt = ccache::parse_tgt(&ccache).map_err(TicketError::Malformed)?;
        let local = |t: u32| {
            let kdc = UNIX_EPOCH + Duration::from_secs(u64::from(t));
            let offset = Duration::from_micros(tgt.kdc_offset_micros.unsigned_abs());
            let time = if tgt.kdc_offset_micros >= 0 {
                kdc.checked_sub(offset)
            } else {
                kdc.checked_add(offset)
            };
            time.ok_or_else(|| TicketError::Malformed("KDC time offset out of range".into()))
        };
        let renewable = tgt.flags & ccache::FLAG_RENEWABLE != 0;
        let end = local(tgt.end)?;
        Ok(Ticket {
            client: tgt.client,
            start: local(tgt.start)?,
            end,
            renew_till: if renewable {
                local(tgt.renew_till)?
            } else {
                end
            },
            forwardable: tgt.flags & ccache::FLAG_FORWARDABLE != 0,
            renewable,
            ccache,
        })
    }

    /// The ccache bytes, for sealing and delivery only.
    pub fn ccache(&self) -> &[u8] {
        &self.ccache
    }

    /// When to refresh: `fraction` (clamped to 0..=1, NaN meaning
    /// [`REFRESH_FRACTION`]) of the way from start to end.
    pub fn refresh_at(&self, fraction: f64) -> SystemTime {
        let fraction = if fraction.is_nan() {
            REFRESH_FRACTION
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let life = self.end.duration_since(self.start).unwrap_or_default();
        self.start + life.mul_f64(fraction)
    }

    /// Whether a renewal attempted at `now` can succeed: the ticket is
    /// renewable and its renewable lifetime has not ended.
    pub fn renewable_at(&self, now: SystemTime) -> bool {
        self.renewable && now < self.renew_till
    }

    /// Whether renewing would extend the ticket at all; if not, the caller
    /// should acquire a new one before `end`.
    pub fn renewal_extends(&self) -> bool {
        self.renewable && self.renew_till > self.end
    }
}

/// Obtains and renews TGTs with `kinit`.
#[derive(Debug)]
pub struct KdcClient {
    cfg: TicketConfig,
    seq: AtomicU64,
}

impl KdcClient {
    /// Creates the work dir (0700) and removes what a crashed run left in it.
    pub fn new(cfg: TicketConfig) -> Result<Self, TicketError> {
        if cfg.lifetime < Duration::from_secs(1) || cfg.timeout.is_zero() {
            return Err(TicketError::Failed(
                "ticket lifetime must be at least 1 s and the timeout non-zero".into(),
            ));
        }
        let dir = &cfg.work_dir;
        let leftovers = crate::private_dir::prepare(dir)
            .map_err(|e| TicketError::Failed(format!("work dir {}: {e}", dir.display())))?;
        for path in leftovers {
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(kinit::SCRATCH_PREFIX))
            {
                kinit::wipe_dir(&path);
            }
        }
        Ok(KdcClient {
            cfg,
            seq: AtomicU64::new(0),
        })
    }

    /// Gets a TGT for `principal` from the KDC (AS exchange) with its keytab.
    pub async fn acquire(&self, principal: &str, keytab: &Keytab) -> Result<Ticket, TicketError> {
        if principal.is_empty() || principal.starts_with('-') || principal.contains('\0') {
            return Err(TicketError::InvalidPrincipal(principal.to_string()));
        }
        let scratch = self.scratch()?;
        let keytab_path = scratch.write("keytab", keytab.bytes())?;
        let ccache_path = scratch.dir.join("ccache");
        let mut args: Vec<OsString> = vec!["-k".into(), "-t".into(), file_name(&keytab_path)];
        args.extend([
            "-l".into(),
            format!("{}s", self.cfg.lifetime.as_secs()).into(),
        ]);
        if self.cfg.renew_lifetime.as_secs() > 0 {
            let renew = format!("{}s", self.cfg.renew_lifetime.as_secs());
            args.extend(["-r".into(), renew.into()]);
        }
        args.extend(["-f".into(), "--".into(), principal.into()]);
        kinit::run(&self.cfg, args, &ccache_path)
            .await
            .map_err(|m| classify(principal, m, false))?;
        let ticket = Ticket::parse(scratch.read("ccache")?)?;
        let matches = ticket.client == principal
            || (!principal.contains('@') && ticket.client.starts_with(&format!("{principal}@")));
        if !matches {
            return Err(TicketError::Failed(format!(
                "kinit returned a ticket for {}, not {principal}",
                ticket.client
            )));
        }
        tracing::debug!(principal, end = ?ticket.end, renew_till = ?ticket.renew_till, "acquired TGT");
        Ok(ticket)
    }

    /// Renews a TGT with the KDC (TGS exchange; no long-term key involved).
    /// Past its renewable lifetime this fails with
    /// [`TicketError::NotRenewable`] without contacting the KDC.
    pub async fn renew(&self, ticket: &Ticket) -> Result<Ticket, TicketError> {
        if !ticket.renewable {
            return Err(TicketError::NotRenewable(format!(
                "the ticket for {} is not renewable",
                ticket.client
            )));
        }
        if !ticket.renewable_at(SystemTime::now()) {
            return Err(TicketError::NotRenewable(format!(
                "the renewable lifetime of the ticket for {} has ended",
                ticket.client
            )));
        }
        self.renew_at_kdc(ticket).await
    }

    fn scratch(&self) -> Result<Scratch, TicketError> {
        Scratch::create(&self.cfg.work_dir, || {
            self.seq.fetch_add(1, Ordering::Relaxed)
        })
    }

    /// Renewal without the local checks, so tests can see the KDC's verdict.
    async fn renew_at_kdc(&self, ticket: &Ticket) -> Result<Ticket, TicketError> {
        let scratch = self.scratch()?;
        let ccache_path = scratch.write("ccache", ticket.ccache())?;
        kinit::run(&self.cfg, vec!["-R".into()], &ccache_path)
            .await
            .map_err(|m| classify(&ticket.client, m, true))?;
        let renewed = Ticket::parse(scratch.read("ccache")?)?;
        if renewed.client != ticket.client {
            return Err(TicketError::Failed(format!(
                "renewal returned a ticket for {}, not {}",
                renewed.client, ticket.client
            )));
        }
        tracing::debug!(principal = %renewed.client, end = ?renewed.end, "renewed TGT");
        Ok(renewed)
    }
}
