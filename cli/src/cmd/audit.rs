//! `shoal audit list|verify|purge`: the signed ops of the team are its audit
//! log; `purge` drops refused ops from every node's quarantine by an audited
//! `quarantine.purge`.

use std::io::Write;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;

use shoal_api::audit::{AuditList, AuditVerify};
use shoal_protocol::rules::MAX_PURGE;
use shoal_protocol::{Action, OpHash};

use crate::ctx::{Ctx, query};
use crate::error::Usage;
use crate::output::{json, table, when};
use crate::parse;
use crate::session::Session;

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
    /// Drops refused ops from every node's quarantine (admins): the ops
    /// named by hash (or a unique prefix), or with --all every one.
    Purge {
        /// Quarantined op hashes or unique prefixes (see `audit list`).
        ops: Vec<String>,
        /// Every quarantined op.
        #[arg(long, conflicts_with = "ops")]
        all: bool,
    },
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
        Cmd::Purge { ops, all } => purge(ctx, &ops, all, out).await,
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

async fn purge(ctx: &Ctx, ops: &[String], all: bool, out: &mut impl Write) -> Result<()> {
    if ops.is_empty() && !all {
        return Err(Usage(
            "name the quarantined ops to purge (see `shoal audit list`), or give --all".into(),
        )
        .into());
    }
    let list: AuditList = ctx.get("audit").await?;
    let held: Vec<&str> = list
        .iter()
        .filter(|e| e.status.starts_with("quarantined"))
        .map(|e| e.hash.as_str())
        .collect();
    let mut chosen: Vec<OpHash> = Vec::new();
    if all {
        for h in &held {
            chosen.push(
                h.parse()
                    .map_err(|e| anyhow!("the daemon sent a malformed op hash {h}: {e}"))?,
            );
        }
    }
    for arg in ops {
        let arg = arg.to_ascii_lowercase();
        let found: Vec<&&str> = held.iter().filter(|h| h.starts_with(&arg)).collect();
        let h = match found.as_slice() {
            [one] => **one,
            [] => {
                return Err(Usage(format!(
                    "no quarantined op starts with {arg}; see `shoal audit list`"
                ))
                .into());
            }
            _ => {
                return Err(Usage(format!(
                    "{arg} names {} quarantined ops; give more of the hash",
                    found.len()
                ))
                .into());
            }
        };
        let h: OpHash = h
            .parse()
            .map_err(|e| anyhow!("the daemon sent a malformed op hash {h}: {e}"))?;
        if !chosen.contains(&h) {
            chosen.push(h);
        }
    }
    if chosen.is_empty() {
        writeln!(out, "the quarantine is empty; nothing to purge")?;
        return Ok(());
    }
    let n = chosen.len();
    for chunk in chosen.chunks(MAX_PURGE) {
        let s = Session::open(ctx).await?;
        let hash = s
            .act(Action::QuarantinePurge {
                ops: chunk.to_vec(),
            })
            .await?;
        writeln!(
            out,
            "purged {} op(s) from quarantine (op {})",
            chunk.len(),
            &hash[..12.min(hash.len())]
        )?;
    }
    if n > MAX_PURGE {
        writeln!(out, "purged {n} op(s) in all")?;
    }
    Ok(())
}
