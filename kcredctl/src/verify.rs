//! `audit verify`: proving the audit log intact on the auditor's machine.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use kcred_audit::{AuditHead, Start, VerifyReport, key_id_of, verify_from, verify_stream};
use kcred_proto::kcred::v1::{AuditHeadRequest, AuditQuery};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::Usage;
use crate::cli::{Format, VerifyArgs};
use crate::connect::{Conn, next, unary};
use crate::output::{clean, print, print_json};

/// The outcome, as printed (`--output json` prints this structure).
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    /// Records checked and found good.
    pub records: u64,
    /// The last good record.
    pub head: Option<AuditHead>,
    /// The head the log had to reach, when one was known.
    pub expected_head: Option<AuditHead>,
    /// Id of the key the signatures were checked with.
    pub key_id: String,
    /// That key itself (hex), to pin with --public-key next time.
    pub public_key: String,
    pub problem: Option<ProblemView>,
    /// Set when the controller reports another key than the pinned one.
    pub key_mismatch: Option<String>,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ProblemView {
    pub line: u64,
    pub seq: Option<u64>,
    /// e.g. "hash_mismatch", "sequence_gap", "truncated".
    pub kind: String,
    pub message: String,
}

/// Where the chain must start: after the archived prefix, if given.
fn start(args: &VerifyArgs) -> Start {
    match args.after_seq.zip(args.after_hash.clone()) {
        Some((seq, hash)) => Start::After(AuditHead { seq, hash }),
        None => Start::Genesis,
    }
}

/// `audit verify --file`: checks a local log (all its segments) or
/// export, no controller involved.
pub async fn local(args: &VerifyArgs, format: Format) -> anyhow::Result<ExitCode> {
    let (Some(path), Some(key)) = (&args.file, args.public_key) else {
        return Err(Usage::new("--file needs --public-key").into());
    };
    let expected = args
        .head_seq
        .zip(args.head_hash.clone())
        .map(|(seq, hash)| AuditHead { seq, hash });
    if expected.is_none() {
        eprintln!(
            "note: without --head-seq and --head-hash, records cut from the end of the file \
             cannot be detected"
        );
    }
    let (path, key_bytes, start, head) =
        (path.clone(), key.to_vec(), start(args), expected.clone());
    let report =
        tokio::task::spawn_blocking(move || verify_path(&path, &key_bytes, &start, head.as_ref()))
            .await
            .context("the verification did not finish")??;
    emit(&verdict(&report, &key, expected, None), format)
}

/// `audit verify`: fetches the head, then checks the whole log here as it
/// streams in, one record at a time (memory stays bounded however long
/// the log is).
pub async fn online(
    conn: &mut Conn,
    args: &VerifyArgs,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let verdict = check_online(conn, args, None).await?;
    emit(&verdict, format)
}

