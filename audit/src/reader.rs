//! Reading the log line by line, with bounded memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::segments::{Segment, segments};
use super::{AuditError, AuditRecord, MAX_LINE_BYTES};

/// One line as stored (without its newline).
pub(super) struct RawLine {
    /// 1-based line number.
    pub no: u64,
    /// The bytes, without the newline.
    pub bytes: Vec<u8>,
    /// Whether a newline ended it (false: interrupted write or cut file).
    pub complete: bool,
}

impl RawLine {
    /// Parses the line, or says why not, completing "line N is ...".
    pub fn parse(&self) -> Result<AuditRecord, String> {
        if self.bytes.len() >= MAX_LINE_BYTES {
            return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
        }
        if !self.complete {
            return Err(
                "incomplete (no end of line): a write was interrupted or the file was cut".into(),
            );
        }
        if self.bytes.is_empty() {
            return Err("empty".into());
        }
        serde_json::from_slice(&self.bytes).map_err(|e| format!("not a valid audit record: {e}"))
    }
}

/// Yields the lines of a log, never holding more than one line (at most
/// [`MAX_LINE_BYTES`]) in memory.
pub(super) struct LineReader<R> {
    reader: BufReader<R>,
    line_no: u64,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader {
            reader: BufReader::new(inner),
            line_no: 0,
        }
    }

    /// The next line, `None` at the end of the file. An over-long line is
    /// returned cut at the limit; [`RawLine::parse`] rejects it.
    pub fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut bytes = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        }
        Ok(Some(RawLine {
            no: self.line_no,
            bytes,
            complete,
        }))
    }
}

/// The lines of every segment of a log in order (or of one reader), one
/// file open at a time: memory stays bounded however long the log is.
pub(super) struct SegmentLines {
    pending: std::vec::IntoIter<Segment>,
    current: Option<LineReader<Box<dyn Read + Send>>>,
    /// The file being read (`None` for a reader).
    file: Option<PathBuf>,
    /// 0-based index of the segment being read.
    index: usize,
    /// How many segments there are.
    count: usize,
}

impl SegmentLines {
    /// Every segment of the log whose active file is `path`.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let all = segments(path).map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            op: "list the segments of",
            source,
        })?;
        if all.is_empty() {
            // The same error opening a missing single file always gave.
            let source = File::open(path)
                .err()
                .unwrap_or_else(|| io::Error::other("no segments"));
            return Err(AuditError::Io {
                path: path.to_path_buf(),
                op: "open",
                source,
            });
        }
        Ok(SegmentLines {
            count: all.len(),
            pending: all.into_iter(),
            current: None,
            file: None,
            index: 0,
        })
    }

    /// One stream holding a whole log (an export being received).
    pub fn from_reader(reader: impl Read + Send + 'static) -> Self {
        SegmentLines {
            pending: Vec::new().into_iter(),
            current: Some(LineReader::new(Box::new(reader))),
            file: None,
            index: 0,
            count: 1,
        }
    }

    /// The next line across segments, `None` after the last one.
    pub fn next_line(&mut self) -> Result<Option<RawLine>, AuditError> {
        loop {
            if let Some(current) = &mut self.current {
                let line = current.next_line().map_err(|source| AuditError::Io {
                    path: self.file.clone().unwrap_or_default(),
                    op: "read",
                    source,
                })?;
                if line.is_some() {
                    return Ok(line);
                }
                self.current = None;
                self.index += 1;
            }
            let Some(next) = self.pending.next() else {
                return Ok(None);
            };
            let file = File::open(&next.path).map_err(|source| AuditError::Io {
                path: next.path.clone(),
                op: "open",
                source,
            })?;
            self.current = Some(LineReader::new(Box::new(file)));
            self.file = Some(next.path);
        }
    }

    /// The file the last line came from, when the log has several.
    pub fn segment(&self) -> Option<&Path> {
        (self.count > 1).then_some(self.file.as_deref()).flatten()
    }

    /// The file the last line came from (`None` for a reader).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// 0-based index of the segment the last line came from.
    pub fn index(&self) -> usize {
        self.index
    }
}
