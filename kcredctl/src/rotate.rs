//! `rotate keytab`, `rotate key` (following the rollout) and `revoke`.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kcred_proto::kcred::v1::{
    RetireKeyRequest, RevokeRequest, RevokeResponse, RotateKeyRequest, RotateKeytabRequest,
    RotationProgress,
};
use serde_json::json;
use tokio::time::Instant;
use tonic::Streaming;

use crate::cli::{Format, RevokeArgs};
use crate::connect::{Conn, explain, unary};
use crate::output::{clean, print, print_json};
use crate::timeparse::format_duration;

/// What is being rotated, for messages.
struct Subject<'a> {
    /// "HTTP/web@R" or "key ring orders".
    name: String,
    /// "kvno" or "version".
    unit: &'a str,
    /// A command to look at the volumes afterwards.
    hint: String,
}

/// `kcredctl rotate keytab`.
pub async fn keytab(
    conn: &mut Conn,
    principal: &str,
    grace: Duration,
    wait: Duration,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let req = RotateKeytabRequest {
        principal: principal.to_string(),
        grace_secs: grace.as_secs(),
        wait_secs: wait.as_secs(),
    };
    let stream = unary(conn.timeout, conn.client.rotate_keytab(req)).await?;
    let subject = Subject {
        name: principal.to_string(),
        unit: "kvno",
        hint: format!("kcredctl list --principal {principal}"),
    };
    follow(stream, &subject, wait, conn.timeout, format).await
}

/// `kcredctl rotate key`.
pub async fn key(
    conn: &mut Conn,
    id: &str,
    wait: Duration,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let req = RotateKeyRequest {
        key_id: id.to_string(),
        wait_secs: wait.as_secs(),
    };
    let stream = unary(conn.timeout, conn.client.rotate_key(req)).await?;
    let subject = Subject {
        name: format!("key ring {id}"),
        unit: "version",
        hint: "kcredctl list".into(),
    };
    follow(stream, &subject, wait, conn.timeout, format).await
}

