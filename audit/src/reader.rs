//! Reading the log line by line, with bounded memory.

use std::io::{self, BufRead, BufReader, Read};

use super::{AuditRecord, MAX_LINE_BYTES};

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
