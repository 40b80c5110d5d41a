//! `shoal member`: the members of a team, their roles and removal (which
//! rotates the team secrets key, as making an admin a user does).

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;
use shoal_protocol::Action;
use shoal_protocol::model::Role;

use crate::ctx::{Ctx, find, key_of, list_of, str_of};
use crate::output::{Output, json, short, table};
use crate::parse;
use crate::session::{Session, rotate_after};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Lists the members of a team.
    List,
    /// Changes a member's role (admin or user).
    Role { member: String, role: String },
    /// Removes a member from the team.
    Remove { member: String },
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::List => list(ctx, out).await,
        Cmd::Role { member, role: r } => {
            let r = parse::role(&r)?;
            role(ctx, &member, r, out).await
        }
        Cmd::Remove { member } => remove(ctx, &member, out).await,
    }
}

fn status(v: &Value) -> String {
    if v.get("removed").is_some_and(|r| !r.is_null()) {
        "removed".into()
    } else {
        "active".into()
    }
}

async fn list(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let row = |m: &Value| {
        let email = str_of(m, "email");
        vec![
            str_of(m, "name"),
            str_of(m, "role"),
            short(&str_of(m, "key")),
            if email.is_empty() { "-".into() } else { email },
            status(m),
        ]
    };
    let v = ctx.get("members").await?;
    match ctx.output {
        Output::Json => json(out, &v),
        Output::Table => {
            let rows: Vec<Vec<String>> = list_of(&v).iter().map(row).collect();
            table(out, &["NAME", "ROLE", "KEY", "EMAIL", "STATUS"], &rows)
        }
    }
}

async fn role(ctx: &Ctx, member: &str, role: Role, out: &mut impl Write) -> Result<()> {
    let s = Session::open(ctx).await?;
    let list = ctx.get("members").await?;
    let m = find(list_of(&list), member, "member")?;
    let was_admin = matches!(str_of(m, "role").as_str(), "admin" | "owner");
    s.act(Action::MemberRole {
        member: key_of(m)?,
        role,
    })
    .await?;
    let name = str_of(m, "name");
    writeln!(out, "{name} is now {role}")?;
    // An admin made a user held the team key: it no longer should.
    if was_admin && role < Role::Admin {
        return rotate_after(&s, &format!("member {name}"), out).await;
    }
    Ok(())
}

async fn remove(ctx: &Ctx, member: &str, out: &mut impl Write) -> Result<()> {
    let s = Session::open(ctx).await?;
    let list = ctx.get("members").await?;
    let m = find(list_of(&list), member, "member")?;
    let name = str_of(m, "name");
    s.act(Action::MemberRemove { member: key_of(m)? }).await?;
    writeln!(out, "removed member {name}")?;
    rotate_after(&s, &format!("member {name}"), out).await
}
