//! Timestamps as people and SIEMs read them (RFC 3339, UTC), with the
//! `time` crate doing the calendar, and the Unix clock every kcred crate
//! reads (one definition, so "before 1970" is decided once).

use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use time::{Date, OffsetDateTime};

/// Seconds since the Unix epoch at `t` (0 before 1970, clamped above).
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    unix_secs(SystemTime::now())
}

/// Now, in Unix milliseconds (negative before 1970).
pub fn now_unix_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// Unix seconds as `2026-05-01T12:00:00Z` (clamped to the representable
/// range).
pub fn rfc3339_seconds(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Unix milliseconds as `2026-05-01T12:00:00.123Z`.
pub fn rfc3339_millis(unix_ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// An RFC 3339 timestamp (any offset, any fraction) or a plain date
/// (midnight UTC), as Unix milliseconds.
pub fn parse_millis(s: &str) -> Option<i64> {
    let t = match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => Date::parse(s, format_description!("[year]-[month]-[day]"))
            .ok()?
            .midnight()
            .assume_utc(),
    };
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_777_636_800), "2026-05-01T12:00:00Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            parse_millis("2026-05-01T12:00:00Z"),
            Some(1_777_636_800_000)
        );
        assert_eq!(
            parse_millis("2026-05-01T14:00:00.5+02:00"),
            Some(1_777_636_800_500)
        );
        assert_eq!(parse_millis("2026-05-01"), Some(1_777_593_600_000));
        assert_eq!(parse_millis("2026-02-30"), None);
        assert_eq!(parse_millis("yesterday"), None);
    }
}
