//! Lines that land after they are signed, against failed writes, failed
//! syncs and seals running at the same time.

use std::sync::Arc;

use super::*;
use crate::tests::{Fixture, event};
use crate::tests_group::{append_on_a_thread, eventually, one_worker, pause_next_append};

/// Waits for `mark` as a blocking appender does.
fn wait(log: &AuditLog, mark: Mark) -> Result<(), Cut> {
    log.durable
        .wait(mark, || log.written(), |e| log.cut_back(e))
}

/// Waits up to 10 s until `who` waits for lines to land.
fn until_a_thread_waits_for_lines(log: &AuditLog, who: &str) {
    eventually(&format!("{who} waits for lines to land"), || {
        log.landing.lock().is_ok_and(|l| l.sleepers > 0)
    });
}

/// A log sealing a segment at the record after the next.
fn sealing_after_one_more(fx: &Fixture) -> AuditLog {
    let len = std::fs::metadata(&fx.log).expect("stat").len();
    let rotation = Rotation {
        max_bytes: len + len * 3 / 4,
        max_age: None,
    };
    AuditLog::open_rotating(&fx.log, fx.signer(), rotation).expect("open")
}

/// A write that fails cuts only what came after the last whole record:
/// an earlier caller whose record landed is told it is durable.
#[test]
fn a_failed_write_keeps_the_records_before_it_and_tells_their_callers() {
    let fx = Fixture::new(2);
    let log = fx.open();
    let mark = log.write_all(&[event(3)]).expect("write").mark;
    log.inject(Fault::PartialWrite(10));
    assert!(log.write_all(&[event(4)]).is_err(), "the write fails");
    assert_eq!(wait(&log, mark), Ok(()), "record 3 stays and is durable");
    assert_eq!(log.head().map(|h| h.seq), Some(3));
    drop(log);
    assert_eq!(fx.verify().records, 3);
}

/// A sync fails while a seal moves the durable point and starts a new
/// segment: the cut goes back to where the seal left the log, not to where
/// the failed sync began, so the chain does not fork.
#[test]
fn a_failed_sync_during_a_seal_cuts_back_to_the_sealed_point() {
    let fx = Fixture::new(2);
    let log = sealing_after_one_more(&fx);
    let mark3 = log.write_all(&[event(3)]).expect("write 3").mark;
    let sealing = log
        .write_all(&[event(4)])
        .expect("write 4, sealing")
        .records;
    assert_eq!(sealing[0].seq, 4);
    assert_eq!(wait(&log, mark3), Ok(()), "the seal made record 3 durable");
    // The leader whose sync failed before the seal cuts back only now.
    log.cut_back(&io::Error::other("injected EIO"));
    let next = log.append(&event(5)).expect("append after the cut");
    assert_eq!(next.seq, 4, "record 4 was cut, record 3 kept");
    drop(log);
    let report = fx.verify();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, 4);
}

/// The same with the seal's rename failing: the record the seal made
/// durable survives the cut, and the next record still needs a sync.
#[test]
fn a_failed_sync_during_a_failed_seal_keeps_the_durable_record() {
    let fx = Fixture::new(2);
    let log = sealing_after_one_more(&fx);
    let mark3 = log.write_all(&[event(3)]).expect("write 3").mark;
    // The seal's rename finds a non-empty directory where it links.
    let mut next = fx.log.as_os_str().to_os_string();
    next.push(".next");
    std::fs::create_dir_all(std::path::Path::new(&next).join("x")).expect("block the seal");
    log.write_all(&[event(4)]).expect("write 4");
    assert_eq!(
        wait(&log, mark3),
        Ok(()),
        "the seal's sync made record 3 durable"
    );
    // The leader whose sync failed before the seal cuts back only now.
    log.cut_back(&io::Error::other("injected EIO"));
    log.fail_next_sync();
    assert!(
        log.append(&event(5)).is_err(),
        "a record past the durable point is not durable without a sync"
    );
    drop(log);
    std::fs::remove_dir_all(&next).expect("unblock");
    // Opening again finishes or undoes the interrupted seal.
    drop(fx.open());
    let report = fx.verify();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, 3);
}

