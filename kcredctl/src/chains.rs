//! `audit verify --every-controller` and `--chain`: every controller signs
//! its own audit chain with its own key; this checks each one (asking the
//! controllers, or in files the auditor holds) and merges them by time.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kcred_proto::kcred::v1::{AuditHeadsRequest, StoredAuditHead};
use serde::{Deserialize, Serialize};

use kcred_audit::{AuditHead, Start};

use crate::cli::{ChainFile, Format, Global, VerifyArgs};
use crate::connect::{self, unary};
use crate::output::{clean, print, print_json};
use crate::verify::{Verdict, check_online, verdict, verify_path};

/// One chain, as printed (`--output json` prints a list).
#[derive(Serialize, Debug)]
pub struct ChainVerdict {
    /// Where the chain was read: a controller's URL, or a file.
    pub source: String,
    /// The check's outcome; absent when the controller could not be asked.
    pub verdict: Option<Verdict>,
    /// Why the chain could not be checked at all.
    pub error: Option<String>,
}

impl ChainVerdict {
    fn ok(&self) -> bool {
        self.verdict.as_ref().is_some_and(|v| v.ok)
    }
}

/// The fields a merged timeline is ordered by.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Position {
    unix_ms: i64,
    key_id: String,
    seq: u64,
}

/// Checks the chain of every `--controller`, prints one line per chain,
/// then the merged timeline (or writes it with `--merged`).
pub async fn verify_every(
    g: &Global,
    args: &VerifyArgs,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let urls = connect::urls(g)?;
    let mut chains = Vec::new();
    let mut lines = Vec::new();
    for url in urls {
        let one = Global {
            controller: Some(url.clone()),
            ..g.clone()
        };
        let mut kept = Vec::new();
        let checked = async {
            let mut conn = connect::connect(&one).await?;
            check_online(&mut conn, args, Some(&mut kept)).await
        }
        .await;
        let chain = match checked {
            Ok(v) => ChainVerdict {
                source: url,
                verdict: Some(v),
                error: None,
            },
            Err(e) => ChainVerdict {
                source: url,
                verdict: None,
                error: Some(format!("{e:#}")),
            },
        };
        if chain.ok() {
            lines.extend(kept);
        }
        chains.push(chain);
    }
    let merged = merge(lines);
    let stored = stored_heads(g).await;
    let missing = match &stored {
        Ok(heads) => unverified(&chains, heads),
        Err(_) => Vec::new(),
    };
    let all_ok = chains.iter().all(ChainVerdict::ok);
    let mut report = render(&chains, &merged);
    match &stored {
        Ok(heads) => report.push_str(&format!(
            "{} in the store, {} not verified\n",
            plural_chains(heads.len()),
            missing.len()
        )),
        Err(e) => report.push_str(&format!(
            "note: cannot list the chains in the store ({}): a controller missing from \
             --controller would go unnoticed\n",
            clean(&format!("{e:#}"))
        )),
    }
    for m in &missing {
        report.push_str(&format!("FAILED  {m}\n"));
    }
    let all_ok = all_ok && missing.is_empty();
    emit(args, format, &chains, &merged, &report, all_ok)
}

/// Checks every `--chain` file with its key, prints one line per chain,
/// then the merged timeline (or writes it with `--merged`). No controller
/// is asked: the auditor's copies and pinned keys are the whole story.
pub async fn verify_files(args: &VerifyArgs, format: Format) -> anyhow::Result<ExitCode> {
    let mut chains = Vec::new();
    let mut lines = Vec::new();
    for chain in &args.chains {
        let (one, keep) = (chain.clone(), args.merged);
        let checked = tokio::task::spawn_blocking(move || check_file(&one, keep))
            .await
            .context("the verification did not finish")?;
        let source = chain.path.display().to_string();
        chains.push(match checked {
            Ok((v, kept)) => {
                if v.ok {
                    lines.extend(kept);
                }
                ChainVerdict {
                    source,
                    verdict: Some(v),
                    error: None,
                }
            }
            Err(e) => ChainVerdict {
                source,
                verdict: None,
                error: Some(format!("{e:#}")),
            },
        });
    }
    let merged = merge(lines);
    let all_ok = chains.iter().all(ChainVerdict::ok);
    let report = render(&chains, &merged);
    emit(args, format, &chains, &merged, &report, all_ok)
}

/// Verifies one file's chain; with `keep`, when it verifies, also returns
/// its records (every segment's lines, oldest first, as many as verified:
/// lines a live log gained since are left out) for the merged timeline.
fn check_file(chain: &ChainFile, keep: bool) -> anyhow::Result<(Verdict, Vec<String>)> {
    let expected = chain
        .head
        .clone()
        .map(|(seq, hash)| AuditHead { seq, hash });
    let report = verify_path(
        &chain.path,
        &chain.public_key,
        &Start::Genesis,
        expected.as_ref(),
    )?;
    let v = verdict(&report, &chain.public_key, expected, None);
    let mut kept = Vec::new();
    if v.ok && keep {
        let cannot = || format!("cannot read {}", chain.path.display());
        let verified = usize::try_from(v.records).unwrap_or(usize::MAX);
        'segments: for segment in
            kcred_audit::segments::segments(&chain.path).with_context(cannot)?
        {
            let file = std::fs::File::open(&segment.path).with_context(cannot)?;
            for line in BufReader::new(file).lines() {
                if kept.len() == verified {
                    break 'segments;
                }
                kept.push(line.with_context(cannot)?);
            }
        }
    }
    Ok((v, kept))
}

