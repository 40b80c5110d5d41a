//! What the domain commands (`registry`, `product`, `version`, `image`,
//! `deploy`, `audit`) share: the team they act on, reads of its routes,
//! and the lookups that turn names into ids.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;
use shoal_protocol::PublicKey;

use crate::Output;
use crate::client::Client;
use crate::read::{pick_team, segment, str_of};
use crate::write::Session;

/// One domain command's context: the daemon, the profile's dir, the team
/// asked for and the output format.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub client: Client,
    pub dir: PathBuf,
    pub team: Option<String>,
    pub output: Output,
}

impl Ctx {
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// The team's route prefix, `/v1/teams/<team>`.
    pub async fn base(&self) -> Result<String> {
        let team = pick_team(&self.client, self.team.as_deref()).await?;
        Ok(format!("/v1/teams/{}", segment(&team)))
    }

    /// `GET /v1/teams/<team>/<tail>` (`tail` already encoded).
    pub async fn get(&self, tail: &str) -> Result<Value> {
        let base = self.base().await?;
        self.client.get(&format!("{base}/{tail}")).await
    }

    /// A session for writing, as the profile's member.
    pub async fn session(&self) -> Result<Session> {
        Session::open(self.client.clone(), &self.dir, self.team.as_deref()).await
    }
}

/// A path segment for a name or id.
pub fn seg(s: &str) -> String {
    segment(s)
}

/// A query string from pairs whose values are set.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `GET` a registry, product, version or deployment by name or id.
pub async fn registry(ctx: &Ctx, name: &str) -> Result<Value> {
    ctx.get(&format!("registries/{}", seg(name))).await
}

pub async fn product(ctx: &Ctx, name: &str) -> Result<Value> {
    ctx.get(&format!("products/{}", seg(name))).await
}

pub async fn version(ctx: &Ctx, product: &str, version: &str) -> Result<Value> {
    ctx.get(&format!(
        "products/{}/versions/{}",
        seg(product),
        seg(version)
    ))
    .await
}

pub async fn deployment(ctx: &Ctx, id: &str) -> Result<Value> {
    ctx.get(&format!("deployments/{}", seg(id))).await
}

/// A live node of the team by name, full key or key prefix: (key, name,
/// encryption key).
pub async fn node(ctx: &Ctx, arg: &str) -> Result<(PublicKey, String, String)> {
    let list = ctx.get("nodes").await?;
    let live: Vec<&Value> = list
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|n| n.get("removed").is_none_or(Value::is_null))
                .collect()
        })
        .unwrap_or_default();
    let by_name: Vec<&&Value> = live.iter().filter(|n| str_of(n, "name") == arg).collect();
    let hit = match by_name.as_slice() {
        [one, ..] => **one,
        [] => {
            let by_key: Vec<&&Value> = live
                .iter()
                .filter(|n| arg.len() >= 4 && str_of(n, "key").starts_with(arg))
                .collect();
            match by_key.as_slice() {
                [one] => **one,
                [] => {
                    return Err(anyhow!(
                        "no node {arg:?} in this team: see `shoal node list`"
                    ));
                }
                _ => return Err(anyhow!("several nodes match {arg:?}: give more of the key")),
            }
        }
    };
    let key = str_of(hit, "key")
        .parse()
        .context("the daemon sent a malformed node key")?;
    Ok((key, str_of(hit, "name"), str_of(hit, "enc_key")))
}

/// `-` for empty cells.
pub fn dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// An RFC 3339 time (seconds) for milliseconds since the epoch.
pub fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}
