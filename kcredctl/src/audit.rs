//! `audit query` and `audit export`: records as the controller stores them.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kcred_proto::kcred::v1::{AuditLine, AuditQuery};
use serde::Deserialize;
use tonic::Streaming;

use crate::Usage;
use crate::cli::{AuditFilterArgs, Format};
use crate::connect::{Conn, next, unary};
use crate::output::{Table, or_dash, print};

/// The request for a set of filters; unset filters are empty / zero.
pub fn to_query(f: &AuditFilterArgs) -> anyhow::Result<AuditQuery> {
    if let (Some(since), Some(until)) = (f.since, f.until)
        && since >= until
    {
        return Err(Usage::new("--since must be earlier than --until").into());
    }
    Ok(AuditQuery {
        subject: f.subject.clone().unwrap_or_default(),
        namespace: f.namespace.clone().unwrap_or_default(),
        node: f.node.clone().unwrap_or_default(),
        action: f.action.map(|a| a.as_str().to_string()).unwrap_or_default(),
        since_unix_ms: f.since.unwrap_or(0),
        until_unix_ms: f.until.unwrap_or(0),
    })
}

/// `kcredctl audit query`.
pub async fn query(conn: &mut Conn, f: &AuditFilterArgs, format: Format) -> anyhow::Result<()> {
    let req = to_query(f)?;
    let mut stream = unary(conn.timeout, conn.client.audit_export(req)).await?;
    if format == Format::Json {
        let mut out = BufWriter::new(io::stdout());
        copy_lines(&mut stream, &mut out, conn.timeout).await?;
        return Ok(());
    }
    let mut rows = Vec::new();
    while let Some(line) = next(&mut stream, conn.timeout).await? {
        rows.push(line.json);
    }
    print(&render_records(&rows)?)
}

