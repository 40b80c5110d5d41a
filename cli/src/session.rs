//! Signing changes to a team. The daemon prepares each op against its
//! state, this CLI checks that the body is the one asked for, signs it with
//! the profile key, and hands it back for the daemon to verify and commit.
//! The profile's secret key never leaves this process.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use shoal_api::keys::{KeyRotation, TeamKeys};
use shoal_api::ops::{OpRequest, PrepareRequest, PreparedBody, SubmitReport};
use shoal_api::teams::{Bootstrap, Ids, IdsRequest};
use shoal_protocol::model::InviteKind;
use shoal_protocol::ticket::Ticket;
use shoal_protocol::{Action, Hlc, OpBody, SecretKey, TeamId};

use crate::ctx::Ctx;
use crate::profile::{self, Profile};

pub fn now_ms() -> u64 {
    shoal_node::daemon::now_ms()
}

/// The op body the daemon prepared (hex of its postcard encoding).
pub fn decode_body(hex_body: &str) -> Result<OpBody> {
    let bytes = hex::decode(hex_body).context("the daemon sent an op body that is not hex")?;
    postcard::from_bytes(&bytes).context("the daemon sent an op body this shoal cannot read")
}

/// The command's team and the member acting in it.
///
/// Every op is written under the daemon's write lease of this member's log
/// (see `POST ids` in docs/api.md): the lease is taken with the ids the op
/// needs (or just before preparing) and ends when the op is submitted, so
/// several commands of one member run at once take turns instead of
/// forking the member's log.
#[derive(Debug)]
pub struct Session<'a> {
    pub ctx: &'a Ctx,
    pub profile: Profile,
    /// The write lease held for the next op, if taken.
    lease: Mutex<Option<String>>,
}

impl<'a> Session<'a> {
    /// Loads the profile; the team is the context's.
    pub async fn open(ctx: &'a Ctx) -> Result<Session<'a>> {
        let profile = profile::load(&ctx.dir)?;
        Ok(Session {
            ctx,
            profile,
            lease: Mutex::new(None),
        })
    }

    fn held_lease(&self) -> Option<String> {
        self.lease.lock().ok().and_then(|l| l.clone())
    }

    /// The ids the next op of this member will give what it creates; takes
    /// the write lease for that op unless it is already held.
    pub async fn ids(&self, count: u32) -> Result<Vec<String>> {
        let take = self.held_lease().is_none();
        let v: Ids = self
            .ctx
            .client
            .post(
                &self.ctx.route("ids").await?,
                &IdsRequest {
                    author: self.profile.public().to_hex(),
                    count,
                    lease: take,
                },
            )
            .await?;
        if take
            && let Some(token) = v.lease
            && let Ok(mut l) = self.lease.lock()
        {
            *l = Some(token);
        }
        Ok(v.ids)
    }

    /// Prepares, checks, signs and submits `action`; returns the op's hash.
    pub async fn act(&self, action: Action) -> Result<String> {
        let me = self.profile.public();
        if self.held_lease().is_none() {
            self.ids(0).await?;
        }
        let lease = self.lease.lock().ok().and_then(|mut l| l.take());
        let v: PreparedBody = self
            .ctx
            .client
            .post(
                &self.ctx.route("prepare").await?,
                &PrepareRequest {
                    author: me.to_hex(),
                    action: action.clone(),
                    lease,
                },
            )
            .await?;
        let body = decode_body(&v.body)?;
        // Sign only what was asked for.
        if body.author != me || body.action != action {
            bail!("the daemon prepared an op other than the one asked for; not signing it");
        }
        let op = body.sign(&self.profile.key)?;
        let hash = op.hash().to_hex();
        let _: SubmitReport = self
            .ctx
            .client
            .post(
                &self.ctx.route("ops").await?,
                &OpRequest {
                    op: hex::encode(op.encode()),
                },
            )
            .await?;
        Ok(hash)
    }

    /// Makes an invite and its ticket.
    pub async fn invite(&self, kind: InviteKind, lifetime: Duration) -> Result<Ticket> {
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
        let b: Bootstrap = self.ctx.get("bootstrap").await?;
        let team: TeamId =
            b.id.parse()
                .context("the daemon sent a malformed team id")?;
        let psk: [u8; 32] = hex::decode(&b.psk)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| anyhow!("the daemon sent a malformed network key"))?;
        let bootstrap = b.bootstrap;
        if bootstrap.is_empty() {
            bail!("this node has no address to put in the ticket: is the daemon listening?");
        }
        Ok(Ticket {
            team,
            team_name: b.name,
            psk,
            bootstrap,
            invite: id,
            invite_seed: seed,
            kind,
            expires_ms,
        })
    }
}

/// The body of a `POST` that takes none: `{}`.
#[derive(Debug, serde::Serialize)]
struct EmptyBody {}

/// What a rotation of the team key did.
#[derive(Debug)]
pub struct Rotated {
    pub epoch: u64,
    pub recipients: usize,
    pub registries: Vec<String>,
}

/// Rotates the team secrets key (§5): the local node prepares the next
/// epoch's key sealed to every node and admin, with every registry password
/// sealed again to it; this member signs it. `None` when the team has no
/// key yet (nothing was ever sealed to it).
pub async fn rotate_key(s: &Session<'_>) -> Result<Option<Rotated>> {
    let keys: TeamKeys = s.ctx.get("keys").await?;
    if keys.epoch.is_none() {
        return Ok(None);
    }
    let v: KeyRotation = s
        .ctx
        .client
        .post(&s.ctx.route("keys/rotation").await?, &EmptyBody {})
        .await?;
    let action = v.action;
    let Action::KeyRotate { epoch, keys, .. } = &action else {
        bail!("the daemon prepared an op other than a key rotation; not signing it");
    };
    let rotated = Rotated {
        epoch: u64::from(*epoch),
        recipients: keys.len(),
        registries: v.registries,
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
pub async fn rotate_after(s: &Session<'_>, gone: &str, out: &mut impl Write) -> Result<()> {
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