/// The online check itself; with `keep`, also hands every received line
/// to it (for merging several chains).
pub async fn check_online(
    conn: &mut Conn,
    args: &VerifyArgs,
    mut keep: Option<&mut Vec<String>>,
) -> anyhow::Result<Verdict> {
    let head = unary(conn.timeout, conn.client.audit_head(AuditHeadRequest {})).await?;
    let (key, mismatch) = choose_key(&head.public_key_hex, args.public_key)?;
    let mut stream = unary(
        conn.timeout,
        conn.client.audit_export(AuditQuery::default()),
    )
    .await?;
    let expected = AuditHead {
        seq: head.seq,
        hash: head.hash,
    };
    let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
    let (key_bytes, start, head) = (key.clone(), start(args), expected.clone());
    let checker = tokio::task::spawn_blocking(move || {
        verify_stream(ChannelReader::new(rx), &key_bytes, &start, Some(&head))
    });
    let fed = async {
        while let Some(line) = next(&mut stream, conn.timeout).await? {
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(line.json.trim_end().to_string());
            }
            let mut bytes = line.json.into_bytes();
            if bytes.last() != Some(&b'\n') {
                bytes.push(b'\n');
            }
            if tx.send(bytes).await.is_err() {
                break; // the checker stopped at a problem
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(tx);
    let report = checker
        .await
        .context("the verification did not finish")?
        .map_err(|e| anyhow!("cannot verify: {e}"))?;
    fed?;
    Ok(verdict(&report, &key, Some(expected), mismatch))
}

/// Lines arriving from the controller, read as one stream by the checker
/// on its blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(bytes) => {
                    self.buf = bytes;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The key to verify with: the pinned one when given (and a note when the
/// controller reports another), else the controller's.
pub fn choose_key(
    reported_hex: &str,
    pinned: Option<[u8; 32]>,
) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    let reported = hex::decode(reported_hex.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            anyhow!(
                "the controller reported an audit public key that is not 64 hex digits: {:?}",
                clean(reported_hex)
            )
        })?;
    let Some(pinned) = pinned else {
        return Ok((reported, None));
    };
    let mismatch = (reported != pinned).then(|| {
        format!(
            "the controller reports audit key {} but you pinned key {}: its key was replaced, \
             or this is not the controller you pinned",
            key_id_of(&reported),
            key_id_of(&pinned)
        )
    });
    Ok((pinned.to_vec(), mismatch))
}

/// [`verify_from`] as an anyhow result.
pub fn verify_path(
    path: &Path,
    key: &[u8],
    start: &Start,
    expected: Option<&AuditHead>,
) -> anyhow::Result<VerifyReport> {
    // The library's message already names the file and the OS error.
    verify_from(path, key, start, expected).map_err(|e| anyhow!("cannot verify: {e}"))
}

/// Combines the library's report with the key check.
pub fn verdict(
    report: &VerifyReport,
    key: &[u8],
    expected: Option<AuditHead>,
    key_mismatch: Option<String>,
) -> Verdict {
    Verdict {
        ok: report.is_ok() && key_mismatch.is_none(),
        records: report.records,
        head: report.head.clone(),
        expected_head: expected,
        key_id: key_id_of(key),
        public_key: hex::encode(key),
        problem: report.first_problem.as_ref().map(|p| ProblemView {
            line: p.line,
            seq: p.seq,
            kind: snake_case(&format!("{:?}", p.kind)),
            message: p.message.clone(),
        }),
        key_mismatch,
    }
}

/// The verdict in words.
pub fn render(v: &Verdict) -> String {
    let head_seq = v.head.as_ref().map_or(0, |h| h.seq);
    let mut out = String::new();
    if let Some(m) = &v.key_mismatch {
        out.push_str(&format!("FAILED: {m}\n"));
    }
    match &v.problem {
        None if v.key_mismatch.is_none() => {
            out.push_str(&format!(
                "OK: {}, chain intact, head seq {head_seq}\n",
                plural(v.records, "record")
            ));
            if let Some(h) = &v.head {
                out.push_str(&format!("head hash {}, audit key {}\n", h.hash, v.key_id));
                out.push_str(&format!(
                    "public key {} (pin it with --public-key)\n",
                    v.public_key
                ));
            }
        }
        None => out.push_str(&format!(
            "{} verify with the pinned key {} (head seq {head_seq})\n",
            plural(v.records, "record"),
            v.key_id
        )),
        Some(p) => out.push_str(&format!(
            "FAILED: line {}: {}\n{} before it {} intact (up to seq {head_seq})\n",
            p.line,
            clean(&p.message),
            plural(v.records, "record"),
            if v.records == 1 { "is" } else { "are" }
        )),
    }
    out
}

fn emit(v: &Verdict, format: Format) -> anyhow::Result<ExitCode> {
    match format {
        Format::Json => print_json(v)?,
        Format::Table => print(&render(v))?,
    }
    Ok(if v.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// "1 record", "2 records".
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// "HashMismatch" -> "hash_mismatch".
fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
