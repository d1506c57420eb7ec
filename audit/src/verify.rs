//! Proving a log intact: chain, hashes and signatures, line by line.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::reader::{RawLine, SegmentLines};
use super::{AuditError, AuditHead, AuditRecord, GENESIS_HASH, key_id_of};

/// What kind of damage the first problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A line is not a complete, well-formed record.
    Unparseable,
    /// A record's content does not match its hash: it was edited.
    HashMismatch,
    /// The hash matches but the signature does not: edited by someone
    /// without the audit key, or signed by another key.
    BadSignature,
    /// Sequence numbers jump: records were deleted.
    SequenceGap,
    /// Sequence numbers go back or repeat: records were moved or copied.
    SequenceOutOfOrder,
    /// Validly signed, in sequence, but chained to a different predecessor:
    /// records from another log (or a fork) were spliced in.
    ChainBroken,
    /// The log ends before the head the controller remembered.
    Truncated,
    /// The record at the remembered head differs: the log was rewritten.
    HeadMismatch,
}

/// The first thing wrong with a log, in words an auditor can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The segment file, when the log has several.
    pub segment: Option<PathBuf>,
    /// 1-based line number in the file (in `segment`, when set).
    pub line: u64,
    /// Sequence number written on that line, when it could be read.
    pub seq: Option<u64>,
    /// Classification.
    pub kind: ProblemKind,
    /// Explanation ("record 7 was edited: ...").
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.segment {
            Some(s) => write!(f, "{} line {}: {}", s.display(), self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked and found good (all of them when there is no problem).
    pub records: u64,
    /// The first problem; verification stops there, since nothing after a
    /// break in the chain can be trusted to be in place.
    pub first_problem: Option<Problem>,
    /// The last good record, `None` when there is none.
    pub head: Option<AuditHead>,
}

impl VerifyReport {
    /// True when the log is intact.
    pub fn is_ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

/// Where verification starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// At record 1: the log is complete.
    #[default]
    Genesis,
    /// Right after this record, the last of segments archived away (the
    /// head [`verify()`] reported for them, kept with the archive): the
    /// first record present must follow it, number and hash.
    After(AuditHead),
    /// At whatever record comes first, trusting where it says it follows
    /// on: for checking the end of a log whose oldest segments are gone,
    /// when their head was not kept. Proves nothing about the start.
    FirstPresent,
}

/// Checks every record of the log at `path` (all its segments, oldest
/// first; see [`segments`](crate::segments)) against `public_key` (32 raw
/// bytes): well-formed, unedited (hash), signed, numbered 1, 2, 3... and
/// chained to its predecessor, across segment boundaries. Records cut from
/// the end are invisible here: use [`verify_with_head`] with the head the
/// controller stored. Reads one line at a time: memory does not grow with
/// the log.
pub fn verify(path: &Path, public_key: &[u8]) -> Result<VerifyReport, AuditError> {
    verify_from(path, public_key, &Start::Genesis, None)
}

/// [`verify`], and also checks that the log still reaches `expected` (the
/// head the controller stored) with the same hash: catches a cut end and a
/// rewrite by someone holding the key. Records after `expected` are fine:
/// the stored head may lag the log by the last append.
pub fn verify_with_head(
    path: &Path,
    public_key: &[u8],
    expected: &AuditHead,
) -> Result<VerifyReport, AuditError> {
    verify_from(path, public_key, &Start::Genesis, Some(expected))
}

/// [`verify_with_head`] (or [`verify`] without `expected`) from `start`,
/// for a log whose oldest segments were archived.
pub fn verify_from(
    path: &Path,
    public_key: &[u8],
    start: &Start,
    expected: Option<&AuditHead>,
) -> Result<VerifyReport, AuditError> {
    check_key(public_key)?;
    walk(SegmentLines::open(path)?, public_key, start, expected)
}

/// [`verify_from`] over a whole log arriving as one stream (an export
/// being received), read line by line as it comes.
pub fn verify_stream(
    reader: impl Read + Send + 'static,
    public_key: &[u8],
    start: &Start,
    expected: Option<&AuditHead>,
) -> Result<VerifyReport, AuditError> {
    check_key(public_key)?;
    walk(
        SegmentLines::from_reader(reader),
        public_key,
        start,
        expected,
    )
}

fn check_key(public_key: &[u8]) -> Result<(), AuditError> {
    if public_key.len() != 32 {
        return Err(AuditError::PublicKey {
            len: public_key.len(),
        });
    }
    Ok(())
}

fn walk(
    mut lines: SegmentLines,
    public_key: &[u8],
    start: &Start,
    expected: Option<&AuditHead>,
) -> Result<VerifyReport, AuditError> {
    let key_id = key_id_of(public_key);
    let mut report = VerifyReport {
        records: 0,
        first_problem: None,
        head: None,
    };
    let mut prev = match start {
        Start::After(h) => Some(h.clone()),
        Start::Genesis | Start::FirstPresent => None,
    };
    let mut trust_first = *start == Start::FirstPresent;
    let mut last_line = 0;
    let mut last_segment: Option<PathBuf> = None;
    let mut prev_segment: Option<PathBuf> = None;
    while let Some(raw) = lines.next_line()? {
        let segment = lines.segment().map(Path::to_path_buf);
        let boundary = raw.no == 1 && lines.index() > 0;
        last_line = raw.no;
        last_segment.clone_from(&segment);
        let problem = |kind, seq, message| Problem {
            segment: segment.clone(),
            line: raw.no,
            seq,
            kind,
            message,
        };
        let rec = match raw.parse() {
            Ok(rec) => rec,
            Err(reason) => {
                let message = format!("line {} is {reason}", raw.no);
                report.first_problem = Some(problem(ProblemKind::Unparseable, None, message));
                return Ok(report);
            }
        };
        if std::mem::take(&mut trust_first) && rec.seq > 1 {
            prev = Some(AuditHead {
                seq: rec.seq - 1,
                hash: rec.prev_hash.clone(),
            });
        }
        let found = check_one(&rec, &raw, prev.as_ref(), public_key, &key_id)
            .and_then(|()| sequence(&rec, &raw, prev.as_ref(), &mut lines))
            .map_err(
                |(kind, message)| match (boundary, &prev_segment, &segment) {
                    (true, Some(a), Some(b)) => across(kind, message, &rec, prev.as_ref(), a, b),
                    _ => (kind, message),
                },
            )
            .and_then(|()| chain(&rec, prev.as_ref()))
            .and_then(|()| at_head(&rec, expected));
        if let Err((kind, message)) = found {
            report.first_problem = Some(problem(kind, Some(rec.seq), message));
            return Ok(report);
        }
        report.records += 1;
        report.head = Some(rec.head());
        prev = Some(rec.head());
        prev_segment = segment;
    }
    let last_seq = prev.as_ref().map_or(0, |h| h.seq);
    if let Some(h) = expected
        && last_seq < h.seq
    {
        let message = if last_seq == 0 {
            format!(
                "the log is empty, but the controller wrote records up to {}: all were removed",
                h.seq
            )
        } else {
            format!(
                "the log ends at record {last_seq}, but the controller wrote records up to {}: \
                 {} removed from the end",
                h.seq,
                range(last_seq + 1, h.seq, "was", "were")
            )
        };
        report.first_problem = Some(Problem {
            segment: last_segment,
            line: last_line + 1,
            seq: None,
            kind: ProblemKind::Truncated,
            message,
        });
    }
    Ok(report)
}

/// A sequence problem on the first line of a segment, told in segments:
/// a segment deleted (or cut short), or segments out of order.
fn across(
    kind: ProblemKind,
    message: String,
    rec: &AuditRecord,
    prev: Option<&AuditHead>,
    before: &Path,
    this: &Path,
) -> (ProblemKind, String) {
    let Some(prev) = prev else {
        return (kind, message);
    };
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let (a, b) = (name(before), name(this));
    match kind {
        ProblemKind::SequenceGap => (
            kind,
            format!(
                "{} missing between segments {a} and {b}: {a} ends at record {}, {b} begins at \
                 record {}; a segment was deleted or moved away, or {a} was cut short",
                range(prev.seq + 1, rec.seq - 1, "is", "are"),
                prev.seq,
                rec.seq
            ),
        ),
        ProblemKind::SequenceOutOfOrder => (
            kind,
            format!(
                "segment {b} begins at record {}, but segment {a} before it already ended at \
                 record {}: the segments are out of order (renamed) or one is a copy",
                rec.seq, prev.seq
            ),
        ),
        _ => (kind, message),
    }
}

type Found = Result<(), (ProblemKind, String)>;

/// The record at the stored head's position must be the one stored.
fn at_head(rec: &AuditRecord, expected: Option<&AuditHead>) -> Found {
    match expected {
        Some(h) if h.seq == rec.seq && h.hash != rec.hash => Err((
            ProblemKind::HeadMismatch,
            format!(
                "record {} differs from the one the controller remembered \
                 (hash {} instead of {}): the log was rewritten",
                rec.seq,
                short(&rec.hash),
                short(&h.hash)
            ),
        )),
        _ => Ok(()),
    }
}

/// Content against hash, then signature and key.
fn check_one(
    rec: &AuditRecord,
    raw: &RawLine,
    prev: Option<&AuditHead>,
    public_key: &[u8],
    key_id: &str,
) -> Found {
    let name = record_name(rec, raw, prev);
    match rec.verify_alone(public_key) {
        Ok(()) => Ok(()),
        Err(ProblemKind::HashMismatch) => Err((
            ProblemKind::HashMismatch,
            format!("{name} was edited: its content no longer matches its hash"),
        )),
        Err(_) if rec.key_id != key_id => Err((
            ProblemKind::BadSignature,
            format!(
                "{name} is signed by key {}, not by the audit key given ({key_id})",
                rec.key_id
            ),
        )),
        Err(_) => Err((
            ProblemKind::BadSignature,
            format!(
                "{name} has an invalid signature: it was changed by someone without the audit key"
            ),
        )),
    }
}

/// Seq must be the previous one plus one. On a jump, one line of lookahead
/// tells a deletion from two records swapped.
fn sequence(
    rec: &AuditRecord,
    raw: &RawLine,
    prev: Option<&AuditHead>,
    lines: &mut SegmentLines,
) -> Found {
    let want = prev.map_or(1, |h| h.seq + 1);
    let got = rec.seq;
    if got == want {
        return Ok(());
    }
    if got < want {
        let message = if got + 1 == want {
            format!(
                "record {got} appears twice (lines {} and {})",
                raw.no - 1,
                raw.no
            )
        } else {
            format!(
                "record {got} is out of order: it appears on line {}, after record {}",
                raw.no,
                want - 1
            )
        };
        return Err((ProblemKind::SequenceOutOfOrder, message));
    }
    let next = lines
        .next_line()
        .ok()
        .flatten()
        .and_then(|l| l.parse().ok());
    if let Some(next) = next
        && (want..got).contains(&next.seq)
    {
        let message = if next.seq + 1 == got {
            format!(
                "records {} and {got} are out of order: line {} holds record {got} \
                 and line {} holds record {}",
                next.seq,
                raw.no,
                raw.no + 1,
                next.seq
            )
        } else {
            format!(
                "record {got} comes before record {} (lines {} and {}): the records are out of order",
                next.seq,
                raw.no,
                raw.no + 1
            )
        };
        return Err((ProblemKind::SequenceOutOfOrder, message));
    }
    let message = if want == 1 {
        format!(
            "{} missing from the start: the log begins with record {got} (if older segments \
             were archived, verify from the head of the last archived record)",
            range(1, got - 1, "is", "are")
        )
    } else {
        format!(
            "{} missing: {} is followed by {got}",
            range(want, got - 1, "is", "are"),
            want - 1
        )
    };
    Err((ProblemKind::SequenceGap, message))
}

/// `prev_hash` must name the previous record's hash.
fn chain(rec: &AuditRecord, prev: Option<&AuditHead>) -> Found {
    let want = prev.map_or(GENESIS_HASH, |h| h.hash.as_str());
    if rec.prev_hash == want {
        return Ok(());
    }
    let message = match prev {
        None => format!(
            "record {} claims a predecessor although it is the first record: \
             the beginning of the log was replaced",
            rec.seq
        ),
        Some(h) => format!(
            "record {} does not follow record {}: it is chained to a different predecessor \
             (records from another log, or a forked log, were spliced in)",
            rec.seq, h.seq
        ),
    };
    Err((ProblemKind::ChainBroken, message))
}

/// "record 7", or "the record on line 9 (numbered 7)" when the number is
/// not where it should be.
fn record_name(rec: &AuditRecord, raw: &RawLine, prev: Option<&AuditHead>) -> String {
    if rec.seq == prev.map_or(1, |h| h.seq + 1) {
        format!("record {}", rec.seq)
    } else {
        format!("the record on line {} (numbered {})", raw.no, rec.seq)
    }
}

/// "record 12 is" / "records 12 to 14 are".
fn range(from: u64, to: u64, one: &str, many: &str) -> String {
    if from == to {
        format!("record {from} {one}")
    } else {
        format!("records {from} to {to} {many}")
    }
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}
