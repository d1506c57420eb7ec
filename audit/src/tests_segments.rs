//! A log that runs for years: segments sealed by size or age, one chain
//! across them, and what verification says when segments go missing,
//! move, or are cut.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::segments::{Segment, sealed_name, segments};
use super::tests::{Fixture, event, read_lines};
use super::*;

/// A log of `n` records in segments of at most `max_bytes`.
fn rotated(n: usize, max_bytes: u64) -> Fixture {
    let fx = Fixture::new(0);
    let log = open_rotating(&fx, max_bytes);
    for i in 1..=n {
        log.append(&event(i)).expect("append");
    }
    fx
}

fn open_rotating(fx: &Fixture, max_bytes: u64) -> AuditLog {
    let rotation = Rotation {
        max_bytes,
        max_age: None,
    };
    AuditLog::open_rotating(&fx.log, fx.signer(), rotation).expect("open log")
}

fn sealed(fx: &Fixture) -> Vec<Segment> {
    segments(&fx.log)
        .expect("segments")
        .into_iter()
        .filter(|s| s.named_first.is_some())
        .collect()
}

fn records_of(path: &Path) -> Vec<AuditRecord> {
    read_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

fn name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn rotation_by_size_spreads_one_chain_over_many_segments_that_verify() {
    let fx = rotated(120, 4096);
    let sealed = sealed(&fx);
    assert!(sealed.len() >= 10, "{} sealed segments", sealed.len());
    let mut expected_first = 1;
    let mut prev_hash = GENESIS_HASH.to_string();
    for s in &sealed {
        let len = std::fs::metadata(&s.path).expect("stat").len();
        assert!(len <= 4096, "{} holds {len} bytes", s.path.display());
        let records = records_of(&s.path);
        assert_eq!(
            s.named_first,
            Some(expected_first),
            "named for its first record"
        );
        assert_eq!(records[0].seq, expected_first);
        assert_eq!(
            records[0].prev_hash, prev_hash,
            "the first record of a segment links to the last of the previous"
        );
        let last = records.last().expect("a sealed segment is never empty");
        expected_first = last.seq + 1;
        prev_hash.clone_from(&last.hash);
    }
    assert_eq!(
        records_of(&fx.log)[0].seq,
        expected_first,
        "the active file follows on"
    );

    let report = fx.assert_intact(120);
    assert_eq!(report.head.as_ref().map(|h| h.seq), Some(120));
    assert_eq!(
        query(&fx.log, &AuditFilter::default())
            .expect("query")
            .len(),
        120
    );
    let mut export_bytes = Vec::new();
    export(&fx.log, &mut export_bytes, &AuditFilter::default()).expect("export");
    let exported = fx.dir.path().join("export.jsonl");
    std::fs::write(&exported, export_bytes).expect("write export");
    assert_eq!(
        verify(&exported, &fx.public_key()).expect("verify").records,
        120
    );

    // Reopened, the log continues the same chain.
    let log = open_rotating(&fx, 4096);
    assert_eq!(log.head().map(|h| h.seq), Some(120));
    assert_eq!(log.append(&event(121)).expect("append").seq, 121);
    assert_eq!(fx.verify().records, 121);
}

#[test]
fn deleting_a_middle_segment_is_detected_with_a_clear_message() {
    let fx = rotated(80, 4096);
    let sealed = sealed(&fx);
    let (before, gone, after) = (&sealed[2], &sealed[3], &sealed[4]);
    let gone_records = records_of(&gone.path);
    std::fs::remove_file(&gone.path).expect("delete a segment");

    let p = fx.verify().first_problem.expect("detected");
    assert_eq!(p.kind, ProblemKind::SequenceGap);
    assert_eq!(p.segment.as_deref(), Some(after.path.as_path()));
    assert_eq!(p.line, 1);
    let (first, last) = (
        gone_records[0].seq,
        gone_records.last().expect("records").seq,
    );
    assert_eq!(
        p.message,
        format!(
            "records {first} to {last} are missing between segments {a} and {b}: {a} ends at \
             record {}, {b} begins at record {}; a segment was deleted or moved away, or {a} \
             was cut short",
            first - 1,
            last + 1,
            a = name(&before.path),
            b = name(&after.path),
        )
    );
}

#[test]
fn segments_put_out_of_order_are_detected() {
    let fx = rotated(60, 4096);
    let sealed = sealed(&fx);
    // Swap the contents of two sealed segments (as a careless restore would).
    let (a, b) = (&sealed[1].path, &sealed[2].path);
    let tmp = fx.dir.path().join("swap");
    std::fs::rename(a, &tmp).expect("rename");
    std::fs::rename(b, a).expect("rename");
    std::fs::rename(&tmp, b).expect("rename");

    let p = fx.verify().first_problem.expect("detected");
    assert!(
        matches!(
            p.kind,
            ProblemKind::SequenceGap | ProblemKind::SequenceOutOfOrder
        ),
        "{p:?}"
    );
    assert_eq!(p.segment.as_deref(), Some(a.as_path()));
    assert!(p.message.contains(&name(a)), "{}", p.message);
}

#[test]
fn a_truncated_last_segment_is_detected() {
    let fx = rotated(60, 4096);
    let head = fx.verify().head.expect("head");
    let mut lines = read_lines(&fx.log);
    assert!(lines.len() >= 2, "the active segment holds records");
    lines.pop();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&fx.log, &text).expect("cut the last record");

    let report = verify_with_head(&fx.log, &fx.public_key(), &head).expect("verify");
    let p = report.first_problem.expect("detected against the head");
    assert_eq!(p.kind, ProblemKind::Truncated);
    assert_eq!(p.segment.as_deref(), Some(fx.log.as_path()));
    assert!(
        p.message.contains("record 60 was removed from the end"),
        "{}",
        p.message
    );

    // Cut inside a line: the damage itself shows, even without a head.
    std::fs::write(&fx.log, &text[..text.len() - 10]).expect("cut mid-line");
    let p = fx.verify().first_problem.expect("detected");
    assert_eq!(p.kind, ProblemKind::Unparseable);
    assert!(p.message.contains("incomplete"), "{}", p.message);
}

