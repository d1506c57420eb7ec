//! Keeping MIT's parsed configuration alive between calls.

use std::sync::Mutex;

/// The newest completed security context, kept until the next replaces it.
///
/// MIT's GSS-API makes a Kerberos library context for every call, and each
/// parses `krb5.conf` anew unless a live context still holds the parsed
/// file (twice per token, made or accepted). While one is kept, later
/// calls share the parsed file; MIT still checks its modification time (at
/// most once a second) and reads an edited file again. The newest is kept,
/// not the first, so the key material held is at most one call old.
pub(crate) struct Warm<T>(Mutex<Option<T>>);

impl<T> Default for Warm<T> {
    fn default() -> Self {
        Warm(Mutex::new(None))
    }
}

impl<T> Warm<T> {
    /// Keeps `ctx` in place of the one kept before.
    pub(crate) fn keep(&self, ctx: T) {
        // A poisoned lock only means another caller panicked while keeping
        // its context: this one is as good.
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(ctx);
        // Deleted outside the lock.
        drop(previous);
    }
}
