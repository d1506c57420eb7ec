//! Group commit: concurrent appends share syncs, and each still returns
//! only once its own record is on disk.

use std::sync::Arc;

use super::tests::{Fixture, assert_cut_back, event};
use super::*;
use crate::log::Fault;

#[test]
fn concurrent_appends_form_one_intact_chain_with_every_seq() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let (threads, each) = (16, 40);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..each)
                    .map(|i| log.append(&event(t * each + i)).expect("append").seq)
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    let all = (threads * each) as u64;
    assert_eq!(seqs, (1..=all).collect::<Vec<u64>>(), "every seq, once");
    // Every append returned after its sync: the durable head is the last.
    assert_eq!(log.head().map(|h| h.seq), Some(all));
    fx.assert_intact(all);
}

/// Segments sealed while appends share syncs: each segment is synced as
/// it is sealed, so the group sync, which syncs only the active one, never
/// reports a record durable that sits unsynced in a sealed segment.
#[test]
fn concurrent_appends_across_sealed_segments_form_one_chain() {
    let fx = Fixture::new(0);
    let rotation = segments::Rotation {
        max_bytes: 64 * 1024,
        max_age: None,
    };
    let log = Arc::new(AuditLog::open_rotating(&fx.log, fx.signer(), rotation).expect("open"));
    let (threads, each) = (8, 60);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..each {
                    log.append(&event(t * each + i)).expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let all = (threads * each) as u64;
    assert_eq!(log.head().map(|h| h.seq), Some(all));
    let sealed = segments::last_sealed(&fx.log).expect("list");
    assert!(sealed.is_some(), "the size limit sealed segments");
    fx.assert_intact(all);
    drop(log);
    let reopened = AuditLog::open_rotating(&fx.log, fx.signer(), rotation).expect("reopen");
    assert_eq!(reopened.head().map(|h| h.seq), Some(all));
}

/// Async appends seal their records on the worker, and hand the ones that
/// could seal a segment to a blocking thread: both kinds, mixed, form one
/// chain across the sealed segments.
#[test]
fn async_appends_across_sealed_segments_form_one_chain() {
    let fx = Fixture::new(0);
    let rotation = segments::Rotation {
        max_bytes: 4 * MAX_LINE_BYTES as u64,
        max_age: None,
    };
    let log = Arc::new(AuditLog::open_rotating(&fx.log, fx.signer(), rotation).expect("open"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (tasks, each) = (400usize, 3usize);
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let log = Arc::clone(&log);
            set.spawn(async move {
                let batch: Vec<AuditEvent> = (0..each).map(|i| event(t * each + i)).collect();
                log.append_all_durably(batch).await.expect("append");
            });
        }
        while let Some(done) = set.join_next().await {
            done.expect("task");
        }
    });
    let all = (tasks * each) as u64;
    assert_eq!(log.head().map(|h| h.seq), Some(all));
    let files = segments::segments(&fx.log).expect("list");
    assert!(
        files.len() >= 3,
        "the size limit sealed at least two segments: {files:?}"
    );
    fx.assert_intact(all);
}

/// While the chain lock is held for long (a segment's seal syncs and
/// renames under it), an async append waits on a blocking thread, not on
/// the runtime's worker: the worker's other tasks go on meanwhile.
#[test]
fn an_async_append_never_waits_for_the_chain_lock_on_a_worker() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let rt = one_worker();
    let released = Arc::new(AtomicBool::new(false));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = {
        let (log, released) = (Arc::clone(&log), Arc::clone(&released));
        std::thread::spawn(move || {
            log.with_chain_locked(|| {
                held_tx.send(()).expect("send");
                std::thread::sleep(std::time::Duration::from_millis(400));
                released.store(true, Ordering::SeqCst);
            })
        })
    };
    held_rx.recv().expect("the lock is held");
    let ticks_while_held = rt.block_on(async {
        let append = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.append_all_durably(vec![event(1)]).await }
        });
        let mut ticks = 0;
        while !released.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            ticks += usize::from(!released.load(Ordering::SeqCst));
        }
        append.await.expect("task").expect("append");
        ticks
    });
    holder.join().expect("holder");
    // A worker blocked on the lock runs nothing until it is released.
    assert!(
        ticks_while_held >= 3,
        "the worker went on while the lock was held: {ticks_while_held} ticks"
    );
    fx.assert_intact(1);
}

#[test]
fn append_all_chains_its_records_in_order() {
    let fx = Fixture::new(2);
    let log = fx.open();
    let records = log
        .append_all(&[event(3), event(4), event(5)])
        .expect("append");
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(log.head(), Some(records[2].head()));
    assert!(fx.verify().is_ok());
}

