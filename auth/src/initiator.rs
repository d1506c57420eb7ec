//! Driver side: one fresh Kerberos AP-REQ per gRPC call.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::Cred;
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, GSS_NT_KRB5_PRINCIPAL};

use crate::AuthError;
use crate::store::{self, AcquireError, GssFailure, Usage};
use crate::warm::Warm;

/// Makes every initiator's memory ccache distinct: MIT's `MEMORY:` caches are
/// process-global by name, and two initiators sharing one would mix tickets.
static CCACHE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Driver side: proves this node's identity to the controller with one fresh
/// token per request.
///
/// It holds the node's client keytab and a private in-memory credential
/// cache. [`Initiator::new`] gets a TGT from the KDC at once (MIT acquires
/// eagerly when given a client keytab), the first [`Initiator::token`] for a
/// service gets its service ticket, and later calls only encrypt a fresh
/// authenticator (microseconds). MIT gets a new TGT from the keytab by
/// itself before the old one expires, so an `Initiator` can live as long as
/// the process; if the node's keys were changed meanwhile, that refresh (in
/// a `token()` call) is when it starts failing.
///
/// The KDC is located through the process's Kerberos configuration (see the
/// crate docs): `KRB5_CONFIG` must be right when the process starts.
///
/// `Send + Sync`: share one behind an `Arc`. Both [`Initiator::new`] and
/// [`Initiator::token`] may block on the KDC (up to MIT's timeouts), so async
/// callers should run them in `tokio::task::spawn_blocking`.
pub struct Initiator {
    cred: Cred,
    target: Name,
    target_text: String,
    principal: String,
    /// Where the identity comes from, for logs: a keytab or a ticket cache.
    source: String,
    /// Keeps MIT's parsed `krb5.conf` between tokens.
    warm: Warm<ClientCtx>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("principal", &self.principal)
            .field("source", &self.source)
            .field("target", &self.target_text)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Sets up the node's identity and fetches its TGT from the KDC, so a
    /// missing or stale keytab, a wrong principal or an unreachable KDC
    /// shows up at start ([`AuthError::Credentials`]); a driver should retry
    /// with backoff, as the KDC may be briefly unreachable.
    ///
    /// * `client_keytab`: the node's keytab, holding `client_principal`.
    /// * `client_principal`: e.g. `host/node-a.example.com@KCRED.TEST`; named
    ///   explicitly so a keytab with several principals cannot make the node
    ///   speak as the wrong one.
    /// * `target_service`: the controller's service, either host-based
    ///   (`kcred@controller.example.com`, GSS_C_NT_HOSTBASED_SERVICE, subject
    ///   to MIT's hostname canonicalization rules in krb5.conf) or, when it
    ///   contains a `/`, a Kerberos principal name used as is
    ///   (`kcred/controller.example.com@REALM`), which avoids depending on
    ///   DNS for the controller's identity.
    pub fn new(
        client_keytab: &Path,
        client_principal: &str,
        target_service: &str,
    ) -> Result<Initiator, AuthError> {
        if client_principal.is_empty() {
            return Err(AuthError::invalid("client principal", "empty"));
        }
        check_target(target_service)?;
        let keytab = keytab_name(client_keytab)?;
        let ccache = format!(
            "MEMORY:kcred-auth-initiator-{}-{}",
            std::process::id(),
            CCACHE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let cred = store::acquire_cred_from(
            Some(client_principal),
            Usage::Initiate,
            &[("client_keytab", &keytab), ("ccache", &ccache)],
        )
        .map_err(|e| match e {
            AcquireError::Argument(reason) => AuthError::invalid("initiator argument", reason),
            AcquireError::Gss(f) => AuthError::Credentials {
                usage: "initiator",
                principal: client_principal.to_string(),
                keytab: client_keytab.to_path_buf(),
                reason: explain_initiator_failure(f.message),
            },
        })?;
        Self::with_cred(
            cred,
            client_principal.to_string(),
            format!("keytab {}", client_keytab.display()),
            target_service,
        )
    }

    /// Speaks as whoever holds the tickets in the caller's own credential
    /// cache, as MIT's tools do after `kinit`: the default cache
    /// (`KRB5CCNAME`, else the system default). With `client_principal`,
    /// the cache collection is searched for that principal's tickets.
    /// No keytab is read: when the tickets expire, the person runs `kinit`
    /// again ([`AuthError::TicketCache`] says so).
    pub fn from_ticket_cache(
        client_principal: Option<&str>,
        target_service: &str,
    ) -> Result<Initiator, AuthError> {
        check_target(target_service)?;
        let principal = client_principal.filter(|p| !p.is_empty());
        let which = match principal {
            Some(p) => format!("for {p} in the credential cache collection"),
            None => "in the default credential cache".to_string(),
        };
        let cred =
            store::acquire_cred_from(principal, Usage::Initiate, &[]).map_err(|e| match e {
                AcquireError::Argument(reason) => AuthError::invalid("initiator argument", reason),
                AcquireError::Gss(f) => AuthError::TicketCache {
                    which: which.clone(),
                    reason: f.message,
                },
            })?;
        let name = cred
            .name()
            .map(|n| n.to_string())
            .map_err(|e| AuthError::TicketCache {
                which,
                reason: GssFailure::from_gss(e).message,
            })?;
        let ccache = std::env::var("KRB5CCNAME").unwrap_or_else(|_| "default".into());
        Self::with_cred(cred, name, format!("ticket cache {ccache}"), target_service)
    }

    fn with_cred(
        cred: Cred,
        principal: String,
        source: String,
        target_service: &str,
    ) -> Result<Initiator, AuthError> {
        let kind = if target_service.contains('/') {
            GSS_NT_KRB5_PRINCIPAL
        } else {
            GSS_NT_HOSTBASED_SERVICE
        };
        let target = Name::new(target_service.as_bytes(), Some(kind))
            .map_err(|e| AuthError::invalid("target service", GssFailure::from_gss(e).message))?;
        tracing::debug!(
            principal,
            source,
            target = target_service,
            "kerberos initiator ready"
        );
        Ok(Initiator {
            cred,
            target,
            target_text: target_service.to_string(),
            principal,
            source,
            warm: Warm::default(),
        })
    }

    /// A token for exactly one request; never reuse one, the controller
    /// refuses replays.
    ///
    /// Mutual authentication is not requested: it would need a reply token
    /// and a second step, which a per-call header cannot carry, and the
    /// controller is already authenticated to the driver by TLS. The token
    /// is therefore a bearer proof for a few minutes (Kerberos clock skew):
    /// send it only over TLS. Delegation is never requested, so the node's
    /// TGT never leaves the node.
    pub fn token(&self) -> Result<Vec<u8>, AuthError> {
        let fail = |reason: String| AuthError::Initiate {
            target: self.target_text.clone(),
            reason,
        };
        let target = self
            .target
            .duplicate()
            .map_err(|e| fail(GssFailure::from_gss(e).message))?;
        let mut ctx = ClientCtx::new(
            Some(self.cred.clone()),
            target,
            CtxFlags::empty(),
            Some(GSS_MECH_KRB5),
        );
        match ctx.step(None, None) {
            Ok(Some(token)) if ctx.is_complete() => {
                let token = token.to_vec();
                self.warm.keep(ctx);
                Ok(token)
            }
            Ok(_) => Err(fail(
                "GSSAPI wants a second round trip, which per-call tokens cannot do".into(),
            )),
            Err(e) => Err(fail(GssFailure::from_gss(e).message)),
        }
    }

    /// The identity this initiator speaks as, for logs.
    pub fn principal(&self) -> &str {
        &self.principal
    }
}

fn check_target(target_service: &str) -> Result<(), AuthError> {
    if target_service.is_empty() || target_service.contains('\0') {
        return Err(AuthError::invalid(
            "target service",
            "empty or contains a NUL byte",
        ));
    }
    Ok(())
}

/// MIT falls back to looking for existing tickets when it cannot use the
/// client keytab at all, and then blames the (empty, private) ccache: say
/// what that really means.
fn explain_initiator_failure(message: String) -> String {
    if message.ends_with("(No credentials cache found)") {
        format!("the keytab is missing, unreadable or holds no key for this principal ({message})")
    } else {
        message
    }
}

/// MIT keytab name for a path: always `FILE:`-prefixed so a relative path
/// containing `:` is not mistaken for a `TYPE:residual` name.
pub(crate) fn keytab_name(path: &Path) -> Result<String, AuthError> {
    let s = path
        .to_str()
        .ok_or_else(|| AuthError::invalid("keytab path", "not valid UTF-8"))?;
    if s.is_empty() || s.contains('\0') {
        return Err(AuthError::invalid(
            "keytab path",
            "empty or contains a NUL byte",
        ));
    }
    Ok(format!("FILE:{s}"))
}
