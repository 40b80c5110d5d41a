//! `shoal registry add|list|remove|tags`, and finding the registry an
//! image reference belongs to.

use std::io::{Read as _, Write};

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use serde_json::Value;
use shoal_node::secrets::{TeamKey, seal_team_key, seal_to_team_key};
use shoal_protocol::Action;
use shoal_protocol::model::{HUB_REGISTRY_ID, ImageRef, RegistryKind, Sealed};

use crate::Usage;
use crate::domain::{self, Ctx, dash, query, seg};
use crate::parse;
use crate::read::{json, list_of, str_of, table};
use crate::write::Session;

#[derive(Subcommand, Debug)]
pub enum RegistryCmd {
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

pub async fn run(ctx: &Ctx, cmd: RegistryCmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        RegistryCmd::Add {
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
        RegistryCmd::Update {
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
            let r = domain::registry(ctx, &name).await?;
            let s = ctx.session().await?;
            let (password, made_key) = match password {
                Some(p) => {
                    let (sealed, made) = seal_password(ctx, &s, &p).await?;
                    (Some(sealed), made)
                }
                None => (None, false),
            };
            s.act(Action::RegistryUpdate {
                id: str_of(&r, "id"),
                url,
                namespace,
                user,
                password,
                clear_credentials: no_credentials,
            })
            .await?;
            writeln!(out, "updated registry {}", str_of(&r, "name"))?;
            if made_key {
                writeln!(
                    out,
                    "made the team secrets key and sealed it to every node and admin"
                )?;
            }
            Ok(())
        }
        RegistryCmd::List => {
            let v = ctx.get("registries").await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = list_of(&v)
                .iter()
                .map(|r| {
                    vec![
                        str_of(r, "name"),
                        str_of(r, "kind"),
                        dash(str_of(r, "url")),
                        dash(str_of(r, "namespace")),
                        dash(str_of(r, "user")),
                        str_of(r, "images"),
                    ]
                })
                .collect();
            table(
                out,
                &["NAME", "KIND", "URL", "NAMESPACE", "USER", "IMAGES"],
                &rows,
            )
        }
        RegistryCmd::Remove { name } => {
            let r = domain::registry(ctx, &name).await?;
            let s = ctx.session().await?;
            s.act(Action::RegistryRemove {
                id: str_of(&r, "id"),
            })
            .await?;
            writeln!(out, "removed registry {}", str_of(&r, "name"))?;
            Ok(())
        }
        RegistryCmd::Tags { name, image } => {
            let v = ctx
                .get(&format!(
                    "registries/{}/tags{}",
                    seg(&name),
                    query(&[("image", Some(&image))])
                ))
                .await?;
            if ctx.json() {
                return json(out, &v);
            }
            let rows: Vec<Vec<String>> = list_of(&v["tags"])
                .iter()
                .filter_map(Value::as_str)
                .map(|t| vec![t.to_string()])
                .collect();
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
    let s = ctx.session().await?;
    let password_given = password.is_some();
    let mut made_key = false;
    let password = match password {
        Some(p) => {
            let (sealed, made) = seal_password(ctx, &s, &p).await?;
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
async fn seal_password(ctx: &Ctx, s: &Session, password: &str) -> Result<(Sealed, bool)> {
    let keys = ctx.get("keys").await?;
    let current = keys["epoch"]
        .as_u64()
        .and_then(|e| u32::try_from(e).ok())
        .zip(keys["public"].as_str());
    if let Some((epoch, public)) = current {
        return Ok((seal_to_team_key(epoch, public, password)?, false));
    }
    // The team's first secret: make the team secrets key.
    let key = TeamKey::generate(1);
    let mut sealed = Vec::new();
    for w in list_of(&keys["waiting"]) {
        sealed.push(seal_team_key(
            &key,
            &str_of(w, "recipient"),
            &str_of(w, "enc_key"),
        )?);
    }
    if !sealed.iter().any(|k| k.recipient.starts_with("node:")) {
        bail!(
            "no node of this team has an encryption key, so none could use the password: upgrade the team's nodes first"
        );
    }
    s.act(Action::KeySeal { keys: sealed }).await?;
    Ok((seal_to_team_key(1, &key.public_hex(), password)?, true))
}

/// `host[:port]` of a URL, lowercased.
fn url_host(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// Whether the image host `host` is served by the registry `r` (JSON of
/// the registries route).
fn serves(r: &Value, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let url = str_of(r, "url");
    let own = (!url.is_empty()).then(|| url_host(&url));
    match RegistryKind::parse(&str_of(r, "kind")) {
        Some(RegistryKind::Hub) => matches!(
            host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ),
        Some(RegistryKind::Github) => own.as_deref().unwrap_or("ghcr.io") == host,
        Some(RegistryKind::Gitlab) => match own {
            Some(o) => host == o || host == format!("registry.{o}"),
            None => host == "registry.gitlab.com",
        },
        Some(RegistryKind::V2 | RegistryKind::Unchecked) => own.as_deref() == Some(host.as_str()),
        None => false,
    }
}

/// The team registry and image name of `reference`: the registry named
/// with `--registry`, else the one whose host the reference names, else
/// Docker Hub.
pub async fn image_ref(ctx: &Ctx, reference: &str, registry: Option<&str>) -> Result<ImageRef> {
    let parts = parse::image_ref(reference).map_err(|e| Usage(e.to_string()))?;
    let list = ctx.get("registries").await?;
    image_ref_in(list_of(&list), &parts, reference, registry)
}

/// [`image_ref`] against a known list of registries.
pub fn image_ref_in(
    registries: &[Value],
    parts: &parse::ImageRefParts,
    reference: &str,
    registry: Option<&str>,
) -> Result<ImageRef> {
    let r = match (registry, &parts.host) {
        (Some(name), host) => {
            let r = registries
                .iter()
                .find(|r| str_of(r, "name") == name || str_of(r, "id") == name)
                .ok_or_else(|| {
                    anyhow!("no registry {name:?} in this team: see `shoal registry list`")
                })?;
            if let Some(h) = host
                && !serves(r, h)
            {
                bail!(
                    "image {reference} names host {h}, but registry {name} is {}: drop the host from the reference or pick the right --registry",
                    dash(str_of(r, "url"))
                );
            }
            r
        }
        (None, Some(h)) => registries.iter().find(|r| serves(r, h)).ok_or_else(|| {
            anyhow!(
                "no registry of this team serves {h}: add it with `shoal registry add NAME --kind v2 --url {h}`, or pass --registry NAME"
            )
        })?,
        (None, None) => registries
            .iter()
            .find(|r| str_of(r, "id") == HUB_REGISTRY_ID)
            .ok_or_else(|| anyhow!("this team has no Docker Hub registry: pass --registry NAME"))?,
    };
    Ok(ImageRef {
        registry: str_of(r, "id"),
        name: parts.name.clone(),
        tag: parts.tag.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registries() -> Vec<Value> {
        vec![
            json!({"id": "hub", "name": "hub", "kind": "hub", "url": null}),
            json!({"id": "r1", "name": "local", "kind": "v2", "url": "127.0.0.1:5000"}),
            json!({"id": "r2", "name": "corp", "kind": "v2", "url": "https://registry.corp.example/"}),
            json!({"id": "r3", "name": "gh", "kind": "github", "url": null}),
        ]
    }

    fn resolve(reference: &str, registry: Option<&str>) -> Result<ImageRef> {
        let parts = parse::image_ref(reference)?;
        image_ref_in(&registries(), &parts, reference, registry)
    }

    #[test]
    fn references_find_their_registry() {
        let r = resolve("nginx:1.27", None).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.name.as_str(), r.tag.as_str()),
            ("hub", "nginx", "1.27")
        );
        let r = resolve("127.0.0.1:5000/shoal-test/busybox", None).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.name.as_str(), r.tag.as_str()),
            ("r1", "shoal-test/busybox", "latest")
        );
        assert_eq!(
            resolve("registry.corp.example/app:2", None)
                .unwrap()
                .registry,
            "r2"
        );
        assert_eq!(resolve("ghcr.io/acme/app:2", None).unwrap().registry, "r3");
        assert_eq!(
            resolve("docker.io/library/redis:7", None).unwrap().registry,
            "hub"
        );
        assert_eq!(resolve("app:1", Some("local")).unwrap().registry, "r1");
        let e = resolve("quay.io/x/y:1", None).unwrap_err().to_string();
        assert!(e.contains("shoal registry add"), "{e}");
        let e = resolve("127.0.0.1:5000/app", Some("corp"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--registry"), "{e}");
        assert!(resolve("app", Some("nope")).is_err());
    }
}
