//! Reading the log line by line, with bounded memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::segments::{is_same_file, segments};
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
    pending: std::vec::IntoIter<Pending>,
    current: Option<LineReader<Box<dyn Read + Send>>>,
    /// The file being read (`None` for a reader).
    file: Option<PathBuf>,
    /// 0-based index of the segment being read.
    index: usize,
    /// How many segments there are.
    count: usize,
}

/// What failed, as `op` on `path`, for `map_err`.
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io { path, op, source }
}

/// A segment still to be read, and its file if it is open already.
struct Pending {
    path: PathBuf,
    open: Option<File>,
}

impl SegmentLines {
    /// Every segment of the log whose active file is `path`, as they stand
    /// when it is called, while the writer goes on: the active file is
    /// opened before the sealed segments are listed. A seal running
    /// meanwhile links the active file under its sealed name, then puts a
    /// new file in its place; the file opened here is read last whatever
    /// its name has become, and a sealed name found for it is skipped. So
    /// records are neither missed (the active file opened only after the
    /// seal finished) nor read twice (both names listed mid-seal).
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let (active, missing) = match File::open(path) {
            Ok(file) => (Some(file), None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Some(e)),
            Err(e) => return Err(io_err("open", path)(e)),
        };
        let held = active
            .as_ref()
            .map(File::metadata)
            .transpose()
            .map_err(io_err("stat", path))?;
        let listed = segments(path).map_err(io_err("list the segments of", path))?;
        let mut pending = Vec::with_capacity(listed.len());
        for segment in listed {
            if segment.named_first.is_none() {
                // The active file: the one opened above is read instead.
                continue;
            }
            if let Some(held) = &held
                && is_same_file(held, &segment.path).map_err(io_err("stat", &segment.path))?
            {
                continue;
            }
            pending.push(Pending {
                path: segment.path,
                open: None,
            });
        }
        if let Some(file) = active {
            pending.push(Pending {
                path: path.to_path_buf(),
                open: Some(file),
            });
        }
        if pending.is_empty() {
            // The same error opening a missing single file always gave.
            let source = missing.unwrap_or_else(|| io::Error::other("no segments"));
            return Err(io_err("open", path)(source));
        }
        Ok(SegmentLines {
            count: pending.len(),
            pending: pending.into_iter(),
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
            let file = match next.open {
                Some(file) => file,
                None => File::open(&next.path).map_err(io_err("open", &next.path))?,
            };
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