/// An append whose line waits behind one still being signed waits for it
/// to land instead of leading syncs that cannot cover it.
#[test]
fn a_line_waiting_behind_an_unsigned_one_leads_no_sync() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let (reserved_rx, go_tx) = pause_next_append(&log);
    let first = append_on_a_thread(&log, 1);
    reserved_rx.recv().expect("the first reserved its line");
    let second = append_on_a_thread(&log, 2);
    until_a_thread_waits_for_lines(&log, "the second");
    let before = log.syncs();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let during = log.syncs() - before;
    go_tx.send(()).expect("go");
    assert_eq!(first.join().expect("first").expect("append").seq, 1);
    assert_eq!(second.join().expect("second").expect("append").seq, 2);
    assert_eq!(
        during, 0,
        "syncs led while the second's line could not land"
    );
}

/// A write that fails and cannot be undone while a seal waits for it: the
/// seal does not seal a segment ending in half a line, and the appender
/// that waited is refused as the log is, broken.
#[test]
fn a_seal_waiting_for_a_line_that_breaks_the_log_does_not_seal() {
    let fx = Fixture::new(2);
    let log = Arc::new(sealing_after_one_more(&fx));
    let (reserved_rx, go_tx) = pause_next_append(&log);
    let broken = append_on_a_thread(&log, 3);
    reserved_rx.recv().expect("record 3 reserved");
    let sealing = append_on_a_thread(&log, 4);
    until_a_thread_waits_for_lines(&log, "the seal");
    log.inject(Fault::PartialWriteNoRollback(40));
    go_tx.send(()).expect("go");
    let err = broken
        .join()
        .expect("thread")
        .expect_err("the write failed");
    assert!(
        matches!(
            err,
            AuditError::Write {
                rolled_back: false,
                ..
            }
        ),
        "{err}"
    );
    let err = sealing
        .join()
        .expect("thread")
        .expect_err("the log is broken");
    assert!(matches!(err, AuditError::Broken { .. }), "{err}");
    let segments = segments::segments(&fx.log).expect("list");
    assert_eq!(segments.len(), 1, "nothing was sealed");
}

/// A sync that succeeds after another sync of the file failed (which took
/// the file's error report) does not make anything durable: the log is cut
/// back first, and the callers refused.
#[test]
fn a_sync_after_another_sync_failed_is_not_trusted_until_the_cut() {
    let fx = Fixture::new(2);
    let log = fx.open();
    let mark = log.write_all(&[event(3)]).expect("write").mark;
    log.durable.sync_failed_elsewhere();
    assert!(wait(&log, mark).is_err(), "record 3 is not durable");
    assert_eq!(log.head().map(|h| h.seq), Some(2));
    assert_eq!(log.append(&event(3)).expect("append after the cut").seq, 3);
    drop(log);
    assert_eq!(fx.verify().records, 3);
}

/// How long another thread holds the landing's lock in the tests below,
/// as a seal holds it across its syncs.
const HELD: std::time::Duration = std::time::Duration::from_secs(1);

/// Spawns an async append of `i` on the current (one-thread) runtime and
/// lets it run first, up to where it awaits.
async fn append_first(
    log: &Arc<AuditLog>,
    i: usize,
) -> tokio::task::JoinHandle<Result<Vec<AuditRecord>, AuditError>> {
    let appending = {
        let log = Arc::clone(log);
        tokio::spawn(async move { log.append_all_durably(vec![event(i)]).await })
    };
    tokio::task::yield_now().await;
    appending
}