#[test]
fn a_failed_sync_cuts_the_log_back_and_the_caller_is_refused() {
    let fx = Fixture::new(3);
    let log = fx.open();
    log.fail_next_sync();
    let err = log
        .append(&event(4))
        .expect_err("not durable: must fail closed");
    assert_cut_back(&err, 4);
    assert_eq!(fx.lines().len(), 3, "the undurable record is cut off");
    assert_eq!(log.head().map(|h| h.seq), Some(3));
    // The chain continues from the durable end.
    assert_eq!(log.append(&event(5)).expect("append").seq, 4);
    fx.assert_intact(4);
}

/// Async callers: many tasks on two worker threads, each awaiting its own
/// record's sync without holding a thread; mixed with blocking callers,
/// who wait on the same durable point.
#[test]
fn async_appends_share_syncs_with_blocking_ones_and_form_one_chain() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let (tasks, each) = (200usize, 3usize);
    let blocking = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            (0..50)
                .map(|i| log.append(&event(10_000 + i)).expect("append").seq)
                .collect::<Vec<u64>>()
        })
    };
    let mut seqs: Vec<u64> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let log = Arc::clone(&log);
            set.spawn(async move {
                let batch: Vec<AuditEvent> = (0..each).map(|i| event(t * each + i)).collect();
                let records = log.append_all_durably(batch).await.expect("append");
                // Returned only once durable: the durable head is at least here.
                let last = records.last().expect("records").seq;
                assert!(log.head().is_some_and(|h| h.seq >= last));
                records.iter().map(|r| r.seq).collect::<Vec<u64>>()
            });
        }
        let mut all = Vec::new();
        while let Some(done) = set.join_next().await {
            all.extend(done.expect("task"));
        }
        all
    });
    seqs.extend(blocking.join().expect("thread"));
    seqs.sort_unstable();
    let all = (tasks * each + 50) as u64;
    assert_eq!(seqs, (1..=all).collect::<Vec<u64>>(), "every seq, once");
    assert_eq!(log.head().map(|h| h.seq), Some(all));
    fx.assert_intact(all);
}

#[test]
fn a_failed_sync_refuses_an_async_caller_and_the_chain_goes_on() {
    let fx = Fixture::new(3);
    let log = Arc::new(fx.open());
    let rt = one_worker();
    log.fail_next_sync();
    let err = rt
        .block_on(log.append_all_durably(vec![event(4), event(5)]))
        .expect_err("not durable: must fail closed");
    assert_cut_back(&err, 4);
    assert_eq!(fx.lines().len(), 3, "the undurable records are cut off");
    let records = rt
        .block_on(log.append_all_durably(vec![event(6)]))
        .expect("append");
    assert_eq!(records[0].seq, 4);
    fx.assert_intact(4);
}

/// Callers that give up (a cancelled request) never leave the log waiting
/// for a sync nobody runs: a later append still completes.
#[test]
fn async_callers_that_give_up_do_not_wedge_the_log() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100 {
            let log = Arc::clone(&log);
            set.spawn(async move { log.append_all_durably(vec![event(i)]).await });
        }
        tokio::task::yield_now().await;
        set.abort_all();
        while set.join_next().await.is_some() {}
        let done = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            log.append_all_durably(vec![event(1_000)]),
        )
        .await
        .expect("a later append completes")
        .expect("append");
        // A caller that gave up while its records were on a blocking
        // thread does not take them back: they may land after this one.
        assert!(log.head().map(|h| h.seq) >= Some(done[0].seq));
    });
    // Dropping the runtime waits for those blocking writes; a record
    // whose caller gave up is durable once the next append syncs.
    drop(rt);
    let last = one_worker()
        .block_on(log.append_all_durably(vec![event(1_001)]))
        .expect("append");
    assert_eq!(last[0].seq, fx.lines().len() as u64);
    assert_eq!(log.head().map(|h| h.seq), Some(last[0].seq));
    let report = fx.verify();
    assert!(report.is_ok(), "{:?}", report.first_problem);
}

/// A turn to lead that never runs (its task dropped at shutdown) hands the
/// lead back: a later append does not wait for a sync nobody runs.
#[test]
fn a_lead_turn_that_never_runs_gives_the_lead_back() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    assert!(log.take_lead_and_drop_it());
    let (tx, rx) = std::sync::mpsc::channel();
    let appender = Arc::clone(&log);
    std::thread::spawn(move || {
        let _ = tx.send(appender.append(&event(1)).map(|r| r.seq));
    });
    let seq = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the append is not left waiting")
        .expect("append");
    assert_eq!(seq, 1);
}

/// Appends runnable together on one worker share one sync: the leader
/// lets them write theirs before its sync starts.
#[test]
fn appends_ready_on_one_worker_share_the_leaders_sync() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let rt = one_worker();
    let tasks = 32;
    let before = log.syncs();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..tasks {
            let log = Arc::clone(&log);
            set.spawn(async move { log.append_all_durably(vec![event(i)]).await });
        }
        while let Some(done) = set.join_next().await {
            done.expect("task").expect("append");
        }
    });
    let syncs = log.syncs() - before;
    assert_eq!(syncs, 1, "{tasks} appends ready at once: one sync");
    assert_eq!(log.head().map(|h| h.seq), Some(tasks as u64));
    fx.assert_intact(tasks as u64);
}

