//! Group commit: concurrent appends share syncs, and each still returns
//! only once its own record is on disk.

use std::sync::Arc;

use super::tests::{Fixture, event};
use super::*;

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
    let report = fx.verify();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, all);
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
    assert!(
        matches!(
            err,
            AuditError::Write {
                seq: 4,
                rolled_back: true,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fx.lines().len(), 3, "the undurable record is cut off");
    assert_eq!(log.head().map(|h| h.seq), Some(3));
    // The chain continues from the durable end.
    assert_eq!(log.append(&event(5)).expect("append").seq, 4);
    let report = fx.verify();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, 4);
}
