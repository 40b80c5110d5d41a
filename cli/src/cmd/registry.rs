//! `shoal registry add|update|list|remove|tags`: where images come from,
//! with passwords sealed here to the team secrets key.

use std::io::{Read as _, Write};

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use shoal_api::keys::TeamKeys;
use shoal_api::registries::{RegistryList, Tags};
use shoal_node::secrets::{TeamKey, seal_team_key, seal_to_team_key};
use shoal_protocol::Action;
use shoal_protocol::model::{RegistryKind, Sealed};

use crate::ctx::{Ctx, query, segment};
use crate::error::Usage;
use crate::output::{dash, json, table};
use crate::session::Session;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Adds a registry images come from. A password is read from stdin and
    /// sealed to every node of the team; it never appears in argv or output.
    Add {
        name: String,
        /// hub, v2, github, gitlab or unchecked.
        #[arg(long)]
        kind: String,
        /// Base URL (v2: required; gitlab: a self-hosted instance).
        #[arg(long)]
        url: Option<String>,
        /// Org, user, group or project path (github and gitlab: required).
        #[arg(long)]
        namespace: Option<String>,
        /// The user to log in as (a token name for GitLab).
        #[arg(long)]
        user: Option<String>,
        /// Read the password or token from stdin (one line).
        #[arg(long, requires = "user")]
        password_stdin: bool,
    },
    /// Changes a registry's address or credentials (for example after its
    /// password changed). A new password is read from stdin and sealed like
    /// `add`'s.
    Update {
        name: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        /// The user to log in as from now on (with --password-stdin).
        #[arg(long, requires = "password_stdin")]
        user: Option<String>,
        /// Read the new password or token from stdin (one line).
        #[arg(long, requires = "user")]
        password_stdin: bool,
        /// Drop the user and password: pull without logging in.
        #[arg(long, conflicts_with_all = ["user", "password_stdin"])]
        no_credentials: bool,
    },
    /// Lists the team's registries.
    List,
    /// Removes a registry no image uses.
    Remove { name: String },
    /// Lists an image's tags, asked of the registry by this node's daemon.
    Tags { name: String, image: String },
}

fn parse_kind(s: &str) -> Result<RegistryKind> {
    RegistryKind::parse(s).ok_or_else(|| {
        Usage(format!(
            "unknown registry kind {s:?}: use hub, v2, github, gitlab or unchecked"
        ))
        .into()
    })
}

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Add {
            name,
            kind,
            url,
            namespace,
            user,
            password_stdin,
        } => {
            let kind = parse_kind(&kind)?;
            let password = password_stdin.then(|| read_password("add")).transpose()?;
            add(ctx, &name, kind, url, namespace, user, password, out).await
        }
        Cmd::Update {
            name,
            url,
            namespace,
            user,
            password_stdin,
            no_credentials,
        } => {
            let password = password_stdin
                .then(|| read_password("update"))
                .transpose()?;
            let r = ctx.registry(&name).await?;
            let s = Session::open(ctx).await?;
            let (password, made_key) = match password {
                Some(p) => {
                    let (sealed, made) = seal_password(&s, &p).await?;
                    (Some(sealed), made)
                }
                None => (None, false),
            };
            s.act(Action::RegistryUpdate {
                id: r.id.clone(),
                url,
                namespace,
                user,
                password,
                clear_credentials: no_credentials,
            })
            .await?;
            writeln!(out, "updated registry {}", r.name)?;
            if made_key {
                writeln!(
                    out,
                    "made the team secrets key and sealed it to every node and admin"
                )?;
            }
            Ok(())
        }
        Cmd::List => {
            let v: RegistryList = ctx.get("registries").await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.kind.as_str().to_string(),
                        dash(r.url.clone().unwrap_or_default()),
                        dash(r.namespace.clone().unwrap_or_default()),
                        dash(r.user.clone().unwrap_or_default()),
                        r.images.to_string(),
                    ]
                })
                .collect();
            table(
                out,
                &["NAME", "KIND", "URL", "NAMESPACE", "USER", "IMAGES"],
                &rows,
            )
        }
        Cmd::Remove { name } => {
            let r = ctx.registry(&name).await?;
            let s = Session::open(ctx).await?;
            s.act(Action::RegistryRemove { id: r.id.clone() }).await?;
            writeln!(out, "removed registry {}", r.name)?;
            Ok(())
        }
        Cmd::Tags { name, image } => {
            let v: Tags = ctx
                .get(&format!(
                    "registries/{}/tags{}",
                    segment(&name),
                    query(&[("image", Some(&image))])
                ))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = v.tags.iter().map(|t| vec![t.clone()]).collect();
            table(out, &["TAG"], &rows)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn add(
    ctx: &Ctx,
    name: &str,
    kind: RegistryKind,
    url: Option<String>,
    namespace: Option<String>,
    user: Option<String>,
    password: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    let s = Session::open(ctx).await?;
    let password_given = password.is_some();
    let mut made_key = false;
    let password = match password {
        Some(p) => {
            let (sealed, made) = seal_password(&s, &p).await?;
            made_key = made;
            Some(sealed)
        }
        None => None,
    };
    let id = s.ids(1).await?.remove(0);
    s.act(Action::RegistryAdd {
        id,
        name: name.to_string(),
        kind,
        url,
        namespace,
        user,
        password,
    })
    .await?;
    writeln!(out, "added registry {name} ({})", kind.as_str())?;
    if made_key {
        writeln!(
            out,
            "made the team secrets key and sealed it to every node and admin"
        )?;
    }
    if password_given {
        writeln!(
            out,
            "its password is sealed with the team secrets key: every node of the team, and every node that joins later, can use it"
        )?;
    }
    Ok(())
}

/// A password piped to `registry <command> --password-stdin`.
fn read_password(command: &str) -> Result<String> {
    let mut buf = String::new();
    std::io::stdin()
        .read_to_string(&mut buf)
        .map_err(|e| anyhow!("cannot read the password from stdin: {e}"))?;
    let p = buf.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        return Err(Usage(format!(
            "--password-stdin: stdin held no password; pipe it in, e.g. `printf %s \"$PASS\" | shoal registry {command} ...`"
        ))
        .into());
    }
    Ok(p)
}

/// `password` sealed to the team secrets key; before the team has one,
/// this makes it (epoch 1, sealed to every node and admin in a `key.seal`)
/// and says so with `true`.
async fn seal_password(s: &Session<'_>, password: &str) -> Result<(Sealed, bool)> {
    let keys: TeamKeys = s.ctx.get("keys").await?;
    let current = keys.epoch.zip(keys.public.as_deref());
    if let Some((epoch, public)) = current {
        return Ok((seal_to_team_key(epoch, public, password)?, false));
    }
    // The team's first secret: make the team secrets key.
    let key = TeamKey::generate(1);
    let mut sealed = Vec::new();
    for w in &keys.waiting {
        sealed.push(seal_team_key(&key, &w.recipient, &w.enc_key)?);
    }
    if !sealed.iter().any(|k| k.recipient.starts_with("node:")) {
        bail!(
            "no node of this team has an encryption key, so none could use the password: upgrade the team's nodes first"
        );
    }
    s.act(Action::KeySeal { keys: sealed }).await?;
    Ok((seal_to_team_key(1, &key.public_hex(), password)?, true))
}
