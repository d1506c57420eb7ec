//! The circuit breaker: stop calling a failing KDC, probe it now and then.
//!
//! ```text
//!   Closed ──N consecutive transient failures──▶ Open(until)
//!     ▲                                            │ cooldown elapsed
//!     │ probe succeeds                             ▼
//!     └──────────────────────────────────────── HalfOpen (one probe at a time)
//!                       probe fails ─▶ Open(until = now + cooldown)
//! ```
//! A few dozen lines of explicit state are clearer here than a generic
//! crate: the transitions are the behaviour the operator relies on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tripped {
    /// How long until the next probe is allowed.
    pub retry_after: Duration,
}

/// One breaker per lane (kadmind, KDC).
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// Opens after `threshold` consecutive transient failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::locks::lock(&self.state)
    }

    /// Asks to make a call now.
    pub fn admit(&self) -> Result<(), Tripped> {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *s = State::HalfOpen { probing: true };
                    Ok(())
                } else {
                    Err(Tripped {
                        retry_after: until - now,
                    })
                }
            }
            State::HalfOpen { probing: true } => Err(Tripped {
                retry_after: Duration::from_secs(1),
            }),
            State::HalfOpen { probing: false } => {
                *s = State::HalfOpen { probing: true };
                Ok(())
            }
        }
    }

    /// Records a successful call.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// Records a transient failure (the server could not be reached).
    pub fn failure(&self) {
        let mut s = self.lock();
        *s = match *s {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: Instant::now() + self.cooldown,
            },
        };
    }

    /// Records a call that ended without telling anything about the
    /// server's health (e.g. a refusal): a half-open probe slot is freed.
    pub fn neutral(&self) {
        let mut s = self.lock();
        if let State::HalfOpen { .. } = *s {
            *s = State::Closed { failures: 0 };
        }
    }

    /// Whether calls are being refused now.
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { until } if Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.admit().is_ok());
            b.failure();
        }
        assert!(b.admit().is_ok(), "still closed after 2 of 3");
        b.failure();
        assert!(b.is_open());
        assert!(b.admit().is_err(), "open refuses");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit().is_ok(), "one probe after cooldown");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.success();
        assert!(b.admit().is_ok() && b.admit().is_ok(), "closed again");
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = Breaker::new(1, Duration::from_millis(30));
        b.failure();
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
        b.failure();
        assert!(b.admit().is_err());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.failure();
        b.success();
        b.failure();
        assert!(!b.is_open());
    }
}
