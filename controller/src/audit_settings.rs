//! The `[audit]` table: how the audit log is cut into segments, and an
//! optional second copy of every record for a SIEM.

use std::path::PathBuf;
use std::time::Duration;

use kcred_audit::{MAX_LINE_BYTES, Rotation, Sink};
use serde::{Deserialize, Deserializer};

/// Default segment size: large enough that rotation is rare, small enough
/// to archive and copy comfortably.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

/// The `[audit]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Seal the active segment before it grows past this (0: never by size).
    pub max_segment_bytes: u64,
    /// Seal the active segment once its first record is this old ("30d",
    /// "12h"); unset: never by age.
    #[serde(deserialize_with = "duration")]
    pub max_segment_age: Option<Duration>,
    /// A second, best-effort copy of each record: `stdout` or `syslog`.
    pub sink: Option<SinkKind>,
    /// The syslog daemon's datagram socket.
    pub syslog_socket: PathBuf,
}

/// Where the SIEM copy goes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// One JSON line per record on standard output (logs go to stderr).
    Stdout,
    /// RFC 5424 messages to the local syslog socket.
    Syslog,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_segment_age: None,
            sink: None,
            syslog_socket: PathBuf::from("/dev/log"),
        }
    }
}

impl AuditSection {
    /// Why the table cannot be used, naming the setting.
    pub fn check(&self) -> Result<(), String> {
        if self.max_segment_bytes != 0 && self.max_segment_bytes < MAX_LINE_BYTES as u64 {
            return Err(format!(
                "audit.max_segment_bytes must be 0 (no limit) or at least {MAX_LINE_BYTES} \
                 (one record's largest size), got {}",
                self.max_segment_bytes
            ));
        }
        if self
            .max_segment_age
            .is_some_and(|a| a < Duration::from_secs(60))
        {
            return Err("audit.max_segment_age must be at least 1m".into());
        }
        Ok(())
    }

    /// When segments are sealed.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.max_segment_bytes,
            max_age: self.max_segment_age,
        }
    }

    /// The SIEM copy's sink, if one is configured.
    pub fn sink(&self) -> std::io::Result<Option<Sink>> {
        match self.sink {
            None => Ok(None),
            Some(SinkKind::Stdout) => Ok(Some(Sink::stdout())),
            Some(SinkKind::Syslog) => Sink::syslog(&self.syslog_socket).map(Some),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| {
        humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration like \"30d\" or \"12h\": {e}"
            ))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuditSection, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn segments_default_to_a_size_limit_and_no_sink() {
        let s = parse("").expect("empty table");
        assert_eq!(s.rotation().max_bytes, DEFAULT_MAX_SEGMENT_BYTES);
        assert_eq!(s.rotation().max_age, None);
        assert!(s.sink().expect("no sink").is_none());
    }

    #[test]
    fn age_and_sink_are_read_and_bad_values_named() {
        let s = parse("max_segment_age = \"30d\"\nsink = \"syslog\"\n").expect("valid");
        assert_eq!(s.max_segment_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(s.sink, Some(SinkKind::Syslog));
        let e = parse("max_segment_age = \"monthly\"").expect_err("bad age");
        assert!(e.contains("not a duration"), "{e}");
        let e = parse("sink = \"kafka\"").expect_err("bad sink");
        assert!(e.contains("kafka"), "{e}");
        let small = parse("max_segment_bytes = 100").expect("parses");
        assert!(
            small
                .check()
                .expect_err("too small")
                .contains("audit.max_segment_bytes")
        );
    }
}