/// Appends `i` asynchronously on a one-thread runtime, where a 50 ms timer
/// starts as the append first yields; `meanwhile` runs once the timer
/// fired. Right after the next append's lines land, another thread holds
/// the landing's lock for [`HELD`]. Returns how late the timer fired and
/// the append's records.
fn append_beside_a_timer_while_the_landing_is_held(
    log: &Arc<AuditLog>,
    i: usize,
    meanwhile: impl FnOnce(),
) -> (std::time::Duration, Vec<AuditRecord>) {
    let holder = Arc::clone(log);
    log.after_landing(move || {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            holder.with_landing_locked(|| {
                held_tx.send(()).expect("send");
                std::thread::sleep(HELD);
            });
        });
        held_rx.recv().expect("the landing is held");
    });
    one_worker().block_on(async {
        let start = std::time::Instant::now();
        let appending = append_first(log, i).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let late = start.elapsed();
        meanwhile();
        (late, appending.await.expect("task").expect("append"))
    })
}

/// An async append whose lines landed as it wrote them never takes the
/// landing's lock on its worker: a seal, which may start as soon as they
/// land, holds that lock across its syncs. Here another thread holds it
/// for a second right after the append's lines land; a timer on the same
/// one-thread runtime still fires on time, and the append completes
/// once the lock is free.
#[test]
fn an_async_append_whose_lines_landed_leaves_its_worker_free_during_a_seal() {
    let fx = Fixture::new(2);
    let log = Arc::new(fx.open());
    let (late, records) = append_beside_a_timer_while_the_landing_is_held(&log, 3, || {});
    assert!(
        late < HELD / 2,
        "a 50 ms timer fired after {late:?}: the worker waited for the landing"
    );
    assert_eq!(records[0].seq, 3);
    fx.assert_intact(3);
}

/// An async append whose line waits behind one still being signed does
/// not take the landing's lock on its worker to see whether it landed
/// either: here another thread holds that lock for a second (as a seal
/// would) while the line waits; a timer on the same one-thread runtime
/// still fires on time, and the append completes once the first lands.
#[test]
fn an_async_append_waiting_behind_an_unsigned_line_leaves_its_worker_free_during_a_seal() {
    let fx = Fixture::new(2);
    let log = Arc::new(fx.open());
    let (reserved_rx, go_tx) = pause_next_append(&log);
    let first = append_on_a_thread(&log, 3);
    reserved_rx.recv().expect("record 3 reserved");
    let (late, records) = append_beside_a_timer_while_the_landing_is_held(&log, 4, || {
        go_tx.send(()).expect("go");
    });
    assert!(
        late < HELD / 2,
        "a 50 ms timer fired after {late:?}: the worker waited for the landing"
    );
    assert_eq!(first.join().expect("thread").expect("append").seq, 3);
    assert_eq!(records[0].seq, 4);
    fx.assert_intact(4);
}

/// A panic under the landing's lock (which poisons it) while an async
/// append's line waits behind one still being signed: the append is
/// refused, as the log is broken, instead of waiting for good for lines
/// that will never land.
#[test]
fn an_async_append_waiting_when_the_landing_is_poisoned_is_refused() {
    let fx = Fixture::new(2);
    let log = Arc::new(fx.open());
    let (reserved_rx, go_tx) = pause_next_append(&log);
    let first = append_on_a_thread(&log, 3);
    reserved_rx.recv().expect("record 3 reserved");
    let answered = one_worker().block_on(async {
        // Its line waits behind record 3's.
        let appending = append_first(&log, 4).await;
        let poisoner = Arc::clone(&log);
        let panicked = std::thread::spawn(move || {
            poisoner.with_landing_locked(|| panic!("a panic under the landing's lock"))
        })
        .join();
        assert!(panicked.is_err());
        log.durable.nudge();
        tokio::time::timeout(std::time::Duration::from_secs(5), appending).await
    });
    let err = answered
        .expect("answered, not left waiting")
        .expect("task")
        .expect_err("refused");
    assert!(matches!(err, AuditError::Broken { .. }), "{err}");
    go_tx.send(()).expect("go");
    assert!(
        first.join().expect("thread").is_err(),
        "record 3 is refused too"
    );
}
