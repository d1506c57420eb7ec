//! Aligned tables, JSON documents, and safe text for the terminal.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

/// Columns padded to their widest cell, two spaces apart. Cells are
/// [`clean`]ed, so text from the controller cannot move the cursor.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.iter().map(|c| clean(c)).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let width = |c: &str| c.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Escapes control characters (newlines, ESC...) so a value shows as text.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A long id cut to its first 12 characters and "…" for tables.
pub fn short_id(id: &str) -> String {
    if id.chars().count() <= 16 {
        id.to_string()
    } else {
        let head: String = id.chars().take(12).collect();
        format!("{head}…")
    }
}

/// "-" for an empty value, which reads better in a column than a gap.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Writes `value` to stdout as pretty JSON and a newline.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    print(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&["NODE", "STATE", "VOLUMES"]);
        t.row(vec!["node-a".into(), "alive".into(), "3".into()]);
        t.row(vec!["n".into(), "lost".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "NODE    STATE  VOLUMES\n\
             node-a  alive  3\n\
             n       lost   12\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes_and_rows_are_padded() {
        let mut t = Table::new(&["ID", "X"]);
        t.row(vec!["äöü…".into()]);
        t.row(vec!["abcde".into(), "y".into(), "dropped".into()]);
        assert_eq!(t.render(), "ID     X\näöü…\nabcde  y\n");
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let mut t = Table::new(&["REASON"]);
        t.row(vec!["evil\n\u{1b}[2Jtext".into()]);
        let out = t.render();
        assert_eq!(out, "REASON\nevil\\n\\u{1b}[2Jtext\n");
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn long_ids_are_shortened_short_ones_kept() {
        assert_eq!(short_id("csi-0123456789abcdef0123"), "csi-01234567…");
        assert_eq!(short_id("vol-1"), "vol-1");
        assert_eq!(short_id("0123456789abcdef"), "0123456789abcdef");
    }
}
