//! Retry policies, as values configured in one place (`backon`).
//!
//! Every policy backs off exponentially with jitter seeded from
//! [`super::random`], so a fleet of nodes that lost the controller at the
//! same moment does not come back in lockstep, and none gives up: the
//! driver keeps trying for as long as it runs.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

fn exponential(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .with_jitter_seed(super::random::u64())
        .without_max_times()
        .build()
}

/// A volume whose refresh failed (the controller unreachable, a write
/// failed): 5 s doubling to 5 min. The pod keeps its last good files
/// meanwhile.
pub fn refresh() -> ExponentialBackoff {
    exponential(Duration::from_secs(5), Duration::from_secs(300))
}

/// Re-opening the controller's update stream: 0.5 s doubling to 30 s.
pub fn reconnect() -> ExponentialBackoff {
    exponential(Duration::from_millis(500), Duration::from_secs(30))
}

/// A failed heartbeat: 1 s doubling to 30 s (never past the lease's own
/// interval; the caller caps it).
pub fn heartbeat() -> ExponentialBackoff {
    exponential(Duration::from_secs(1), Duration::from_secs(30))
}

/// Getting the node's Kerberos identity at start-up: 1 s doubling to 30 s.
pub fn identity() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_jitter_seed(super::random::u64())
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_backoff_grows_to_its_cap_and_never_ends() {
        let delays: Vec<Duration> = refresh().take(12).collect();
        assert_eq!(delays.len(), 12);
        assert!(delays[0] >= Duration::from_secs(5) && delays[0] <= Duration::from_secs(10));
        // Jitter adds at most the delay itself: the cap is 300 s, so 600 s.
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(600)));
        assert!(delays[11] >= Duration::from_secs(300), "{delays:?}");
    }
}
