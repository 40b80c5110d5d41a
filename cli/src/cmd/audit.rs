//! `shoal audit list|verify`: the signed ops of the team are its audit log.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Subcommand;

use shoal_api::audit::{AuditList, AuditVerify};

use crate::ctx::{Ctx, query};
use crate::error::Usage;
use crate::output::{json, table, when};
use crate::parse;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Lists the audit log, oldest first.
    List {
        /// From this time: RFC 3339, or a duration ago (2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Up to this time: RFC 3339, or a duration ago.
        #[arg(long)]
        until: Option<String>,
        /// A member or node name, or a key prefix.
        #[arg(long)]
        author: Option<String>,
        /// An action (deployment.start) or a family of them (deployment.).
        #[arg(long)]
        action: Option<String>,
        /// What the op is about: an id, key or name (or an id prefix).
        #[arg(long)]
        target: Option<String>,
    },
    /// Verifies every signature and every log's hash chain; exits 1 and
    /// names each problem when one is broken, forked or signed wrongly.
    Verify,
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::List {
            since,
            until,
            author,
            action,
            target,
        } => {
            let usage = |e: anyhow::Error| -> anyhow::Error { Usage(e.to_string()).into() };
            let since = since
                .map(|s| parse::time_ms("--since", &s))
                .transpose()
                .map_err(usage)?
                .map(|t| t.to_string());
            let until = until
                .map(|s| parse::time_ms("--until", &s))
                .transpose()
                .map_err(usage)?
                .map(|t| t.to_string());
            let v: AuditList = ctx
                .get(&format!(
                    "audit{}",
                    query(&[
                        ("since_ms", since.as_deref()),
                        ("until_ms", until.as_deref()),
                        ("author", author.as_deref()),
                        ("action", action.as_deref()),
                        ("target", target.as_deref()),
                    ])
                ))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|e| {
                    vec![
                        when(e.time_ms),
                        e.action.clone(),
                        e.author_name.clone(),
                        e.origin_name.clone(),
                        e.what.clone(),
                        e.status.clone(),
                        e.hash.chars().take(12).collect(),
                    ]
                })
                .collect();
            table(
                out,
                &["TIME", "ACTION", "AUTHOR", "ORIGIN", "WHAT", "STATUS", "OP"],
                &rows,
            )
        }
        Cmd::Verify => {
            let v: AuditVerify = ctx.get("audit/verify").await?;
            let problems = &v.problems;
            if ctx.json() {
                json(out, &v)?;
            } else if problems.is_empty() {
                writeln!(
                    out,
                    "ok: {} ops in {} logs, signatures and hash chains verified ({} as stored on disk)",
                    v.ops, v.logs, v.stored_ops
                )?;
            } else {
                for p in problems {
                    writeln!(out, "{}: {}", p.kind, p.message)?;
                }
            }
            if let Some(first) = problems.first() {
                bail!(
                    "the audit log has {} problem(s), first: {}",
                    problems.len(),
                    first.message
                );
            }
            Ok(())
        }
    }
}
