//! One command's context: the daemon's client, the profile's dir, the
//! output format and the team the command is about, resolved at most once
//! per command; the team's routes, and the lookups that turn names into
//! ids.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Result, anyhow, bail};
use serde::de::DeserializeOwned;
use shoal_api::deployments::DeploymentDetail;
use shoal_api::members::Member;
use shoal_api::nodes::{Node, NodeList};
use shoal_api::products::{ProductDetail, VersionDetail};
use shoal_api::registries::Registry;
use shoal_protocol::PublicKey;

use crate::client::Client;
use crate::output::Output;

/// One command's context.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    /// The profile's dir.
    pub dir: PathBuf,
    pub output: Output,
    /// The team asked for with `--team`, if any.
    team_arg: Option<String>,
    /// The team's route segment, once resolved.
    team: OnceLock<String>,
}

impl Ctx {
    pub fn new(client: Client, dir: PathBuf, team: Option<String>, output: Output) -> Ctx {
        Ctx {
            client,
            dir,
            output,
            team_arg: team,
            team: OnceLock::new(),
        }
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// The team's route segment (encoded): the one given, else
    /// [`shoal_api::ONLY_TEAM`], which the daemon resolves to its only team
    /// (or refuses, saying why), so no request is spent finding the team.
    pub async fn team(&self) -> Result<&str> {
        if let Some(t) = self.team.get() {
            return Ok(t);
        }
        let team = match self.team_arg.as_deref() {
            Some(t) => segment(t),
            None => shoal_api::ONLY_TEAM.to_string(),
        };
        Ok(self.team.get_or_init(|| team))
    }

    /// The team's route, `/v1/teams/<team>`.
    pub async fn base(&self) -> Result<String> {
        Ok(format!("/v1/teams/{}", self.team().await?))
    }

    /// `/v1/teams/<team>/<tail>` (`tail` already encoded).
    pub async fn route(&self, tail: &str) -> Result<String> {
        Ok(format!("{}/{tail}", self.base().await?))
    }

    /// `GET /v1/teams/<team>/<tail>` (`tail` already encoded).
    pub async fn get<T: DeserializeOwned>(&self, tail: &str) -> Result<T> {
        let route = self.route(tail).await?;
        self.client.get(&route).await
    }

    /// A registry, product, version or deployment by name or id.
    pub async fn registry(&self, name: &str) -> Result<Registry> {
        self.get(&format!("registries/{}", segment(name))).await
    }

    pub async fn product(&self, name: &str) -> Result<ProductDetail> {
        self.get(&format!("products/{}", segment(name))).await
    }

    pub async fn version(&self, product: &str, version: &str) -> Result<VersionDetail> {
        self.get(&format!(
            "products/{}/versions/{}",
            segment(product),
            segment(version)
        ))
        .await
    }

    pub async fn deployment(&self, id: &str) -> Result<DeploymentDetail> {
        self.get(&format!("deployments/{}", segment(id))).await
    }

    /// A live node of the team by name, full key or key prefix: (key, name,
    /// encryption key). A name that several nodes carry is the first's.
    pub async fn node(&self, arg: &str) -> Result<(PublicKey, String, String)> {
        let list: NodeList = self.get("nodes").await?;
        let live: Vec<&Node> = list.iter().filter(|n| n.removed.is_none()).collect();
        let hit = match live.iter().find(|n| n.name == arg) {
            Some(one) => *one,
            None => {
                let by_key: Vec<&&Node> = live
                    .iter()
                    .filter(|n| arg.len() >= 4 && n.key.starts_with(arg))
                    .collect();
                match by_key.as_slice() {
                    [one] => **one,
                    [] => bail!("no node {arg:?} in this team: see `shoal node list`"),
                    _ => bail!("several nodes match {arg:?}: give more of the key"),
                }
            }
        };
        Ok((key_of(hit)?, hit.name.clone(), hit.enc_key.clone()))
    }

    /// One live node of the team, by name or key prefix.
    pub async fn find_node(&self, node: &str) -> Result<Node> {
        let list: NodeList = self.get("nodes").await?;
        find(&list, node, "node").cloned()
    }
}

/// Runs one command's exchanges with the daemon to the end.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    rt.block_on(f)
}

/// Percent-encodes one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

/// A member or node of the team's lists, as [`find`] looks it up.
pub trait Listed {
    fn name(&self) -> &str;
    fn key(&self) -> &str;
    fn removed(&self) -> bool;
}

impl Listed for Member {
    fn name(&self) -> &str {
        &self.name
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn removed(&self) -> bool {
        self.removed.is_some()
    }
}

impl Listed for Node {
    fn name(&self) -> &str {
        &self.name
    }
    fn key(&self) -> &str {
        &self.key
    }
    fn removed(&self) -> bool {
        self.removed.is_some()
    }
}

/// Finds one live entry of a team list by name, full key or key prefix.
pub fn find<'a, T: Listed>(list: &'a [T], arg: &str, what: &str) -> Result<&'a T> {
    let live: Vec<&T> = list.iter().filter(|v| !v.removed()).collect();
    if let Some(v) = live.iter().find(|v| v.name() == arg) {
        return Ok(v);
    }
    let by_key: Vec<&&T> = live
        .iter()
        .filter(|v| arg.len() >= 4 && v.key().starts_with(arg))
        .collect();
    match by_key.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {what} {arg:?} in this team: see `shoal {what} list`"),
        _ => bail!("several {what}s match {arg:?}: give more of the key"),
    }
}

/// The public key of a member or node.
pub fn key_of(v: &impl Listed) -> Result<PublicKey> {
    v.key()
        .parse()
        .map_err(|e| anyhow!("the daemon sent a malformed key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, key: &str, removed: bool) -> Member {
        serde_json::from_value(serde_json::json!({
            "key": key, "name": name, "email": null, "role": "user",
            "enc_key": "", "joined": {"ms": 1, "c": 0}, "invite": null,
            "removed": if removed { serde_json::json!({"ms": 5, "c": 0}) } else { serde_json::Value::Null },
        }))
        .unwrap()
    }

    #[test]
    fn find_by_name_or_key_prefix() {
        let list = vec![
            member("a", "abcd1234", false),
            member("b", "abce5678", false),
            member("c", "ffff0000", true),
        ];
        assert_eq!(find(&list, "b", "member").unwrap().name, "b");
        assert_eq!(find(&list, "abcd", "member").unwrap().name, "a");
        assert!(find(&list, "abc", "member").is_err(), "too short a prefix");
        assert!(find(&list, "c", "member").is_err(), "removed");
        assert!(find(&list, "ffff", "member").is_err(), "removed");
    }

    /// Routes are made without asking the daemon anything: the socket here
    /// does not exist, so any request would fail.
    #[tokio::test]
    async fn routes_need_no_request_to_find_the_team() {
        let nowhere = std::path::Path::new("/nonexistent/shoal.sock");
        let only = Ctx::new(Client::new(nowhere), PathBuf::new(), None, Output::Table);
        assert_eq!(
            only.route("deployments").await.unwrap(),
            "/v1/teams/-/deployments"
        );
        let named = Ctx::new(
            Client::new(nowhere),
            PathBuf::new(),
            Some("my crew".into()),
            Output::Table,
        );
        assert_eq!(named.base().await.unwrap(), "/v1/teams/my%20crew");
    }
}
