//! `shoal team`: the teams this node's daemon holds; creating one, inviting
//! members, joining with a ticket and rotating the team secrets key.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use shoal_api::join::{JoinRequest, JoinStep, Joined};
use shoal_api::members::{InviteEntry, InviteList};
use shoal_api::ops::{OpRequest, PreparedBody};
use shoal_api::teams::{GenesisRequest, TeamCreated, TeamInfo, TeamList};
use shoal_protocol::Action;
use shoal_protocol::action::NewMember;
use shoal_protocol::model::{InviteKind, Role};
use shoal_protocol::ticket::Ticket;

use crate::ctx::{Ctx, segment};
use crate::error::Usage;
use crate::output::{Output, json, table, when};
use crate::parse;
use crate::profile;
use crate::session::{Session, decode_body, now_ms, print_rotated, rotate_key};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Lists the teams the daemon holds.
    List,
    /// Shows a team: ids, counts, state heads and hash.
    Show {
        /// Team name or id (default: --team, else the daemon's only team).
        team: Option<String>,
    },
    /// Creates a team owned by your profile, with this node as its first node.
    Create { name: String },
    /// Makes a single-use member ticket; the ticket is the last line.
    /// `team invite list` lists the team's invites, `team invite revoke ID`
    /// revokes one.
    #[command(args_conflicts_with_subcommands = true)]
    Invite {
        #[command(subcommand)]
        sub: Option<InviteCmd>,
        /// The new member's role: admin or user.
        #[arg(long, default_value = "user")]
        role: String,
        /// How long the ticket works (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// Joins a team with a ticket from `team invite`: your profile becomes a
    /// member and this machine's daemon one of the team's nodes.
    Join { ticket: String },
    /// Replaces the team secrets key with a new one sealed to every node and
    /// admin, and seals every registry password again to it (admins; done
    /// by `member remove` and `node remove` on their own).
    RotateKey,
}

/// `team invite list|revoke`.
#[derive(Subcommand, Debug)]
pub enum InviteCmd {
    /// Lists the team's invites: id, kind and what it grants, creator,
    /// expiry, and whether it was used or revoked.
    List,
    /// Revokes an invite (its id or a unique prefix): its ticket no longer
    /// admits anyone.
    Revoke { id: String },
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::List => list(ctx, out).await,
        Cmd::Show { team } => show(ctx, team.as_deref(), out).await,
        Cmd::Create { name } => create(ctx, &name, out).await,
        Cmd::Invite {
            sub: Some(InviteCmd::List),
            ..
        } => invite_list(ctx, out).await,
        Cmd::Invite {
            sub: Some(InviteCmd::Revoke { id }),
            ..
        } => invite_revoke(ctx, &id, out).await,
        Cmd::Invite {
            sub: None,
            role,
            expires,
        } => {
            let role = parse::role(&role)?;
            // Refused before anything is written.
            let life = parse::lifetime(&expires).map_err(|e| Usage(e.to_string()))?;
            let s = Session::open(ctx).await?;
            invite(&s, role, life, out).await
        }
        Cmd::Join { ticket } => join(ctx, &ticket, out).await,
        Cmd::RotateKey => {
            let s = Session::open(ctx).await?;
            match rotate_key(&s).await? {
                Some(r) => print_rotated(&r, out),
                None => bail!(
                    "this team has no secrets key yet: it is made when an admin first stores a registry password"
                ),
            }
        }
    }
}

async fn list(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let v: TeamList = ctx.client.get("/v1/teams").await?;
    match ctx.output {
        Output::Json => json(out, &v),
        Output::Table => {
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|t| vec![t.name.clone(), t.id.clone(), t.ops.to_string()])
                .collect();
            table(out, &["NAME", "ID", "OPS"], &rows)
        }
    }
}

/// `team show [TEAM]`: the team named, else the context's.
async fn show(ctx: &Ctx, team: Option<&str>, out: &mut impl Write) -> Result<()> {
    let route = match team {
        Some(t) => format!("/v1/teams/{}", segment(t)),
        None => ctx.base().await?,
    };
    let v: TeamInfo = ctx.client.get(&route).await?;
    match ctx.output {
        Output::Json => json(out, &v),
        Output::Table => {
            for (field, value) in [
                ("name", v.name.clone()),
                ("id", v.id.clone()),
                ("members", v.members.to_string()),
                ("nodes", v.nodes.to_string()),
                ("ops", v.ops.to_string()),
                ("state_hash", v.state_hash.clone()),
            ] {
                writeln!(out, "{field:<11}{value}")?;
            }
            writeln!(out, "{:<11}{}", "heads", v.heads.join(" "))?;
            Ok(())
        }
    }
}

