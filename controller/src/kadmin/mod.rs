//! Talking to kadmind: key extraction without re-keying.
//!
//! # Why the `kadmin` CLI, kept open
//! kcred must hand out a principal's *existing* keys: plain `ktadd`
//! randomizes them and breaks every keytab already delivered. The ways to
//! extract existing keys remotely are `kadm5_get_principal_keys` (the kadm5
//! C API, which the `kadmin` crate does not expose) or `ktadd -norandkey`
//! in MIT's `kadmin` client (since 1.15). kcred uses the latter:
//! - MIT's own code writes the keytab, so kcred never encodes key material;
//! - it needs only the `e` (extract-keys) ACL privilege, nothing that could
//!   change a key;
//! - one long-lived `kadmin` process runs many commands over one
//!   authenticated connection (about 1,450 extractions/s measured, against
//!   ~76/s when spawning a process per call).
//!
//! Commands go to the process's stdin. After each one kcred sends an unknown
//! request `kcred-sync-N`; kadmin answers it on stderr with `Unknown request
//! "kcred-sync-N"`, so every stderr line before that belongs to the command
//! (errors go to stderr; stdout, with its prompts, is discarded). The
//! keytab lands in a fresh file in a private work directory (tmpfs on a
//! real host), is read back, validated, and deleted at once.

mod session;

pub use session::{KadminClient, KadminConfig, KadminError};

mod backend;

pub use backend::KeyAdmin;
