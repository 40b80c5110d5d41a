//! Commands that change a team. The daemon prepares each op against its
//! state, this CLI checks that the body is the one asked for, signs it with
//! the profile key, and hands it back for the daemon to verify and commit.
//! The profile's secret key never leaves this process.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use shoal_protocol::action::NewMember;
use shoal_protocol::model::{InviteKind, Role, Runtime};
use shoal_protocol::ticket::Ticket;
use shoal_protocol::{Action, Hlc, OpBody, PublicKey, SecretKey, TeamId};

use crate::client::Client;
use crate::profile::{self, Profile};
use crate::read::{list_of, pick_team, segment, str_of};

fn now_ms() -> u64 {
    shoal_node::daemon::now_ms()
}

/// Parses a lifetime such as `24h`, `30m` or `7d`.
pub fn parse_lifetime(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s)
        .map_err(|e| anyhow!("{s:?} is not a duration such as 24h, 30m or 7d ({e})"))?;
    if d.is_zero() {
        bail!("a ticket must live longer than 0s");
    }
    Ok(d)
}

fn decode_body(v: &Value) -> Result<OpBody> {
    let hex_body = v
        .get("body")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the daemon sent no op body"))?;
    let bytes = hex::decode(hex_body).context("the daemon sent an op body that is not hex")?;
    postcard::from_bytes(&bytes).context("the daemon sent an op body this shoal cannot read")
}

/// A team and the member acting in it.
pub struct Session {
    pub client: Client,
    pub profile: Profile,
    /// The team's id (hex).
    pub team: String,
}

impl Session {
    pub async fn open(
        client: Client,
        config_dir: &std::path::Path,
        team: Option<&str>,
    ) -> Result<Session> {
        let profile = profile::load(config_dir)?;
        let team = pick_team(&client, team).await?;
        let v = client.get(&format!("/v1/teams/{}", segment(&team))).await?;
        Ok(Session {
            client,
            profile,
            team: str_of(&v, "id"),
        })
    }

    fn route(&self, tail: &str) -> String {
        format!("/v1/teams/{}/{tail}", self.team)
    }

    /// The ids the next op of this member will give what it creates.
    pub async fn ids(&self, count: u32) -> Result<Vec<String>> {
        let v = self
            .client
            .post(
                &self.route("ids"),
                &json!({ "author": self.profile.public().to_hex(), "count": count }),
            )
            .await?;
        serde_json::from_value(v["ids"].clone()).context("the daemon sent malformed ids")
    }

    /// Prepares, checks, signs and submits `action`; returns the op's hash.
    pub async fn act(&self, action: Action) -> Result<String> {
        let me = self.profile.public();
        let v = self
            .client
            .post(
                &self.route("prepare"),
                &json!({ "author": me.to_hex(), "action": action }),
            )
            .await?;
        let body = decode_body(&v)?;
        // Sign only what was asked for.
        if body.author != me || body.action != action {
            bail!("the daemon prepared an op other than the one asked for; not signing it");
        }
        let op = body.sign(&self.profile.key)?;
        let hash = op.hash().to_hex();
        self.client
            .post(
                &self.route("ops"),
                &json!({ "op": hex::encode(op.encode()) }),
            )
            .await?;
        Ok(hash)
    }

    pub async fn state_list(&self, what: &str) -> Result<Vec<Value>> {
        let v = self.client.get(&self.route(what)).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Makes an invite and its ticket.
    async fn invite(&self, kind: InviteKind, lifetime: Duration) -> Result<Ticket> {
        let id = self.ids(1).await?.remove(0);
        let seed = shoal_node::daemon::random32()?;
        let invite_key = SecretKey::from_seed(seed).public();
        let expires_ms =
            now_ms().saturating_add(lifetime.as_millis().try_into().unwrap_or(u64::MAX));
        self.act(Action::InviteCreate {
            id: id.clone(),
            kind: kind.clone(),
            invite_key,
            expires: Hlc::new(expires_ms, 0),
        })
        .await?;
        let b = self.client.get(&self.route("bootstrap")).await?;
        let team: TeamId = str_of(&b, "id")
            .parse()
            .context("the daemon sent a malformed team id")?;
        let psk: [u8; 32] = hex::decode(str_of(&b, "psk"))
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| anyhow!("the daemon sent a malformed network key"))?;
        let bootstrap: Vec<String> =
            serde_json::from_value(b["bootstrap"].clone()).unwrap_or_default();
        if bootstrap.is_empty() {
            bail!("this node has no address to put in the ticket: is the daemon listening?");
        }
        Ok(Ticket {
            team,
            team_name: str_of(&b, "name"),
            psk,
            bootstrap,
            invite: id,
            invite_seed: seed,
            kind,
            expires_ms,
        })
    }
}

fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub async fn team_create(
    client: Client,
    config_dir: &std::path::Path,
    name: &str,
    out: &mut impl Write,
) -> Result<()> {
    let p = profile::load(config_dir)?;
    let owner = NewMember {
        key: p.public(),
        name: p.name.clone(),
        email: p.email.clone(),
        enc_key: p.enc.public_hex(),
    };
    let v = client
        .post(
            "/v1/teams/genesis",
            &json!({ "name": name, "owner": owner }),
        )
        .await?;
    let body = decode_body(&v)?;
    if body.author != p.public()
        || !matches!(&body.action, Action::TeamCreate { name: n, .. } if n == name)
    {
        bail!("the daemon prepared an op other than the one asked for; not signing it");
    }
    let op = body.sign(&p.key)?;
    let v = client
        .post("/v1/teams", &json!({ "op": hex::encode(op.encode()) }))
        .await?;
    writeln!(
        out,
        "created team {} ({})",
        str_of(&v, "name"),
        str_of(&v, "id")
    )?;
    Ok(())
}

pub async fn team_invite(
    s: &Session,
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

pub async fn team_join(
    client: Client,
    config_dir: &std::path::Path,
    ticket: &str,
    out: &mut impl Write,
) -> Result<()> {
    let p = profile::load(config_dir)?;
    let t = Ticket::decode(ticket)?;
    t.check_fresh(now_ms())?;
    let member = NewMember {
        key: p.public(),
        name: p.name.clone(),
        email: p.email.clone(),
        enc_key: p.enc.public_hex(),
    };
    let v = client
        .post(
            "/v1/join",
            &json!({ "ticket": ticket.trim(), "member": member }),
        )
        .await?;
    let body = decode_body(&v)?;
    let expected_invite = &t.invite;
    let ok = body.author == p.public()
        && matches!(&body.action, Action::MemberJoin { invite, member: m, .. } if invite == expected_invite && m.key == p.public());
    if !ok {
        bail!("the daemon prepared an op other than this join; not signing it");
    }
    let op = body.sign(&p.key)?;
    let v = client
        .post(
            &format!("/v1/join/{}", t.team.to_hex()),
            &json!({ "op": hex::encode(op.encode()) }),
        )
        .await?;
    writeln!(
        out,
        "joined team {} ({}) as {}",
        str_of(&v, "name"),
        str_of(&v, "team"),
        p.name
    )?;
    Ok(())
}

pub async fn node_join(client: Client, ticket: &str, out: &mut impl Write) -> Result<()> {
    let t = Ticket::decode(ticket)?;
    t.check_fresh(now_ms())?;
    let v = client
        .post("/v1/join", &json!({ "ticket": ticket.trim() }))
        .await?;
    let name = match &t.kind {
        InviteKind::Node { name, .. } => name.clone(),
        InviteKind::Member { .. } => String::new(),
    };
    writeln!(
        out,
        "node {name} joined team {} ({})",
        str_of(&v, "name"),
        str_of(&v, "team")
    )?;
    Ok(())
}

/// The install command printed by `node add`: from `SHOAL_INSTALL_URL`
/// (where this team serves `install.sh`) when set, else for a copy of
/// `scripts/install.sh` and of this binary, pinned by its checksum.
fn install_command(ticket: &str, runtime: Runtime, name: &str) -> Vec<String> {
    let sum = std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| hex::encode(Sha256::digest(&b)))
        .ok();
    let pin = sum.map(|s| format!(" --sha256 {s}")).unwrap_or_default();
    match std::env::var("SHOAL_INSTALL_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => vec![format!(
            "curl -fsSL {url} | sudo sh -s -- --runtime {runtime} --name {name} --ticket {ticket}"
        )],
        None => vec![
            "# copy scripts/install.sh and this shoal binary to the machine, then:".into(),
            format!(
                "sudo sh install.sh --binary ./shoal{pin} --runtime {runtime} --name {name} --ticket {ticket}"
            ),
        ],
    }
}

pub async fn node_add(
    s: &Session,
    name: &str,
    runtime: Runtime,
    lifetime: Duration,
    out: &mut impl Write,
) -> Result<()> {
    let ticket = s
        .invite(
            InviteKind::Node {
                name: name.to_string(),
                runtime,
            },
            lifetime,
        )
        .await?;
    let text = ticket.encode()?;
    writeln!(
        out,
        "node {name} ({runtime}) may join team {} until {}. On the new machine run:",
        ticket.team_name,
        when(ticket.expires_ms)
    )?;
    for line in install_command(&text, runtime, name) {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "or, where shoal already runs: shoal node join TICKET. The ticket:"
    )?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Finds one live entry of a team list by name, full key or key prefix.
pub(crate) fn find<'a>(list: &'a [Value], arg: &str, what: &str) -> Result<&'a Value> {
    let live: Vec<&Value> = list
        .iter()
        .filter(|v| v.get("removed").is_none_or(Value::is_null))
        .collect();
    if let Some(v) = live.iter().find(|v| str_of(v, "name") == arg) {
        return Ok(v);
    }
    let by_key: Vec<&&Value> = live
        .iter()
        .filter(|v| arg.len() >= 4 && str_of(v, "key").starts_with(arg))
        .collect();
    match by_key.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {what} {arg:?} in this team: see `shoal {what} list`"),
        _ => bail!("several {what}s match {arg:?}: give more of the key"),
    }
}