#[test]
fn an_archived_prefix_verifies_from_the_head_it_ended_at() {
    let fx = rotated(60, 4096);
    let sealed = sealed(&fx);
    let archived = &sealed[..3];
    let archive_head = records_of(&archived[2].path)
        .last()
        .expect("records")
        .head();
    for s in archived {
        std::fs::remove_file(&s.path).expect("archive away");
    }
    let key = fx.public_key();

    let p = fx.verify().first_problem.expect("not from record 1");
    assert_eq!(p.kind, ProblemKind::SequenceGap);
    assert!(
        p.message.contains("missing from the start"),
        "{}",
        p.message
    );
    assert!(p.message.contains("archived"), "{}", p.message);

    let start = Start::After(archive_head.clone());
    let report = verify_from(&fx.log, &key, &start, None).expect("verify");
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, 60 - archive_head.seq);

    let forged = Start::After(AuditHead {
        seq: archive_head.seq,
        hash: "ab".repeat(32),
    });
    let p = verify_from(&fx.log, &key, &forged, None)
        .expect("verify")
        .first_problem
        .expect("a different archive head");
    assert_eq!(p.kind, ProblemKind::ChainBroken);

    let report = verify_from(
        &fx.log,
        &key,
        &Start::FirstPresent,
        Some(&fx.verify_head(60)),
    );
    assert!(report.expect("verify").is_ok(), "the end is checked");
}

impl Fixture {
    /// The head of record `seq`, read from whichever segment holds it.
    fn verify_head(&self, seq: u64) -> AuditHead {
        query(&self.log, &AuditFilter::default())
            .expect("query")
            .into_iter()
            .find(|r| r.seq == seq)
            .expect("record")
            .head()
    }
}

#[test]
fn an_empty_active_file_continues_the_chain_of_the_last_sealed_segment() {
    let fx = Fixture::new(10);
    // As a crash right after sealing leaves it.
    std::fs::rename(&fx.log, sealed_name(&fx.log, 1)).expect("seal");
    std::fs::write(&fx.log, "").expect("new active file");

    let log = fx.open();
    assert_eq!(log.head().map(|h| h.seq), Some(10));
    let rec = log.append(&event(11)).expect("append");
    assert_eq!(rec.seq, 11);
    fx.assert_intact(11);
}