/// Prints progress until done, the stream ends, or `wait` (plus `slack`
/// for the controller's own final report) is over.
async fn follow(
    mut stream: Streaming<RotationProgress>,
    subject: &Subject<'_>,
    wait: Duration,
    slack: Duration,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + wait + slack;
    let mut out = io::stdout();
    let mut shown = Progress::new(format == Format::Json, io::stdout().is_terminal());
    let mut last = None;
    loop {
        let got = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) | Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                shown.finish(&mut out)?;
                return Err(explain(&status));
            }
            Ok(Ok(Some(p))) => p,
        };
        shown
            .update(&got, &mut out)
            .context("cannot write to stdout")?;
        let done = got.done;
        last = Some(got);
        if done {
            break;
        }
    }
    shown.finish(&mut out)?;
    let (text, ok) = summary(subject, last.as_ref(), wait);
    match format {
        Format::Json => eprintln!("{text}"),
        Format::Table => print(&format!("{text}\n"))?,
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Shows "N of M volumes updated" when it changes: rewritten in place on
/// a terminal, a line each otherwise, a JSON line each with `--output json`.
pub struct Progress {
    json: bool,
    tty: bool,
    counts: Option<(u32, u32)>,
    message: String,
    open: bool,
}

impl Progress {
    pub fn new(json: bool, tty: bool) -> Self {
        Progress {
            json,
            tty,
            counts: None,
            message: String::new(),
            open: false,
        }
    }

    pub fn update(&mut self, p: &RotationProgress, out: &mut impl Write) -> io::Result<()> {
        if self.json {
            let line = json!({"message": p.message, "version": p.version,
                "updated": p.updated, "total": p.total, "done": p.done});
            writeln!(out, "{line}")?;
            return out.flush();
        }
        if self.worth_showing(p) {
            self.message = p.message.clone();
            if self.open {
                write!(out, "\r\x1b[K")?;
            }
            writeln!(out, "{}", clean(&p.message))?;
            if let (true, Some((u, t))) = (self.open, self.counts) {
                write!(out, "{}", counts_line(u, t))?;
            }
        }
        if p.total > 0 && self.counts != Some((p.updated, p.total)) {
            self.counts = Some((p.updated, p.total));
            let line = counts_line(p.updated, p.total);
            if self.tty {
                write!(out, "\r\x1b[K{line}")?;
                self.open = true;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()
    }

    /// A message is shown when it is new and says more than the counts;
    /// the last one is left to the summary.
    fn worth_showing(&self, p: &RotationProgress) -> bool {
        !p.message.is_empty()
            && !p.done
            && p.message != self.message
            && !p
                .message
                .contains(&format!("{} of {} volumes", p.updated, p.total))
    }

    /// Ends a line left open on a terminal.
    pub fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.open {
            self.open = false;
            writeln!(out)?;
        }
        out.flush()
    }
}

fn counts_line(updated: u32, total: u32) -> String {
    format!("{updated} of {total} volumes updated")
}

/// The closing line, and whether the command succeeded.
fn summary(s: &Subject<'_>, last: Option<&RotationProgress>, wait: Duration) -> (String, bool) {
    let Some(p) = last else {
        return (
            format!(
                "the controller ended the rotation of {} without reporting progress",
                s.name
            ),
            false,
        );
    };
    let (name, unit, v, u, t) = (&s.name, s.unit, p.version, p.updated, p.total);
    // The controller also ends the stream (done) when its wait is over,
    // so completion is every holder updated.
    if t == 0 {
        (
            format!("done: {name} is at {unit} {v}; no volume holds it"),
            true,
        )
    } else if u >= t {
        (
            format!("done: {name} is at {unit} {v}; {u} of {t} volumes updated"),
            true,
        )
    } else if wait.is_zero() {
        (
            format!(
                "started: {name} is at {unit} {v}; {u} of {t} volumes updated so far \
                 (not waiting: --wait 0); follow with `{}`",
                s.hint
            ),
            true,
        )
    } else {
        (
            format!(
                "not done after {}: {u} of {t} volumes have {name} at {unit} {v}; the others \
                 get it when their nodes next ask; follow with `{}`",
                format_duration(wait),
                s.hint
            ),
            false,
        )
    }
}

/// `kcredctl revoke`.
pub async fn revoke(conn: &mut Conn, args: &RevokeArgs, format: Format) -> anyhow::Result<()> {
    let req = RevokeRequest {
        volume_id: args.volume_id.clone(),
        reason: args.reason.clone(),
    };
    let resp = unary(conn.timeout, conn.client.revoke(req)).await?;
    match format {
        Format::Json => print_json(&json!({
            "volume_id": args.volume_id,
            "node": resp.node,
            "revoked": true,
            "volume_ids": resp.volume_ids,
        })),
        Format::Table => print(&revoked_text(&args.volume_id, &resp)),
    }
}

/// What `kcredctl revoke` tells a person: the volume, and the pod's other
/// volumes revoked with it.
fn revoked_text(volume_id: &str, resp: &RevokeResponse) -> String {
    let others: Vec<String> = resp
        .volume_ids
        .iter()
        .filter(|v| *v != volume_id)
        .map(|v| clean(v))
        .collect();
    let with = if others.is_empty() {
        String::new()
    } else {
        format!(" and its pod's other volumes ({})", others.join(", "))
    };
    format!(
        "revoked {} on node {}{with}: no more renewals, and the files are wiped\n",
        clean(volume_id),
        clean(&resp.node)
    )
}

/// `kcredctl retire <id> <version>`.
pub async fn retire(conn: &mut Conn, id: &str, version: u32, format: Format) -> anyhow::Result<()> {
    let req = RetireKeyRequest {
        key_id: id.to_string(),
        version,
    };
    let resp = unary(conn.timeout, conn.client.retire_key(req)).await?;
    match format {
        Format::Json => {
            print_json(&json!({"key_id": id, "retired": version, "volumes": resp.volumes}))
        }
        Format::Table => print(&format!(
            "retired version {version} of {}: {} volume(s) asked to drop it\n",
            clean(id),
            resp.volumes
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_names_the_pods_other_volumes_revoked_with_it() {
        let resp = |ids: &[&str]| RevokeResponse {
            node: "node-a".into(),
            volume_ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            revoked_text("csi-1", &resp(&["csi-1", "csi-2", "csi-3"])),
            "revoked csi-1 on node node-a and its pod's other volumes (csi-2, csi-3): \
             no more renewals, and the files are wiped\n"
        );
        assert_eq!(
            revoked_text("csi-1", &resp(&[])),
            "revoked csi-1 on node node-a: no more renewals, and the files are wiped\n"
        );
    }

    fn p(updated: u32, total: u32, message: &str, done: bool) -> RotationProgress {
        RotationProgress {
            message: message.into(),
            version: 4,
            updated,
            total,
            done,
        }
    }

    fn run(json: bool, tty: bool, steps: &[RotationProgress]) -> String {
        let mut progress = Progress::new(json, tty);
        let mut out = Vec::new();
        for s in steps {
            progress.update(s, &mut out).expect("write");
        }
        progress.finish(&mut out).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    fn steps() -> Vec<RotationProgress> {
        vec![
            p(0, 3, "created kvno 4", false),
            p(0, 3, "created kvno 4", false),
            p(2, 3, "web@R: 2 of 3 volumes updated", false),
            p(3, 3, "web@R: version 4 delivered to all 3 volumes", true),
        ]
    }

    #[test]
    fn plain_output_prints_a_line_per_change() {
        assert_eq!(
            run(false, false, &steps()),
            "created kvno 4\n0 of 3 volumes updated\n2 of 3 volumes updated\n3 of 3 volumes updated\n"
        );
    }

    #[test]
    fn terminal_output_rewrites_one_line() {
        assert_eq!(
            run(false, true, &steps()),
            "created kvno 4\n\r\x1b[K0 of 3 volumes updated\r\x1b[K2 of 3 volumes updated\
             \r\x1b[K3 of 3 volumes updated\n"
        );
    }

    #[test]
    fn json_output_is_one_line_per_message() {
        let out = run(true, true, &steps()[..2]);
        let first = out.lines().next().expect("line");
        let v: serde_json::Value = serde_json::from_str(first).expect("json");
        assert_eq!(
            v,
            json!({"message": "created kvno 4", "version": 4, "updated": 0, "total": 3, "done": false})
        );
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn summary_fails_only_when_the_wait_ended_unfinished() {
        let s = Subject {
            name: "HTTP/web@R".into(),
            unit: "kvno",
            hint: "kcredctl list --principal HTTP/web@R".into(),
        };
        let min = Duration::from_secs(120);
        let (text, ok) = summary(&s, Some(&p(3, 3, "", true)), min);
        assert_eq!(
            (text.as_str(), ok),
            (
                "done: HTTP/web@R is at kvno 4; 3 of 3 volumes updated",
                true
            )
        );
        let (text, ok) = summary(&s, Some(&p(2, 3, "", false)), min);
        assert!(!ok);
        assert!(
            text.starts_with("not done after 2m: 2 of 3 volumes have HTTP/web@R at kvno 4"),
            "{text}"
        );
        assert!(summary(&s, Some(&p(0, 3, "", false)), Duration::ZERO).1);
        assert!(!summary(&s, None, min).1);
        let (text, ok) = summary(&s, Some(&p(2, 3, "stopped waiting", true)), min);
        assert!(!ok, "the controller's wait ended unfinished: {text}");
        assert!(
            summary(&s, Some(&p(0, 0, "", true)), min)
                .0
                .ends_with("no volume holds it")
        );
    }
}
