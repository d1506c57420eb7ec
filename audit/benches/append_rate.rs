//! Audit appends per second with `fdatasync` on every record, on the disk
//! holding the temp directory. Printed, not asserted: it depends on the disk.
//!
//! `cargo bench -p kcred-audit --bench append_rate`

use std::time::Instant;

use kcred_audit::{Action, Actor, AuditEvent, AuditLog, AuditSigner, CredentialKind};

const RECORDS: u32 = 200;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = AuditLog::open(dir.path().join("audit.jsonl"), AuditSigner::generate()?)?;
    let start = Instant::now();
    for i in 0..RECORDS {
        let event = AuditEvent::new(Actor::Node("node-a".into()), Action::Issue)
            .with_kind(CredentialKind::Keytab)
            .with_subject(format!("HTTP/svc-{i}@EXAMPLE.COM"))
            .with_kvno(i + 1)
            .with_place("node-a", "ns", format!("pod-{i}"));
        log.append(&event)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "audit append with fdatasync: {RECORDS} records in {:.1} ms = {:.0} appends/s",
        secs * 1e3,
        f64::from(RECORDS) / secs
    );
    Ok(())
}