#[test]
fn a_sealing_interrupted_by_a_crash_is_undone_on_open() {
    let fx = Fixture::new(10);
    // The active file linked under its sealed name, not yet replaced.
    let sealed = sealed_name(&fx.log, 1);
    std::fs::hard_link(&fx.log, &sealed).expect("link");
    std::fs::write(PathBuf::from(format!("{}.next", fx.log.display())), "").expect("next");

    let log = open_rotating(&fx, 0);
    assert!(!sealed.exists(), "the second name is removed");
    assert_eq!(segments(&fx.log).expect("segments").len(), 1);
    log.append(&event(11)).expect("append");
    assert_eq!(fx.verify().records, 11);
}

#[test]
fn segments_are_sealed_by_age_only_once_they_hold_a_record() {
    let day = Rotation {
        max_bytes: 0,
        max_age: Some(Duration::from_secs(86_400)),
    };
    let t0 = 1_700_000_000_000;
    assert!(
        !day.due(0, None, 500, t0 + 2 * 86_400_000),
        "empty: never sealed"
    );
    assert!(!day.due(10_000, Some(t0), 500, t0 + 86_399_999));
    assert!(day.due(10_000, Some(t0), 500, t0 + 86_400_000));
    let size = Rotation {
        max_bytes: 4096,
        max_age: None,
    };
    assert!(!size.due(3596, Some(t0), 500, t0));
    assert!(size.due(3597, Some(t0), 500, t0));
    assert!(!Rotation::default().due(u64::MAX / 2, Some(t0), 500, i64::MAX));
}

#[test]
fn a_syslog_sink_receives_each_record_as_an_rfc5424_message() {
    let fx = Fixture::new(0);
    let socket_path = fx.dir.path().join("log.sock");
    let daemon = UnixDatagram::bind(&socket_path).expect("bind");
    daemon
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let log = fx
        .open()
        .with_sink(Sink::syslog(&socket_path).expect("sink"));
    let rec = log.append(&event(1)).expect("append");

    let mut buf = vec![0u8; 70_000];
    let n = daemon.recv(&mut buf).expect("a datagram");
    let message = String::from_utf8(buf[..n].to_vec()).expect("text");
    let header = format!(
        "<86>1 {} {} kcred-controller {} audit - ",
        rec.time,
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("hostname")
            .trim(),
        std::process::id()
    );
    let json = message
        .strip_prefix(&header)
        .unwrap_or_else(|| panic!("{message}"));
    let copy: AuditRecord = serde_json::from_str(json).expect("the stored record");
    assert_eq!(copy, rec);
    copy.verify_alone(&fx.public_key())
        .expect("the SIEM can check it alone");
    assert_eq!(
        read_lines(&fx.log),
        vec![json.to_string()],
        "the same bytes as stored"
    );
}

#[test]
fn a_missing_syslog_daemon_never_fails_an_append() {
    let fx = Fixture::new(0);
    let log = fx
        .open()
        .with_sink(Sink::syslog(&fx.dir.path().join("nobody.sock")).expect("sink"));
    for i in 1..=3 {
        log.append(&event(i)).expect("the file is the record");
    }
    assert_eq!(fx.verify().records, 3);
}

#[test]
fn a_log_read_while_a_seal_is_half_done_reads_each_record_once() {
    let fx = Fixture::new(10);
    // What a live reader finds between a seal's two steps: the active file
    // linked under its sealed name, not yet replaced.
    std::fs::hard_link(&fx.log, sealed_name(&fx.log, 1)).expect("link");

    fx.assert_intact(10);
}

#[test]
fn a_seal_finishing_while_a_log_is_read_hides_no_record() {
    let fx = Fixture::new(10);
    let mut lines = super::reader::SegmentLines::open(&fx.log).expect("open");
    // The writer seals the active file (every append goes to a new one)
    // before the reader reaches it.
    let log = open_rotating(&fx, 1);
    log.append(&event(11)).expect("append");
    log.append(&event(12)).expect("append");
    assert!(!sealed(&fx).is_empty(), "the active file was sealed");

    let mut seqs = Vec::new();
    while let Some(line) = lines.next_line().expect("read") {
        seqs.push(line.parse().expect("record").seq);
    }
    assert_eq!(
        seqs.first(),
        Some(&1),
        "the records sealed meanwhile are read: {seqs:?}"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no repeat: {seqs:?}"
    );
}
