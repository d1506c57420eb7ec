//! Wall-clock times as the driver records them.
//!
//! The controller speaks in seconds since the Unix epoch; the driver turns
//! them into [`Deadline`]s at the edge, and an absent deadline is `None`,
//! never a 0 sentinel.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds since the Unix epoch (negative before it).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The time `secs` seconds after the Unix epoch.
pub fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A point in wall-clock time something is due at, stored as whole Unix
/// seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(SystemTime);

impl Deadline {
    /// Due at `t`.
    pub fn at(t: SystemTime) -> Self {
        Deadline(t)
    }

    /// Due now.
    pub fn now() -> Self {
        Deadline(SystemTime::now())
    }

    /// Due `d` from now.
    pub fn after(d: Duration) -> Self {
        Deadline(SystemTime::now() + d)
    }

    /// The controller's `refresh_after_unix`: `None` for 0 ("only on
    /// kubelet's republish") and for negative values.
    pub fn from_controller(unix: i64) -> Option<Self> {
        (unix > 0).then(|| Deadline(from_unix_secs(unix)))
    }

    /// The wall-clock time.
    pub fn time(self) -> SystemTime {
        self.0
    }

    /// Whether it has come.
    pub fn is_due(self, now: SystemTime) -> bool {
        self.0 <= now
    }

    /// How long until it comes (zero once it has).
    pub fn remaining(self, now: SystemTime) -> Duration {
        self.0.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

impl Serialize for Deadline {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(unix_secs(self.0))
    }
}

impl<'de> Deserialize<'de> for Deadline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Deadline(from_unix_secs(i64::deserialize(d)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_round_trip_both_sides_of_the_epoch() {
        for s in [-86_400, 0, 1, 1_777_636_800] {
            assert_eq!(unix_secs(from_unix_secs(s)), s);
        }
    }

    #[test]
    fn the_controllers_zero_means_no_deadline() {
        assert_eq!(Deadline::from_controller(0), None);
        assert_eq!(Deadline::from_controller(-5), None);
        let d = Deadline::from_controller(1_777_636_800).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "1777636800");
        assert_eq!(serde_json::from_str::<Deadline>("1777636800").unwrap(), d);
        assert!(d.is_due(from_unix_secs(1_777_636_800)));
        assert!(!d.is_due(from_unix_secs(1_777_636_799)));
    }
}
