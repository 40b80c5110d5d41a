//! How commands print: the output format (`-o table|json`), tables with
//! padded columns, one-line JSON, and the small cell formatters they share.

use std::io::Write;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

/// Output format of listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn short(hex: &str) -> String {
    hex.chars().take(8).collect()
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `v` as one line of JSON, its object keys sorted as the daemon's
/// answers print (through [`serde_json::Value`], whose maps are sorted).
pub fn json(out: &mut impl Write, v: &impl Serialize) -> Result<()> {
    let v: Value = serde_json::to_value(v)?;
    writeln!(out, "{}", serde_json::to_string(&v)?)?;
    Ok(())
}

/// `-` for empty cells.
pub fn dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// An RFC 3339 time (seconds) for milliseconds since the epoch.
pub fn when(ms: u64) -> String {
    // RFC 3339 ends at year 9999; later times (a peer's absurd expiry) print
    // as that bound instead of failing.
    const LAST_MS: u64 = 253_402_300_799_000;
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.min(LAST_MS)),
    )
    .to_string()
}