/// Prints the verdicts (and the merged records where asked) and turns
/// `all_ok` into the exit code.
fn emit(
    args: &VerifyArgs,
    format: Format,
    chains: &[ChainVerdict],
    merged: &[String],
    report: &str,
    all_ok: bool,
) -> anyhow::Result<ExitCode> {
    match (args.merged, &args.out) {
        (true, Some(path)) => {
            write_merged(path, merged)?;
            print(report)?;
        }
        (true, None) => {
            // stdout carries the records: the verdicts go to stderr.
            eprint!("{report}");
            let mut out = BufWriter::new(std::io::stdout());
            for line in merged {
                writeln!(out, "{line}").context("cannot write the merged records")?;
            }
            out.flush().context("cannot write the merged records")?;
        }
        (false, _) => match format {
            Format::Json => print_json(&chains)?,
            Format::Table => print(report)?,
        },
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The head of every chain in the store, asked of the first controller
/// that answers.
async fn stored_heads(g: &Global) -> anyhow::Result<Vec<StoredAuditHead>> {
    let mut conn = connect::connect(g).await?;
    let heads = unary(conn.timeout, conn.client.audit_heads(AuditHeadsRequest {})).await?;
    Ok(heads.heads)
}

/// The chains the store holds a head for that no controller in the list
/// signs, or whose stored head is behind (or beside) the verified one.
pub fn unverified(chains: &[ChainVerdict], stored: &[StoredAuditHead]) -> Vec<String> {
    let mut out = Vec::new();
    for h in stored {
        let verified = chains
            .iter()
            .filter_map(|c| c.verdict.as_ref())
            .find(|v| v.key_id == h.key_id);
        match verified {
            None => out.push(format!(
                "the store holds chain {} (head seq {}) but no controller in --controller \
                 signs it: add that controller to the list",
                clean(&h.key_id),
                h.seq
            )),
            Some(v) => {
                // The chain grows while it is checked (this check is
                // audited too): the stored head may only be ahead.
                let expected = v.expected_head.as_ref();
                let behind =
                    expected.is_none_or(|e| h.seq < e.seq || (h.seq == e.seq && h.hash != e.hash));
                if behind {
                    out.push(format!(
                        "chain {} was verified against head seq {} but the store holds \
                         head seq {} hash {}",
                        clean(&h.key_id),
                        expected.map_or(0, |e| e.seq),
                        h.seq,
                        clean(&h.hash)
                    ));
                }
            }
        }
    }
    out
}

fn plural_chains(n: usize) -> String {
    if n == 1 {
        "1 chain".into()
    } else {
        format!("{n} chains")
    }
}

/// The records of verified chains, ordered by time, then key id, then seq
/// (a total order: within one chain seq is unique).
pub fn merge(lines: Vec<String>) -> Vec<String> {
    let mut keyed: Vec<(Position, String)> = lines
        .into_iter()
        .map(|l| (serde_json::from_str(&l).unwrap_or_default(), l))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        (a.unix_ms, &a.key_id, a.seq).cmp(&(b.unix_ms, &b.key_id, b.seq))
    });
    keyed.into_iter().map(|(_, l)| l).collect()
}

/// One line per chain, then the timeline's extent.
pub fn render(chains: &[ChainVerdict], merged: &[String]) -> String {
    let mut out = String::new();
    for c in chains {
        let url = clean(&c.source);
        match (&c.verdict, &c.error) {
            (Some(v), _) if v.ok => {
                let head = v.head.as_ref();
                out.push_str(&format!(
                    "OK      {url}  key {}  {} records  head seq {} hash {}  public key {}\n",
                    v.key_id,
                    v.records,
                    head.map_or(0, |h| h.seq),
                    head.map_or("-", |h| h.hash.as_str()),
                    v.public_key
                ));
            }
            (Some(v), _) => {
                let why = v
                    .problem
                    .as_ref()
                    .map(|p| format!("line {}: {}", p.line, clean(&p.message)))
                    .or_else(|| v.key_mismatch.clone())
                    .unwrap_or_else(|| "not verified".into());
                out.push_str(&format!(
                    "FAILED  {url}  key {}  {} good records, then {why}\n",
                    v.key_id, v.records
                ));
            }
            (None, e) => out.push_str(&format!(
                "FAILED  {url}  cannot check: {}\n",
                clean(e.as_deref().unwrap_or("unknown error"))
            )),
        }
    }
    let good = chains.iter().filter(|c| c.ok()).count();
    out.push_str(&format!(
        "{good} of {} chains verify; merged timeline: {} records\n",
        chains.len(),
        merged.len()
    ));
    out
}

/// Writes the merged records to `path` (0600), complete or not at all.
fn write_merged(path: &Path, merged: &[String]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let cannot = || format!("cannot write {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".kcredctl-merged-")
        .tempfile_in(dir)
        .with_context(cannot)?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        for line in merged {
            writeln!(w, "{line}").with_context(cannot)?;
        }
        w.flush().with_context(cannot)?;
    }
    tmp.as_file().sync_all().with_context(cannot)?;
    tmp.persist(path).with_context(cannot)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(unix_ms: i64, key_id: &str, seq: u64) -> String {
        format!(r#"{{"seq":{seq},"unix_ms":{unix_ms},"key_id":"{key_id}"}}"#)
    }

    #[test]
    fn merging_orders_by_time_then_key_then_seq() {
        let merged = merge(vec![
            rec(20, "b", 1),
            rec(10, "b", 2),
            rec(20, "a", 7),
            rec(5, "a", 3),
            rec(20, "a", 6),
        ]);
        assert_eq!(
            merged,
            vec![
                rec(5, "a", 3),
                rec(10, "b", 2),
                rec(20, "a", 6),
                rec(20, "a", 7),
                rec(20, "b", 1),
            ]
        );
    }
}
