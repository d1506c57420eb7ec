//! The driver's one source of randomness: names of temporary files and
//! generations, and the seeds of retry jitter.

/// A random 64-bit value from the operating system's generator.
pub fn u64() -> u64 {
    rand::random()
}
