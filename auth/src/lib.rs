//! Node identity for kcred: the CSI driver proves which node it runs on with
//! a Kerberos (GSSAPI, krb5 mechanism) token made from the node's
//! `host/<fqdn>@REALM` keytab, and the controller verifies it with its own
//! service keytab before handing out anything meant for that node.
//!
//! One token travels with each gRPC call (see [`METADATA_KEY`]); there is no
//! handshake, so nothing has to keep per-connection state and a controller
//! restart or a load balancer in between changes nothing.
//!
//! # Process-wide Kerberos configuration
//!
//! MIT Kerberos picks its configuration (`KRB5_CONFIG`, else
//! `/etc/krb5.conf`) from the environment each time it creates a context,
//! and GSSAPI offers no per-call way to choose another. So:
//!
//! * the [`Initiator`], which must find the realm's KDC, follows whatever
//!   `KRB5_CONFIG` the process was started with. A driver process serves one
//!   realm: set `KRB5_CONFIG` in its environment (e.g. the DaemonSet's pod
//!   spec) or leave the system default; never change it while running. A
//!   process that logs in only with a keytab may put
//!   [`login_profile`]'s profile in front of it at start;
//! * the [`Acceptor`] needs no KDC and no configuration at all, only its
//!   keytab, so it works in any process and ignores the environment.
//!
//! Keytabs and credential caches, in contrast, are chosen per object through
//! MIT's credential store, never via `KRB5_KTNAME`/`KRB5CCNAME`, so several
//! identities (or test realms) can live in one process.

#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod acceptor;
pub mod bearer;
pub mod grpc;
mod initiator;
pub mod login_profile;
mod metadata;
// The only module allowed unsafe code: the `gss_acquire_cred_from` wrapper.
#[allow(unsafe_code)]
mod store;
mod warm;

pub use acceptor::Acceptor;
pub use bearer::BearerToken;
pub use initiator::Initiator;
pub use metadata::{
    METADATA_KEY, PROVEN_KEY, from_metadata_value, node_name_from_principal, to_metadata_value,
};

use std::path::PathBuf;

/// Why authentication could not be done. Messages name files, principals
/// and Kerberos' own reason, and never contain token bytes, so they are safe
/// to log and to return to a client.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A caller-supplied value cannot be used as given (empty, contains a NUL
    /// byte, not UTF-8); a configuration mistake, not a Kerberos failure.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The process's own credentials could not be set up from its keytab
    /// (missing or unreadable keytab, principal absent from it, and for the
    /// initiator possibly an unreachable KDC or stale keys): retrying without
    /// fixing the keytab or the realm will not help, except for a KDC outage.
    #[error("cannot acquire {usage} credentials for {principal} from keytab {keytab}: {reason}")]
    Credentials {
        /// `initiator` or `acceptor`.
        usage: &'static str,
        /// The identity asked for (`any key` for an acceptor).
        principal: String,
        /// The keytab that was used.
        keytab: PathBuf,
        /// Kerberos' explanation.
        reason: String,
    },
    /// No usable tickets in the caller's credential cache (none, expired,
    /// or not for the principal asked): the person runs `kinit` first.
    #[error("no usable Kerberos tickets {which}: {reason}; run kinit (or pass a keytab)")]
    TicketCache {
        /// Which cache was looked at ("in the default credential cache").
        which: String,
        /// Kerberos' explanation.
        reason: String,
    },
    /// The initiator could not produce a token: typically the KDC is
    /// unreachable, the node's keytab is stale (its keys were changed in the
    /// KDC), or the target service principal does not exist.
    #[error("cannot make a token for {target}: {reason}")]
    Initiate {
        /// The service the token was for.
        target: String,
        /// Kerberos' explanation.
        reason: String,
    },
    /// The acceptor refused the token: forged, corrupt, for another service,
    /// expired, or from a badly skewed clock. The caller is not authenticated.
    #[error("token refused: {0}")]
    Rejected(String),
    /// The acceptor has already accepted this very token: someone is
    /// replaying a captured token, or a client re-sent one instead of making
    /// a fresh token per call. The caller is not authenticated.
    #[error("token refused: it was already used once (replay)")]
    Replay,
    /// The `authorization` metadata is absent, not `Negotiate <base64>`, or
    /// not valid base64; the reason never quotes the value.
    #[error("malformed authorization metadata: {0}")]
    Metadata(&'static str),
    /// The Kerberos profile a keytab login runs with could not be written
    /// ([`login_profile`]).
    #[error("cannot write the Kerberos profile {path}: {source}")]
    Profile {
        /// The profile's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An authenticated principal that must not be treated as a node (not
    /// `host/<fqdn>`, or from another realm).
    #[error("principal {principal:?} is not a node of realm {realm}: {reason}")]
    NotANode {
        /// The authenticated principal.
        principal: String,
        /// The realm nodes must belong to.
        realm: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl AuthError {
    fn invalid(what: &'static str, reason: impl Into<String>) -> AuthError {
        AuthError::InvalidArgument {
            what,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn initiator_and_acceptor_are_send_and_sync() {
        assert_send_sync::<Initiator>();
        assert_send_sync::<Acceptor>();
        assert_send_sync::<AuthError>();
    }

    #[test]
    fn unusable_arguments_are_refused_before_kerberos_sees_them() {
        use std::path::Path;
        let kt = Path::new("/nonexistent/node.keytab");
        let invalid = |r: Result<_, AuthError>| matches!(r, Err(AuthError::InvalidArgument { .. }));
        assert!(invalid(
            Initiator::new(kt, "", "kcred@c.example.com").map(drop)
        ));
        assert!(invalid(Initiator::new(kt, "host/a@R", "").map(drop)));
        assert!(invalid(
            Initiator::new(kt, "host/a\0@R", "kcred@c").map(drop)
        ));
        assert!(invalid(
            Initiator::new(Path::new(""), "host/a@R", "kcred@c").map(drop)
        ));
        assert!(invalid(Acceptor::new(Path::new("a\0b")).map(drop)));
        assert!(invalid(
            Acceptor::with_replay_cache(kt, Path::new("")).map(drop)
        ));
    }
}
