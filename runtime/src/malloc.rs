//! glibc's malloc arenas, capped.
//!
//! glibc gives threads their own arenas, up to eight per core, and each
//! arena keeps its own free memory. A kcred daemon frees much of what it
//! allocates on another thread than the one that allocated it (a
//! connection's buffers, a fetch's bundle, a volume's files written on a
//! blocking thread), so free memory spread over many arenas stays resident
//! for good. Each binary's `main` picks its cap (the README's "Measured"
//! section has the figures).

/// Caps glibc's malloc arenas at `max`, unless `MALLOC_ARENA_MAX` or a
/// `glibc.malloc.arena_max` tunable in the environment set them (those
/// win). Call it first in `main`, before any other thread starts: glibc
/// fixes its limit when the first thread beyond the main one needs an
/// arena. Does nothing on other C libraries.
pub fn limit_arenas(max: i32) {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter, M_ARENA_MAX takes any
    // count, and it is called before other threads start.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, max.max(1));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = max;
}