/// `kcredctl audit export`: JSON lines as received, to `out` or stdout;
/// a file appears under its name only once complete.
pub async fn export(
    conn: &mut Conn,
    f: &AuditFilterArgs,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let req = to_query(f)?;
    let mut stream = unary(conn.timeout, conn.client.audit_export(req)).await?;
    let Some(path) = out else {
        let n = copy_lines(&mut stream, &mut BufWriter::new(io::stdout()), conn.timeout).await?;
        eprintln!("exported {n} audit records");
        return Ok(());
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let cannot = |what: &str| format!("cannot {what} {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".kcredctl-export-")
        .tempfile_in(dir)
        .with_context(|| cannot("create a temporary file beside"))?;
    let mut writer = BufWriter::new(tmp.as_file_mut());
    let n = copy_lines(&mut stream, &mut writer, conn.timeout).await?;
    drop(writer);
    tmp.as_file().sync_all().with_context(|| cannot("write"))?;
    tmp.persist(path).with_context(|| cannot("write"))?;
    eprintln!("exported {n} audit records to {}", path.display());
    Ok(())
}

/// Writes each received line and a newline (unless it has one), then
/// flushes; returns the number of lines.
pub async fn copy_lines(
    stream: &mut Streaming<AuditLine>,
    out: &mut impl Write,
    idle: Duration,
) -> anyhow::Result<u64> {
    let mut n = 0;
    while let Some(line) = next(stream, idle).await? {
        write_line(out, &line.json).context("cannot write the audit records")?;
        n += 1;
    }
    out.flush().context("cannot write the audit records")?;
    Ok(n)
}

fn write_line(out: &mut impl Write, json: &str) -> io::Result<()> {
    out.write_all(json.as_bytes())?;
    if !json.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The fields a table shows; unknown fields are ignored so that a newer
/// controller's records still display.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Row {
    time: String,
    seq: u64,
    action: String,
    actor: String,
    subject: String,
    kvno: Option<u32>,
    serial: Option<String>,
    key_version: Option<u32>,
    node: String,
    namespace: String,
    pod: String,
    decision: String,
    reason: String,
    #[serde(default)]
    detail: String,
}

/// The `audit query` table.
fn render_records(lines: &[String]) -> anyhow::Result<String> {
    if lines.is_empty() {
        return Ok("no audit records match\n".into());
    }
    let mut t = Table::new(&[
        "TIME", "SEQ", "ACTION", "ACTOR", "SUBJECT", "NODE", "NS/POD", "DECISION", "REASON",
    ]);
    for (i, line) in lines.iter().enumerate() {
        let r: Row = serde_json::from_str(line)
            .with_context(|| format!("record {} from the controller is not valid", i + 1))?;
        let mut subject = r.subject;
        if let Some(k) = r.kvno {
            subject.push_str(&format!(" kvno {k}"));
        }
        if let Some(s) = r.serial {
            subject.push_str(&format!(" serial {s}"));
        }
        if let Some(v) = r.key_version {
            subject.push_str(&format!(" v{v}"));
        }
        let place = match (r.namespace.is_empty(), r.pod.is_empty()) {
            (true, true) => String::new(),
            _ => format!("{}/{}", r.namespace, r.pod),
        };
        t.row(vec![
            r.time,
            r.seq.to_string(),
            r.action,
            r.actor,
            or_dash(subject.trim_start()),
            or_dash(&r.node),
            or_dash(&place),
            r.decision,
            if r.detail.is_empty() {
                r.reason
            } else {
                format!("{}: {}", r.reason, r.detail)
            },
        ]);
    }
    Ok(t.render())
}

#[cfg(test)]
mod tests {
    use kcred_audit::Action;

    use super::*;

    #[test]
    fn filters_become_the_query_and_bad_ranges_are_usage_errors() {
        let f = AuditFilterArgs {
            subject: Some("HTTP/web".into()),
            action: Some(Action::NodeLost),
            since: Some(1000),
            ..Default::default()
        };
        let q = to_query(&f).expect("valid");
        assert_eq!(q.subject, "HTTP/web");
        assert_eq!(q.action, "node_lost");
        assert_eq!((q.since_unix_ms, q.until_unix_ms), (1000, 0));
        assert_eq!(q.namespace, "");
        let bad = AuditFilterArgs {
            since: Some(2000),
            until: Some(1000),
            ..Default::default()
        };
        let err = to_query(&bad).expect_err("since after until");
        assert!(err.downcast_ref::<Usage>().is_some());
    }

    #[test]
    fn records_render_one_row_each_with_versions_in_the_subject() {
        let lines = vec![
            r#"{"v":1,"seq":7,"time":"2026-05-01T12:00:00.123Z","actor":"node/node-a",
               "action":"issue","kind":"keytab","subject":"HTTP/web@R","kvno":3,"serial":null,
               "key_version":null,"node":"node-a","namespace":"prod","pod":"web-0",
               "decision":"allow","reason":"","hash":"ab","signature":"cd"}"#
                .replace('\n', ""),
            r#"{"seq":8,"time":"2026-05-01T12:00:01.000Z","actor":"controller",
               "action":"node_lost","decision":"allow","node":"node-b","future_field":1}"#
                .replace('\n', ""),
        ];
        let text = render_records(&lines).expect("renders");
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        assert!(
            rows[0].starts_with("TIME                      SEQ  ACTION     ACTOR"),
            "{}",
            rows[0]
        );
        assert!(
            rows[1].contains(
                "7    issue      node/node-a  HTTP/web@R kvno 3  node-a  prod/web-0  allow"
            )
        );
        assert!(
            rows[2].contains(
                "8    node_lost  controller   -                  node-b  -           allow"
            ),
            "{text}"
        );
        let err = render_records(&["not json".into()]).expect_err("refused");
        assert!(err.to_string().contains("record 1"), "{err}");
    }

    #[test]
    fn lines_are_written_exactly_with_one_newline() {
        let mut out = Vec::new();
        write_line(&mut out, r#"{"a":1}"#).expect("write");
        write_line(&mut out, "{\"b\":2}\n").expect("write");
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    }
}
