//! The controller's one source of randomness: the operating system's, via
//! ring. Keys, nonces, serials and file-name suffixes all come from here, so
//! there is one thing to audit and one failure to handle.

use ring::rand::{SecureRandom, SystemRandom};

/// The system random generator failed (no entropy source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomError;

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    SystemRandom::new().fill(buf).map_err(|_| RandomError)
}

/// A random `u64` (for unique, non-secret names).
pub fn u64() -> Result<u64, RandomError> {
    let mut b = [0u8; 8];
    fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}
