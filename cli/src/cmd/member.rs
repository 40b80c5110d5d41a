//! `shoal member`: the members of a team, their roles and removal (which
//! rotates the team secrets key, as making an admin a user does).

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use shoal_api::members::{InviteList, Member, MemberList};
use shoal_api::node::NodeInfo;
use shoal_api::nodes::NodeList;
use shoal_protocol::Action;
use shoal_protocol::model::Role;

use crate::cmd::team::invite_state;
use crate::ctx::{Ctx, find, key_of};
use crate::output::{Output, dash, json, short, table};
use crate::parse;
use crate::session::{Session, now_ms, rotate_after};

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

async fn list(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let row = |m: &Member| {
        vec![
            m.name.clone(),
            m.role.as_str().to_string(),
            short(&m.key),
            dash(m.email.clone().unwrap_or_default()),
            if m.removed.is_some() {
                "removed".into()
            } else {
                "active".into()
            },
        ]
    };
    let v: MemberList = ctx.get("members").await?;
    match ctx.output {
        Output::Json => json(out, &v),
        Output::Table => {
            let rows: Vec<Vec<String>> = v.iter().map(row).collect();
            table(out, &["NAME", "ROLE", "KEY", "EMAIL", "STATUS"], &rows)
        }
    }
}

async fn role(ctx: &Ctx, member: &str, role: Role, out: &mut impl Write) -> Result<()> {
    let s = Session::open(ctx).await?;
    let list: MemberList = ctx.get("members").await?;
    let m = find(&list, member, "member")?;
    let was_admin = matches!(m.role, Role::Admin | Role::Owner);
    s.act(Action::MemberRole {
        member: key_of(m)?,
        role,
    })
    .await?;
    let name = &m.name;
    writeln!(out, "{name} is now {role}")?;
    // An admin made a user held the team key: it no longer should.
    if was_admin && role < Role::Admin {
        return rotate_after(&s, &format!("member {name}"), out).await;
    }
    Ok(())
}

async fn remove(ctx: &Ctx, member: &str, out: &mut impl Write) -> Result<()> {
    let s = Session::open(ctx).await?;
    let list: MemberList = ctx.get("members").await?;
    let m = find(&list, member, "member")?;
    let name = &m.name;
    let key = m.key.clone();
    s.act(Action::MemberRemove { member: key_of(m)? }).await?;
    writeln!(out, "removed member {name}")?;
    // What the member could still bring in: their unused invites.
    let invites: InviteList = ctx.get("invites").await?;
    let now = now_ms();
    for i in invites
        .iter()
        .filter(|i| i.creator == key && invite_state(i, now) == "open")
    {
        match s.act(Action::InviteRevoke { id: i.id.clone() }).await {
            Ok(_) => writeln!(out, "revoked invite {} of {name}", i.id)?,
            Err(e) => writeln!(out, "invite {} of {name} stays open: {e:#}", i.id)?,
        }
    }
    // The nodes the member joined with: enrolled by their own join, or by
    // a node invite they made.
    let theirs: Vec<&str> = invites
        .iter()
        .filter(|i| i.creator == key && i.kind == "node")
        .map(|i| i.id.as_str())
        .collect();
    let nodes: NodeList = ctx.get("nodes").await?;
    let here: NodeInfo = ctx.client.get("/v1/node").await?;
    for n in nodes.iter().filter(|n| {
        n.removed.is_none()
            && (n.sponsor.as_deref() == Some(key.as_str())
                || n.invite.as_deref().is_some_and(|i| theirs.contains(&i)))
    }) {
        if n.key == here.key {
            writeln!(
                out,
                "node {} of {name} remains: it is the node this command runs through; remove it from another node with `shoal node remove {}`",
                n.name, n.name
            )?;
            continue;
        }
        match s.act(Action::NodeRemove { node: key_of(n)? }).await {
            Ok(_) => writeln!(out, "removed node {} of {name}", n.name)?,
            Err(e) => writeln!(out, "node {} of {name} remains: {e:#}", n.name)?,
        }
    }
    rotate_after(&s, &format!("member {name}"), out).await
}
