//! Small helpers every part of the driver shares, so each idiom is decided
//! once: how a poisoned lock is handled, how times are written down, how
//! retries back off, where randomness comes from.

pub mod lock;
pub mod random;
pub mod retry;
pub mod time;
