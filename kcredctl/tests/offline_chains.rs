//! `kcredctl audit verify --chain`: several controllers' audit files,
//! verified offline with each one's pinned key and merged by time, through
//! the real binary.

use std::path::Path;
use std::process::Command;

use kcred_audit::{Action, Actor, AuditEvent, AuditHead, AuditLog, AuditSigner, CredentialKind};

/// A controller's log at `dir/name`, signed with its own key; returns the
/// log and the public key (hex).
fn controller_log(dir: &Path, name: &str) -> (AuditLog, String) {
    let signer = AuditSigner::generate().expect("key");
    let key = hex::encode(signer.public_key());
    (AuditLog::open(dir.join(name), signer).expect("open"), key)
}

/// Appends an issue of `subject`, then waits a little so that the next
/// record, whichever log it goes to, is later.
fn issue(log: &AuditLog, subject: &str) {
    let event = AuditEvent::new(Actor::Node("node-a".into()), Action::Issue)
        .with_kind(CredentialKind::Keytab)
        .with_subject(subject.to_string());
    log.append(&event).expect("append");
    std::thread::sleep(std::time::Duration::from_millis(5));
}

fn kcredctl(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kcredctl"))
        .args(args)
        .output()
        .expect("run kcredctl")
}

fn chain(path: &Path, key: &str, head: Option<&AuditHead>) -> [String; 2] {
    let spec = match head {
        Some(h) => format!("{}={key}@{}:{}", path.display(), h.seq, h.hash),
        None => format!("{}={key}", path.display()),
    };
    ["--chain".into(), spec]
}

#[test]
fn every_chain_verifies_offline_and_merges_by_time_and_an_edited_one_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_a, key_a) = controller_log(dir.path(), "kcred-1.jsonl");
    let (log_b, key_b) = controller_log(dir.path(), "kcred-2.jsonl");
    issue(&log_a, "HTTP/a1@R");
    issue(&log_b, "HTTP/b1@R");
    issue(&log_a, "HTTP/a2@R");
    let (a, b) = (
        dir.path().join("kcred-1.jsonl"),
        dir.path().join("kcred-2.jsonl"),
    );
    let (head_a, head_b) = (log_a.head().expect("head"), log_b.head().expect("head"));
    let timeline = dir.path().join("timeline.jsonl");
    let mut args: Vec<String> = vec!["audit".into(), "verify".into()];
    args.extend(chain(&a, &key_a, Some(&head_a)));
    args.extend(chain(&b, &key_b, Some(&head_b)));
    args.extend([
        "--merged".into(),
        "-o".into(),
        timeline.display().to_string(),
    ]);
    let out = kcredctl(&args);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("2 of 2 chains verify; merged timeline: 3 records"),
        "{said}"
    );
    let merged = std::fs::read_to_string(&timeline).expect("timeline");
    let subjects: Vec<String> = merged
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).expect("a JSON record");
            record["subject"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        subjects,
        ["HTTP/a1@R", "HTTP/b1@R", "HTTP/a2@R"],
        "{merged}"
    );

    // One record of the second chain edited: that chain fails, by name.
    let text = std::fs::read_to_string(&b).expect("read");
    std::fs::write(&b, text.replace("HTTP/b1@R", "HTTP/b9@R")).expect("edit");
    let mut args: Vec<String> = vec!["audit".into(), "verify".into()];
    args.extend(chain(&a, &key_a, None));
    args.extend(chain(&b, &key_b, None));
    let out = kcredctl(&args);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("OK      {}", a.display())), "{said}");
    assert!(said.contains(&format!("FAILED  {}", b.display())), "{said}");
    assert!(said.contains("1 of 2 chains verify"), "{said}");

    // The right file under the other controller's key fails too.
    let mut args: Vec<String> = vec!["audit".into(), "verify".into()];
    args.extend(chain(&a, &key_b, None));
    let out = kcredctl(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