async fn create(ctx: &Ctx, name: &str, out: &mut impl Write) -> Result<()> {
    let client = &ctx.client;
    let p = profile::load(&ctx.dir)?;
    let owner = NewMember {
        key: p.public(),
        name: p.name.clone(),
        email: p.email.clone(),
        enc_key: p.enc.public_hex(),
    };
    let v: PreparedBody = client
        .post(
            "/v1/teams/genesis",
            &GenesisRequest {
                name: name.to_string(),
                owner,
            },
        )
        .await?;
    let body = decode_body(&v.body)?;
    if body.author != p.public()
        || !matches!(&body.action, Action::TeamCreate { name: n, .. } if n == name)
    {
        bail!("the daemon prepared an op other than the one asked for; not signing it");
    }
    let op = body.sign(&p.key)?;
    let v: TeamCreated = client
        .post(
            "/v1/teams",
            &OpRequest {
                op: hex::encode(op.encode()),
            },
        )
        .await?;
    writeln!(out, "created team {} ({})", v.name, v.id)?;
    Ok(())
}

async fn invite(
    s: &Session<'_>,
    role: Role,
    lifetime: Duration,
    out: &mut impl Write,
) -> Result<()> {
    if role == Role::Owner {
        bail!("a team has exactly one owner: invite an admin or a user");
    }
    let ticket = s.invite(InviteKind::Member { role }, lifetime).await?;
    writeln!(
        out,
        "invite for one {role} of team {}, valid until {}; redeem with `shoal team join TICKET`:",
        ticket.team_name,
        when(ticket.expires_ms)
    )?;
    writeln!(out, "{}", ticket.encode()?)?;
    Ok(())
}

async fn join(ctx: &Ctx, ticket: &str, out: &mut impl Write) -> Result<()> {
    let client = &ctx.client;
    let p = profile::load(&ctx.dir)?;
    let t = Ticket::decode(ticket)?;
    t.check_fresh(now_ms())?;
    let member = NewMember {
        key: p.public(),
        name: p.name.clone(),
        email: p.email.clone(),
        enc_key: p.enc.public_hex(),
    };
    let v: JoinStep = client
        .post(
            "/v1/join",
            &JoinRequest {
                ticket: ticket.trim().to_string(),
                member: Some(member),
            },
        )
        .await?;
    let body = decode_body(
        v.body
            .as_deref()
            .ok_or_else(|| anyhow!("the daemon sent no op body"))?,
    )?;
    let expected_invite = &t.invite;
    let ok = body.author == p.public()
        && matches!(&body.action, Action::MemberJoin { invite, member: m, .. } if invite == expected_invite && m.key == p.public());
    if !ok {
        bail!("the daemon prepared an op other than this join; not signing it");
    }
    let op = body.sign(&p.key)?;
    let v: Joined = client
        .post(
            &format!("/v1/join/{}", t.team.to_hex()),
            &OpRequest {
                op: hex::encode(op.encode()),
            },
        )
        .await?;
    writeln!(out, "joined team {} ({}) as {}", v.name, v.team, p.name)?;
    Ok(())
}

/// The state of an invite: `revoked`, `used`, `expired` or `open`.
pub fn invite_state(i: &InviteEntry, now: u64) -> &'static str {
    if i.revoked {
        "revoked"
    } else if !i.used_by.is_empty() {
        "used"
    } else if i.expires_ms <= now {
        "expired"
    } else {
        "open"
    }
}

async fn invite_list(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let v: InviteList = ctx.get("invites").await?;
    if ctx.json() {
        return json(out, &v);
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.kind.clone(),
                i.grants.clone(),
                i.creator_name
                    .clone()
                    .unwrap_or_else(|| i.creator.chars().take(12).collect()),
                when(i.expires_ms),
                invite_state(i, now).to_string(),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "KIND", "GRANTS", "CREATOR", "EXPIRES", "STATE"],
        &rows,
    )
}

async fn invite_revoke(ctx: &Ctx, id: &str, out: &mut impl Write) -> Result<()> {
    let v: InviteList = ctx.get("invites").await?;
    let hits: Vec<&InviteEntry> = v.iter().filter(|i| i.id.starts_with(id)).collect();
    let i = match hits.as_slice() {
        [one] => *one,
        [] => {
            return Err(Usage(format!(
                "no invite {id:?} in this team: see `shoal team invite list`"
            ))
            .into());
        }
        _ => {
            return Err(Usage(format!(
                "several invites start with {id:?}: give more of the id"
            ))
            .into());
        }
    };
    if i.revoked {
        writeln!(out, "invite {} was already revoked", i.id)?;
        return Ok(());
    }
    let s = Session::open(ctx).await?;
    s.act(Action::InviteRevoke { id: i.id.clone() }).await?;
    writeln!(out, "revoked invite {}", i.id)?;
    Ok(())
}
