//! `verify` reads a long log one record at a time: its memory does not
//! grow with the log. Alone in its own test binary, so the peak resident
//! size measured is this test's.

use std::path::Path;

use kcred_audit::{
    Action, Actor, AuditEvent, AuditLog, AuditSigner, CredentialKind, Rotation, verify,
    verify_with_head,
};
use kcred_proto::kcred::v1::Reason;

/// Records of about 2.5 KiB (a long denial detail): a log of ~100 MiB
/// without hours of signing in a debug build.
const RECORDS: usize = 40_000;

/// Peak resident set size of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn total_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum()
}

#[test]
fn verifying_a_long_log_keeps_memory_bounded() {
    // tmpfs where there is one: 200k synced appends on a disk take long.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let path = dir.path().join("audit.log");
    let signer = AuditSigner::generate().expect("key");
    let public_key = signer.public_key().to_vec();
    let rotation = Rotation {
        max_bytes: 16 * 1024 * 1024,
        max_age: None,
    };
    let log = AuditLog::open_rotating(&path, signer, rotation).expect("open");
    let mut head = None;
    for i in 0..RECORDS {
        let event = AuditEvent::new(Actor::Node(format!("node-{}", i % 50)), Action::Issue)
            .with_kind(CredentialKind::Keytab)
            .with_subject(format!("HTTP/svc-{}.example.com@EXAMPLE.COM", i % 1000))
            .with_kvno(1 + (i % 7) as u32)
            .with_place(format!("node-{}", i % 50), "prod", format!("web-{i}"))
            .denied(
                Reason::NodeMismatch,
                format!("{i:08} {}", "why. ".repeat(480)),
            );
        head = Some(log.append(&event).expect("append").head());
    }
    drop(log);
    let head = head.expect("head");
    let bytes = total_bytes(dir.path());

    let before = peak_rss_kib();
    let report = verify_with_head(&path, &public_key, &head).expect("verify");
    let after = peak_rss_kib();
    println!(
        "verified {} records ({} MiB in {} files): peak RSS {before} KiB before, {after} KiB after",
        report.records,
        bytes / (1024 * 1024),
        std::fs::read_dir(dir.path()).expect("dir").count()
    );
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, RECORDS as u64);
    assert!(bytes > 64 * 1024 * 1024, "the log is larger than the bound");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "verification grew the peak RSS by {} KiB for a {} MiB log",
        after - before,
        bytes / (1024 * 1024)
    );
    // And again without a head: the same walk.
    assert!(verify(&path, &public_key).expect("verify").is_ok());
}
