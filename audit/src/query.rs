//! Finding records, and handing them to a SIEM as they are stored.

use std::io::Write;
use std::path::Path;

use super::reader::SegmentLines;
use super::{Action, AuditError, AuditRecord};

/// Which records to return. Every condition set must hold (AND); an empty
/// filter matches everything. Querying reads, it does not prove: run
/// [`verify()`](super::verify()) to know the records are genuine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Substring of the subject, case-sensitive (Kerberos principals are):
    /// "HTTP/web" finds "HTTP/web.prod.svc@EXAMPLE.COM"; a full principal
    /// finds exactly it (and any longer name containing it).
    pub subject: Option<String>,
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact node name.
    pub node: Option<String>,
    /// Records at or after this instant (Unix milliseconds, inclusive).
    pub since_unix_ms: Option<i64>,
    /// Records before this instant (Unix milliseconds, exclusive), so
    /// consecutive windows neither overlap nor leave gaps.
    pub until_unix_ms: Option<i64>,
    /// Exact action.
    pub action: Option<Action>,
}

impl AuditFilter {
    /// Whether `record` passes every condition.
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.subject
            .as_deref()
            .is_none_or(|s| record.subject.contains(s))
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| record.namespace == n)
            && self.node.as_deref().is_none_or(|n| record.node == n)
            && self.since_unix_ms.is_none_or(|t| record.unix_ms >= t)
            && self.until_unix_ms.is_none_or(|t| record.unix_ms < t)
            && self.action.is_none_or(|a| record.action == a)
    }
}

/// The records of the log at `path` (all its segments) that match
/// `filter`, in log order.
/// A damaged line is an error (not skipped): a query must not quietly
/// hide records.
pub fn query(path: &Path, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
    let mut out = Vec::new();
    each_match(path, filter, |_, rec| {
        out.push(rec);
        Ok(())
    })?;
    Ok(out)
}

/// Writes the matching records to `writer` as JSON lines, byte for byte as
/// stored, so the SIEM can check each one's hash and signature
/// ([`AuditRecord::verify_alone`]); an unfiltered export is a copy of the
/// log that [`verify()`](super::verify()) accepts. Returns how many were written.
pub fn export(
    path: &Path,
    mut writer: impl Write,
    filter: &AuditFilter,
) -> Result<u64, AuditError> {
    let n = export_each(path, filter, |line| {
        writer
            .write_all(line)
            .and_then(|()| writer.write_all(b"\n"))
    })?;
    writer.flush().map_err(export_err(path))?;
    Ok(n)
}

/// [`export`] a line at a time: `each` gets every matching record's line
/// as stored (without its newline), in order; its error stops the export.
/// Returns how many were given.
pub fn export_each(
    path: &Path,
    filter: &AuditFilter,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<u64, AuditError> {
    let mut n = 0;
    each_match(path, filter, |bytes, _| {
        each(bytes).map_err(export_err(path))?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

fn export_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        op: "export records from",
        source,
    }
}

fn each_match(
    path: &Path,
    filter: &AuditFilter,
    mut found: impl FnMut(&[u8], AuditRecord) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut lines = SegmentLines::open(path)?;
    while let Some(raw) = lines.next_line()? {
        let rec = raw.parse().map_err(|reason| AuditError::Corrupt {
            path: lines.file().unwrap_or(path).to_path_buf(),
            line: raw.no,
            reason,
        })?;
        if filter.matches(&rec) {
            found(&raw.bytes, rec)?;
        }
    }
    Ok(())
}
