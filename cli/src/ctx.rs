//! One command's context: the daemon's client, the profile's dir, the
//! output format and the team the command is about, resolved at most once
//! per command; the team's routes, and the lookups that turn names into
//! ids.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;
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

    /// The team's route segment (encoded): the one given, else the
    /// daemon's only team. Resolved on first use, then kept.
    pub async fn team(&self) -> Result<&str> {
        if let Some(t) = self.team.get() {
            return Ok(t);
        }
        let team = segment(&pick_team(&self.client, self.team_arg.as_deref()).await?);
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
    pub async fn get(&self, tail: &str) -> Result<Value> {
        let route = self.route(tail).await?;
        self.client.get(&route).await
    }

    /// `GET` a registry, product, version or deployment by name or id.
    pub async fn registry(&self, name: &str) -> Result<Value> {
        self.get(&format!("registries/{}", seg(name))).await
    }

    pub async fn product(&self, name: &str) -> Result<Value> {
        self.get(&format!("products/{}", seg(name))).await
    }

    pub async fn version(&self, product: &str, version: &str) -> Result<Value> {
        self.get(&format!(
            "products/{}/versions/{}",
            seg(product),
            seg(version)
        ))
        .await
    }

    pub async fn deployment(&self, id: &str) -> Result<Value> {
        self.get(&format!("deployments/{}", seg(id))).await
    }

    /// A live node of the team by name, full key or key prefix: (key, name,
    /// encryption key).
    pub async fn node(&self, arg: &str) -> Result<(PublicKey, String, String)> {
        let list = self.get("nodes").await?;
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

    /// One live node of the team, by name or key prefix.
    pub async fn find_node(&self, node: &str) -> Result<Value> {
        let list = self.get("nodes").await?;
        find(list_of(&list), node, "node").cloned()
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

/// The team a command is about: the one given, else the daemon's only team.
pub async fn pick_team(client: &Client, given: Option<&str>) -> Result<String> {
    if let Some(t) = given {
        return Ok(t.to_string());
    }
    let list = client.get("/v1/teams").await?;
    let teams = list.as_array().map(Vec::as_slice).unwrap_or_default();
    match teams {
        [only] => Ok(str_of(only, "id")),
        [] => bail!(
            "this daemon holds no team: create one with `shoal team create NAME` or join one with `shoal team join TICKET`"
        ),
        many => {
            let names: Vec<String> = many.iter().map(|t| str_of(t, "name")).collect();
            bail!(
                "this daemon holds several teams ({}): pass --team NAME",
                names.join(", ")
            )
        }
    }
}

pub fn str_of(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub fn list_of(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Finds one live entry of a team list by name, full key or key prefix.
pub fn find<'a>(list: &'a [Value], arg: &str, what: &str) -> Result<&'a Value> {
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

/// The `key` of a member or node.
pub fn key_of(v: &Value) -> Result<PublicKey> {
    str_of(v, "key")
        .parse()
        .map_err(|e| anyhow!("the daemon sent a malformed key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
