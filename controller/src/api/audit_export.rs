//! An audit export sent to its caller as it is read. The log may be years
//! of segments, gigabytes: it is read on a blocking thread a line at a
//! time, at most [`AHEAD`] lines ahead of the caller, never held whole.

use std::io;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use kcred_audit::{self as audit, AuditFilter};
use kcred_proto::kcred::v1::{AuditLine, Reason};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::reasons::{Refusal, status_of};

/// Lines read ahead of the caller at most.
const AHEAD: usize = 256;

/// How long a caller may take no line before the export gives up: a
/// stalled caller would otherwise hold a blocking thread and the log's
/// files for as long as it keeps the call open.
const STALLED: Duration = Duration::from_secs(60);

/// The lines the caller receives.
pub(super) type Lines = Pin<Box<dyn Stream<Item = Result<AuditLine, Status>> + Send>>;

/// The lines of the log at `path` that `filter` matches, as they are read.
/// They end with an error unless the reading finished: a caller never
/// takes a cut export for a whole one. The handle ends with the reading
/// (once every line was taken, or the caller left).
pub(super) fn lines(path: PathBuf, filter: AuditFilter) -> (Lines, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(AHEAD);
    let (done_tx, done_rx) = oneshot::channel::<Result<(), Status>>();
    let handle = Handle::current();
    let reading = tokio::task::spawn_blocking(move || {
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
            audit::export_each(&path, &filter, |line| {
                let json = String::from_utf8_lossy(line).into_owned();
                send(&handle, &tx, AuditLine { json })
            })
        }));
        let verdict = match read {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(status_of(&e)),
            Err(_) => Err(status_of(&Refusal::new(
                Reason::Internal,
                "reading the audit log failed",
            ))),
        };
        let _ = done_tx.send(verdict);
    });
    let end = futures_util::stream::once(async move {
        match done_rx.await {
            Ok(Ok(())) => None,
            Ok(Err(status)) => Some(Err(status)),
            Err(_) => Some(Err(status_of(&Refusal::new(
                Reason::Internal,
                "reading the audit log stopped",
            )))),
        }
    })
    .filter_map(std::future::ready);
    (Box::pin(ReceiverStream::new(rx).chain(end)), reading)
}

/// Sends one line to the caller, from the blocking thread the export
/// reads on; fails once the caller hung up or took nothing for
/// [`STALLED`].
fn send(
    handle: &Handle,
    tx: &mpsc::Sender<Result<AuditLine, Status>>,
    line: AuditLine,
) -> io::Result<()> {
    match handle.block_on(tokio::time::timeout(STALLED, tx.send(Ok(line)))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the caller hung up",
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the caller took no line for {} s", STALLED.as_secs()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use kcred_audit::{Action, Actor, AuditEvent, AuditLog, AuditSigner};

    /// A log of `n` records in `dir`.
    fn log_of(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path, AuditSigner::generate().expect("key")).expect("log");
        for i in 0..n {
            log.append(&AuditEvent::new(
                Actor::Admin(format!("op{i}")),
                Action::Issue,
            ))
            .expect("append");
        }
        path
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lines_are_the_exports_own_sent_while_the_log_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_of(dir.path(), 3 * AHEAD);
        let mut expected = Vec::new();
        audit::export(&path, &mut expected, &AuditFilter::default()).expect("export");

        let (mut lines, reading) = lines(path, AuditFilter::default());
        let first = lines.next().await.expect("a line").expect("read");
        assert!(
            !reading.is_finished(),
            "the first line arrives while the log is still being read"
        );
        let mut got = vec![first.json];
        while let Some(line) = lines.next().await {
            got.push(line.expect("read").json);
        }
        let expected: Vec<&str> = std::str::from_utf8(&expected)
            .expect("utf-8")
            .lines()
            .collect();
        assert_eq!(got.len(), 3 * AHEAD);
        assert_eq!(got, expected);
        reading.await.expect("reading ends");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_who_hangs_up_ends_the_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_of(dir.path(), 3 * AHEAD);
        let (mut lines, reading) = lines(path, AuditFilter::default());
        lines.next().await.expect("a line").expect("read");
        drop(lines);
        tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the reading stops")
            .expect("without a panic");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_that_cannot_be_read_ends_the_lines_with_its_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut lines, _) = lines(dir.path().join("missing.jsonl"), AuditFilter::default());
        let err = lines.next().await.expect("an item").expect_err("no log");
        assert_eq!(
            kcred_proto::reason::reason_of(&err),
            Some(Reason::AuditUnavailable),
            "{err:?}"
        );
        assert!(lines.next().await.is_none());
    }
}
