//! Controller side: verifies one token per call.

use std::path::{Path, PathBuf};

use libgssapi::context::{CtxFlags, SecurityContext, ServerCtx};
use libgssapi::credential::Cred;
use libgssapi::error::MajorFlags;
use libgssapi::oid::GSS_MECH_KRB5;

use crate::AuthError;
use crate::initiator::keytab_name;
use crate::store::{self, AcquireError, GssFailure, Usage};
use crate::warm::Warm;

/// `KRB5KRB_AP_ERR_REPEAT` ("Request is a replay") as a GSSAPI minor status:
/// MIT 1.20 reports a replay as GSS_S_FAILURE with this minor code (other
/// implementations use the GSS_S_DUPLICATE_TOKEN bit, also checked).
const KRB5KRB_AP_ERR_REPEAT: u32 = (-1_765_328_384_i32 + 34) as u32;

/// Controller side: checks that a token was made by a principal whose key
/// the KDC holds, for a service whose key is in the controller's keytab.
///
/// Every key in the keytab is accepted as a target, so the keytab must hold
/// only the controller's own service principal(s). Verification is local
/// (decrypting the ticket with the keytab's key): no KDC, no `krb5.conf`
/// and no environment variable is needed.
///
/// Replays are refused through MIT's replay cache, which remembers each
/// authenticator for the clock-skew window (5 minutes by default; older or
/// future-dated tokens are refused outright, so controller and nodes need
/// synchronised clocks). The cache is one file, safely shared by threads
/// and processes that use it; controller replicas with separate files do
/// not see each other's, so a token captured on the wire could be replayed
/// once to each replica within that window: TLS is what keeps tokens off the
/// wire.
///
/// `Send + Sync`: share one behind an `Arc`. [`Acceptor::accept`] blocks:
/// CPU work plus reads of the keytab and a locked read and write of the
/// replay cache file, which can wait as long as that file's lock is held
/// or its disk is stalled. Call it from a blocking thread, not an async
/// worker; `cargo bench -p kcred-auth --bench accept_cost` measures it.
pub struct Acceptor {
    cred: Cred,
    keytab: PathBuf,
    /// Keeps MIT's parsed `krb5.conf` between tokens.
    warm: Warm<ServerCtx>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("keytab", &self.keytab)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// Loads the controller's keytab (e.g. holding
    /// `kcred/controller.example.com@REALM`) with MIT's default replay cache
    /// (`$KRB5RCACHEDIR` or `/var/tmp`, one file per uid, or whatever
    /// `KRB5RCACHENAME` says), which needs a writable directory there. Prefer [`Acceptor::with_replay_cache`] in a
    /// container, where that directory may be read-only or not persistent.
    pub fn new(keytab: &Path) -> Result<Acceptor, AuthError> {
        Acceptor::build(keytab, None)
    }

    /// Like [`Acceptor::new`] with the replay cache in the file
    /// `replay_cache` (MIT `file2` format, created if missing). Keep it on
    /// storage that survives restarts, so a token accepted just before a
    /// restart cannot be accepted again just after; two acceptors (or
    /// processes) using the same file also share replay detection.
    pub fn with_replay_cache(keytab: &Path, replay_cache: &Path) -> Result<Acceptor, AuthError> {
        let path = replay_cache
            .to_str()
            .ok_or_else(|| AuthError::invalid("replay cache path", "not valid UTF-8"))?;
        if path.is_empty() || path.contains('\0') {
            return Err(AuthError::invalid(
                "replay cache path",
                "empty or contains a NUL byte",
            ));
        }
        Acceptor::build(keytab, Some(format!("file2:{path}")))
    }

    fn build(keytab: &Path, rcache: Option<String>) -> Result<Acceptor, AuthError> {
        let kt = keytab_name(keytab)?;
        let mut entries = vec![("keytab", kt.as_str())];
        if let Some(rc) = rcache.as_deref() {
            entries.push(("rcache", rc));
        }
        let cred =
            store::acquire_cred_from(None, Usage::Accept, &entries).map_err(|e| match e {
                AcquireError::Argument(reason) => AuthError::invalid("acceptor argument", reason),
                AcquireError::Gss(f) => AuthError::Credentials {
                    usage: "acceptor",
                    principal: "any key".to_string(),
                    keytab: keytab.to_path_buf(),
                    reason: f.message,
                },
            })?;
        tracing::debug!(keytab = %keytab.display(), rcache = ?rcache, "kerberos acceptor ready");
        Ok(Acceptor {
            cred,
            keytab: keytab.to_path_buf(),
            warm: Warm::default(),
        })
    }

    /// Verifies one token and returns the client principal it proves, e.g.
    /// `host/node-a.example.com@KCRED.TEST`, always with its realm; map it to
    /// a node with [`crate::node_name_from_principal`] before trusting it for
    /// anything node-specific.
    ///
    /// Only the Kerberos 5 mechanism is accepted (the credential has no
    /// SPNEGO element), and the token must complete the context in one step,
    /// since per-call tokens have no round trip. If the
    /// client asked for mutual authentication the reply token is dropped;
    /// that client simply gets no proof of the controller from Kerberos.
    pub fn accept(&self, token: &[u8]) -> Result<String, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Rejected("empty token".into()));
        }
        let mut ctx = ServerCtx::new(Some(self.cred.clone()));
        if let Err(e) = ctx.step(token, None) {
            let failure = GssFailure::from_gss(e);
            return Err(if is_replay(&failure) {
                AuthError::Replay
            } else {
                AuthError::Rejected(failure.message)
            });
        }
        if !ctx.is_complete() {
            return Err(AuthError::Rejected(
                "token needs another round trip; send a plain Kerberos AP-REQ".into(),
            ));
        }
        let rejected = |e| AuthError::Rejected(GssFailure::from_gss(e).message);
        if ctx
            .flags()
            .map_err(rejected)?
            .contains(CtxFlags::GSS_C_ANON_FLAG)
        {
            return Err(AuthError::Rejected(
                "anonymous tokens are not accepted".into(),
            ));
        }
        if ctx.mechanism().map_err(rejected)? != GSS_MECH_KRB5 {
            return Err(AuthError::Rejected("token is not Kerberos 5".into()));
        }
        let name = ctx.source_name().map_err(rejected)?;
        let shown = name.display_name().map_err(rejected)?;
        let principal = std::str::from_utf8(&shown)
            .map_err(|_| AuthError::Rejected("client principal is not UTF-8".into()))?
            .to_string();
        tracing::debug!(principal = %principal, "kerberos token accepted");
        self.warm.keep(ctx);
        Ok(principal)
    }
}

fn is_replay(f: &GssFailure) -> bool {
    f.major & MajorFlags::GSS_S_DUPLICATE_TOKEN.bits() != 0 || f.minor == KRB5KRB_AP_ERR_REPEAT
}
