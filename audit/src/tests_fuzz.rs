//! Generated-input tests of the record reader, the verifier and the
//! writer's check of the last record: no panic, no hang (inputs are
//! bounded), and a verdict in the crate's own terms. `PROPTEST_CASES`
//! sets the cases per target (256 by default; `scripts/fuzz.sh` runs
//! 100,000).

use proptest::prelude::*;

use super::reader::{LineReader, RawLine};
use super::tests::Fixture;
use super::*;

const MAX_LEN: usize = 8192;

#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Cut(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => any::<usize>().prop_map(Edit::Remove),
        1 => any::<usize>().prop_map(Edit::Cut),
    ]
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = v.len().max(1);
        match *e {
            Edit::Set(i, b) if !v.is_empty() => v[i % len] = b,
            Edit::Insert(i, b) => v.insert(i % (v.len() + 1), b),
            Edit::Remove(i) if !v.is_empty() => {
                v.remove(i % len);
            }
            Edit::Cut(i) => v.truncate(i % len),
            _ => {}
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// A valid three-record log (and its key), made once.
fn sample() -> &'static (Fixture, Vec<u8>) {
    static SAMPLE: std::sync::OnceLock<(Fixture, Vec<u8>)> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        let fx = Fixture::new(3);
        let bytes = std::fs::read(&fx.log).expect("read sample");
        (fx, bytes)
    })
}

fn log_bytes() -> impl Strategy<Value = Vec<u8>> {
    let valid = sample().1.clone();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..MAX_LEN),
        4 => proptest::collection::vec(edit(), 0..6).prop_map(move |e| apply(valid.clone(), &e)),
    ]
}

/// Writes `bytes` as a log next to the sample's key.
fn as_file(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

proptest! {
    #[test]
    fn fuzz_record_reader(bytes in log_bytes()) {
        let mut lines = LineReader::new(&bytes[..]);
        while let Some(line) = lines.next_line().expect("reading memory") {
            prop_assert!(line.bytes.len() <= MAX_LINE_BYTES);
            match line.parse() {
                Ok(rec) => {
                    let _ = rec.verify_alone(sample().0.public_key().as_slice());
                }
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }
        let whole = RawLine { no: 1, bytes: bytes.clone(), complete: true };
        let _ = whole.parse();
    }

    #[test]
    fn fuzz_verifier(bytes in log_bytes(), head_seq in 0u64..6) {
        let (fx, valid) = sample();
        let (_dir, path) = as_file(&bytes);
        let key = fx.public_key();
        let report = verify(&path, &key).expect("verification runs");
        // Only the untouched log is intact; an intact log is a valid prefix
        // chain (records cut from the end are the head check's job).
        if bytes == *valid {
            prop_assert!(report.is_ok());
        }
        if let Some(p) = &report.first_problem {
            prop_assert!(!p.message.is_empty());
        }
        let head = AuditHead { seq: head_seq, hash: "00".repeat(32) };
        let with_head = verify_with_head(&path, &key, &head).expect("verification runs");
        if head_seq > 0 {
            prop_assert!(!with_head.is_ok(), "no record has that hash");
        }
    }

    #[test]
    fn fuzz_open_checks_the_last_record(bytes in log_bytes()) {
        let (fx, valid) = sample();
        let (_dir, path) = as_file(&bytes);
        match AuditLog::open(&path, fx.signer()) {
            Ok(log) => {
                // Opened: the last line is a whole record of this key.
                let seq = log.head().map_or(0, |h| h.seq);
                prop_assert!(seq <= 3 || bytes != *valid);
            }
            Err(AuditError::DamagedTail { reason, .. }) => prop_assert!(!reason.is_empty()),
            Err(AuditError::ForeignKey { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
        }
    }
}
