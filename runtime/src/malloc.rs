//! glibc's malloc arenas, capped.
//!
//! glibc gives threads their own arenas, up to eight per core, and each
//! arena keeps its own free memory. A kcred daemon frees much of what it
//! allocates on another thread than the one that allocated it (a
//! connection's buffers, a fetch's bundle, a volume's files written on a
//! blocking thread), so free memory spread over many arenas stays resident
//! for good. Each binary's `main` picks its cap (the README's "Measured"
//! section has the figures).
//!
//! What a burst of work frees mostly stays with the allocator too: small
//! blocks still in use keep the heap's top from shrinking, so the pages
//! around them stay resident until [`release_free_memory`] hands back
//! every whole free page.

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

/// Hands the pages malloc holds free back to the kernel (glibc's
/// `malloc_trim(0)`, which also releases free pages inside the heap, not
/// only at its top). For when a burst of work is over and the process
/// idles: it walks every arena's free blocks under that arena's lock, so
/// not after every call. Does nothing on other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes
    // malloc's own locks and is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_anon_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .expect("status")
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("RssAnon")
    }

    #[test]
    fn free_pages_between_blocks_in_use_go_back_to_the_kernel() {
        // 64 MiB in 4 KiB blocks, then all but one block in 64 freed: the
        // heap cannot shrink from its top, most of its pages are free.
        let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, b)| (i % 64 == 0).then_some(b))
            .collect();
        let before = rss_anon_kib();
        release_free_memory();
        let after = rss_anon_kib();
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "RssAnon {before} KiB before, {after} KiB after"
        );
        assert_eq!(kept.len(), 256);
    }
}