/// A caller that gives up while it holds the lead, before its sync starts,
/// hands the lead back: a later append does not wait for it.
#[test]
fn a_leader_that_gives_up_before_its_sync_gives_the_lead_back() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let rt = one_worker();
    rt.block_on(async {
        // Its first poll writes the record, takes the lead and lets other
        // appends go first: pending, no sync started.
        let mut first = Box::pin(log.append_all_durably(vec![event(1)]));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(first.as_mut().poll(cx).is_pending()))
                .await;
        assert!(polled, "the first append waits for its sync");
        drop(first);
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            log.append_all_durably(vec![event(2)]),
        )
        .await
        .expect("the next append is not left waiting")
        .expect("append");
        assert_eq!(next[0].seq, 2);
    });
    assert_eq!(log.head().map(|h| h.seq), Some(2));
}

/// A runtime whose one thread runs every task.
pub(crate) fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits up to 10 s for `done`.
pub(crate) fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `log.append(&event(i))` on a thread of its own.
pub(crate) fn append_on_a_thread(
    log: &Arc<AuditLog>,
    i: usize,
) -> std::thread::JoinHandle<Result<AuditRecord, AuditError>> {
    let log = Arc::clone(log);
    std::thread::spawn(move || log.append(&event(i)))
}

/// An append paused after reserving its line, before signing it; the
/// returned sender lets it go on.
pub(crate) fn pause_next_append(
    log: &AuditLog,
) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
    let (reserved_tx, reserved_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    log.after_reserving(move || {
        reserved_tx.send(()).expect("send");
        let _ = go_rx.recv();
    });
    (reserved_rx, go_tx)
}

/// Signing (most of an append's cost) happens outside the chain lock: a
/// second append chains its record while the first is still unsigned, and
/// its line waits for the first's, so the file keeps chain order.
#[test]
fn records_are_signed_outside_the_chain_lock_and_land_in_chain_order() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let (reserved, go) = pause_next_append(&log);
    let first = append_on_a_thread(&log, 1);
    reserved.recv().expect("the first append reserved its line");
    let second = append_on_a_thread(&log, 2);
    eventually("the second append chains while the first signs", || {
        log.chained_seq() == 2
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        std::fs::metadata(&fx.log).expect("stat").len(),
        0,
        "the second line waits for the first"
    );
    assert!(
        !second.is_finished(),
        "the second is not durable before the first"
    );
    go.send(()).expect("let the first go on");
    let first = first.join().expect("first").expect("first append");
    let second = second.join().expect("second").expect("second append");
    assert_eq!(first.seq, 1);
    assert_eq!(second.seq, 2);
    drop(log);
    assert_eq!(fx.verify().records, 2);
}

/// A write that fails while later lines wait behind it cuts them all: the
/// callers are refused, the file ends at the last good record, and the
/// chain goes on from there.
#[test]
fn a_failed_write_refuses_the_lines_waiting_behind_it() {
    let fx = Fixture::new(3);
    let log = Arc::new(fx.open());
    let size = std::fs::metadata(&fx.log).expect("stat").len();
    let (reserved, go) = pause_next_append(&log);
    let first = append_on_a_thread(&log, 4);
    reserved.recv().expect("the first append reserved its line");
    let second = append_on_a_thread(&log, 5);
    eventually("the second append chains", || log.chained_seq() == 5);
    log.inject(Fault::PartialWrite(40));
    go.send(()).expect("let the first go on");
    let err = first.join().expect("first").expect_err("the write failed");
    assert_cut_back(&err, 4);
    let err = second
        .join()
        .expect("second")
        .expect_err("its predecessor is gone");
    assert!(matches!(err, AuditError::Write { .. }), "{err}");
    assert_eq!(std::fs::metadata(&fx.log).expect("stat").len(), size);
    assert_eq!(log.append(&event(4)).expect("next append").seq, 4);
    drop(log);
    assert_eq!(fx.verify().records, 4);
}

/// An append that dies between chaining its record and writing it (a
/// panic while signing) does not leave later appends waiting for its line.
#[test]
fn an_append_abandoned_before_its_line_landed_does_not_block_the_next() {
    let fx = Fixture::new(3);
    let log = Arc::new(fx.open());
    log.after_reserving(|| panic!("dies while signing"));
    let died = append_on_a_thread(&log, 4).join();
    assert!(died.is_err(), "the hook panicked");
    let next = append_on_a_thread(&log, 5);
    eventually("the next append returns", || next.is_finished());
    assert_eq!(next.join().expect("next").expect("next append").seq, 4);
    drop(log);
    assert_eq!(fx.verify().records, 4);
}
