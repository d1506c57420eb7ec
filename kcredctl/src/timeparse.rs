//! Durations ("30s", "1h30m", read by humantime), points in time
//! (RFC 3339 or "-1h", read by the `time` crate) and their display.

use std::time::Duration;

use kcred_audit::timefmt::now_unix_ms;

/// Parses `30s`, `5m`, `1h`, `2d` or a sum like `1h30m` (humantime's
/// grammar); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; use e.g. 30s, 5m, 1h, 2d".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s} seconds is too long"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 30s, 5m, 1h30m, 2d"))
}

/// Short form of a duration for messages: "90s" -> "1m30s".
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// clap value parser for `--since`/`--until`: a point in time as Unix ms.
pub fn parse_time_arg(s: &str) -> Result<i64, String> {
    parse_time(s, now_unix_ms())
}

/// `now`, `-<duration>` (before `now_ms`), an RFC 3339 timestamp
/// (`2026-05-01T12:00:00Z`, `...12:00:00.5+02:00`) or a date (`2026-05-01`,
/// midnight UTC), as Unix milliseconds.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = parse_duration(ago)?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too far back"))?;
        return Ok(now_ms.saturating_sub(ms));
    }
    kcred_audit::timefmt::parse_millis(s).ok_or_else(|| {
        format!(
            "{s:?} is not a time; use RFC 3339 (2026-05-01T12:00:00Z), a date (2026-05-01) \
             or a relative time (-1h, -2d)"
        )
    })
}

/// Unix seconds as `2026-05-01T12:00:00Z`.
pub fn format_unix(secs: i64) -> String {
    kcred_audit::timefmt::rfc3339_seconds(secs)
}

/// How long ago `then` was, both in Unix seconds: "12s ago", "3h ago";
/// "in 5s" for the future (clock skew), "never" for 0.
pub fn age(now: i64, then: i64) -> String {
    if then <= 0 {
        return "never".into();
    }
    let delta = now - then;
    let (n, unit) = coarse(delta.unsigned_abs());
    if delta >= 0 {
        format!("{n}{unit} ago")
    } else {
        format!("in {n}{unit}")
    }
}

fn coarse(secs: u64) -> (u64, &'static str) {
    match secs {
        0..120 => (secs, "s"),
        120..7200 => (secs / 60, "m"),
        7200..172_800 => (secs / 3600, "h"),
        _ => (secs / 86_400, "d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_as_sums() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("2d"), Ok(172_800));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("45"), Ok(45));
        assert_eq!(secs("1.5h"), Ok(5400));
        assert_eq!(secs("0"), Ok(0));
        for bad in ["", "h", "5x", "-5m", "5m3", "m5", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(93_784)), "1d2h3m4s");
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        let t = |s: &str| parse_time(s, 0);
        assert_eq!(t("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(t("2026-05-01T12:00:00Z"), Ok(1_777_636_800_000));
        assert_eq!(t("2026-05-01T12:00:00.123Z"), Ok(1_777_636_800_123));
        assert_eq!(t("2026-05-01T12:00:00.5Z"), Ok(1_777_636_800_500));
        assert_eq!(t("2026-05-01T14:00:00+02:00"), Ok(1_777_636_800_000));
        assert_eq!(t("2026-05-01t07:30:00-04:30"), Ok(1_777_636_800_000));
        assert_eq!(t("2026-05-01"), Ok(1_777_593_600_000));
        assert_eq!(t("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "2026-13-01",
            "2026-02-29",
            "2026-05-01T25:00:00Z",
            "2026-05-01T12:00:00",
            "2026-05-01T12:00Z",
            "2026-05-01T12:00:00.Z",
            "2026-05-01T12:00:00+2:00",
            "yesterday",
            "+1h",
        ] {
            assert!(t(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = 1_777_636_800_000;
        assert_eq!(parse_time("-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_time("-2d", now), Ok(now - 172_800_000));
        assert_eq!(parse_time("now", now), Ok(now));
        assert!(parse_time("-", now).is_err());
    }

    #[test]
    fn formatting_round_trips_with_parsing() {
        for secs in [0, 951_782_400, 1_709_164_800, 1_777_636_800, 4_102_444_799] {
            let text = format_unix(secs);
            assert_eq!(parse_time(&text, 0), Ok(secs * 1000), "{text}");
        }
        assert_eq!(format_unix(1_777_636_800), "2026-05-01T12:00:00Z");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(1000, 988), "12s ago");
        assert_eq!(age(10_000, 10_000 - 300), "5m ago");
        assert_eq!(age(100_000, 100_000 - 3 * 3600), "3h ago");
        assert_eq!(age(1_000_000, 1_000_000 - 3 * 86_400), "3d ago");
        assert_eq!(age(1000, 1005), "in 5s");
        assert_eq!(age(1000, 0), "never");
    }
}