fn key_of(v: &Value) -> Result<PublicKey> {
    str_of(v, "key")
        .parse()
        .map_err(|e| anyhow!("the daemon sent a malformed key: {e}"))
}

pub async fn member_role(
    s: &Session,
    member: &str,
    role: Role,
    out: &mut impl Write,
) -> Result<()> {
    let list = s.state_list("members").await?;
    let m = find(&list, member, "member")?;
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
        return rotate_after(s, &format!("member {name}"), out).await;
    }
    Ok(())
}

pub async fn member_remove(s: &Session, member: &str, out: &mut impl Write) -> Result<()> {
    let list = s.state_list("members").await?;
    let m = find(&list, member, "member")?;
    let name = str_of(m, "name");
    s.act(Action::MemberRemove { member: key_of(m)? }).await?;
    writeln!(out, "removed member {name}")?;
    rotate_after(s, &format!("member {name}"), out).await
}

pub async fn node_remove(s: &Session, node: &str, out: &mut impl Write) -> Result<()> {
    let list = s.state_list("nodes").await?;
    let n = find(&list, node, "node")?;
    let name = str_of(n, "name");
    s.act(Action::NodeRemove { node: key_of(n)? }).await?;
    writeln!(out, "removed node {name}")?;
    rotate_after(s, &format!("node {name}"), out).await
}

/// What a rotation of the team key did.
pub struct Rotated {
    pub epoch: u64,
    pub recipients: usize,
    pub registries: Vec<String>,
}

/// Rotates the team secrets key (§5): the local node prepares the next
/// epoch's key sealed to every node and admin, with every registry password
/// sealed again to it; this member signs it. `None` when the team has no
/// key yet (nothing was ever sealed to it).
pub async fn rotate_key(s: &Session) -> Result<Option<Rotated>> {
    let keys = s.client.get(&s.route("keys")).await?;
    if keys["epoch"].is_null() {
        return Ok(None);
    }
    let v = s.client.post(&s.route("keys/rotation"), &json!({})).await?;
    let action: Action = serde_json::from_value(v["action"].clone())
        .map_err(|e| anyhow!("the daemon sent a malformed key rotation: {e}"))?;
    let Action::KeyRotate { epoch, keys, .. } = &action else {
        bail!("the daemon prepared an op other than a key rotation; not signing it");
    };
    let rotated = Rotated {
        epoch: u64::from(*epoch),
        recipients: keys.len(),
        registries: list_of(&v["registries"])
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
    };
    s.act(action).await?;
    Ok(Some(rotated))
}

/// Prints what a rotation did.
pub fn print_rotated(r: &Rotated, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "rotated the team secrets key to epoch {}: sealed to {} node(s) and admin(s)",
        r.epoch, r.recipients
    )?;
    if !r.registries.is_empty() {
        writeln!(
            out,
            "sealed again to the new key: the password(s) of registry {}",
            r.registries.join(", ")
        )?;
    }
    Ok(())
}

/// After `gone` left the team (or stopped being an admin): rotates the team
/// key so it cannot open what is sealed from now on.
async fn rotate_after(s: &Session, gone: &str, out: &mut impl Write) -> Result<()> {
    match rotate_key(s).await {
        Ok(None) => Ok(()),
        Ok(Some(r)) => {
            print_rotated(&r, out)?;
            if !r.registries.is_empty() {
                writeln!(
                    out,
                    "{gone} could read these passwords until now: change them at their registries, then `shoal registry update NAME --user USER --password-stdin`"
                )?;
            }
            Ok(())
        }
        Err(e) => Err(anyhow!(
            "{gone} is removed, but the team secrets key was not rotated: {e:#}\nrun `shoal team rotate-key` on a node of the team that holds the key"
        )),
    }
}

/// One live node of the session's team, by name or key prefix.
pub async fn find_node(s: &Session, node: &str) -> Result<Value> {
    let list = s.state_list("nodes").await?;
    find(&list, node, "node").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_lifetime("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_lifetime("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(
            parse_lifetime("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_lifetime("0s").is_err());
        assert!(
            parse_lifetime("soon")
                .unwrap_err()
                .to_string()
                .contains("24h")
        );
    }

    #[test]
    fn find_by_name_or_key_prefix() {
        let list = vec![
            json!({"name": "a", "key": "abcd1234", "removed": null}),
            json!({"name": "b", "key": "abce5678", "removed": null}),
            json!({"name": "c", "key": "ffff0000", "removed": 5}),
        ];
        assert_eq!(str_of(find(&list, "b", "member").unwrap(), "name"), "b");
        assert_eq!(str_of(find(&list, "abcd", "member").unwrap(), "name"), "a");
        assert!(find(&list, "abc", "member").is_err(), "too short a prefix");
        assert!(find(&list, "c", "member").is_err(), "removed");
        assert!(find(&list, "ffff", "member").is_err(), "removed");
    }
}
