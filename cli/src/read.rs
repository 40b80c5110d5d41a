//! Read-only commands answered by the daemon: `team list|show`,
//! `member list`, `node list`.

use std::io::Write;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::Output;
use crate::client::Client;

/// Percent-encodes one path segment.
pub(crate) fn segment(s: &str) -> String {
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

/// The team a command is about: the one given, else the daemon's only team.
pub(crate) async fn pick_team(client: &Client, given: Option<&str>) -> Result<String> {
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

pub(crate) fn str_of(v: &Value, field: &str) -> String {
    match v.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn short(hex: &str) -> String {
    hex.chars().take(8).collect()
}

/// Prints rows under headers, columns padded to their widest cell.
pub(crate) fn table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

pub(crate) fn json(out: &mut impl Write, v: &Value) -> Result<()> {
    writeln!(out, "{}", serde_json::to_string(v)?)?;
    Ok(())
}

pub(crate) fn list_of(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn status(v: &Value) -> String {
    if v.get("removed").is_some_and(|r| !r.is_null()) {
        "removed".into()
    } else {
        "active".into()
    }
}

pub async fn team_list(client: &Client, output: Output, out: &mut impl Write) -> Result<()> {
    let v = client.get("/v1/teams").await?;
    match output {
        Output::Json => json(out, &v),
        Output::Table => {
            let rows: Vec<Vec<String>> = list_of(&v)
                .iter()
                .map(|t| vec![str_of(t, "name"), str_of(t, "id"), str_of(t, "ops")])
                .collect();
            table(out, &["NAME", "ID", "OPS"], &rows)
        }
    }
}

pub async fn team_show(
    client: &Client,
    team: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let v = client.get(&format!("/v1/teams/{}", segment(&team))).await?;
    match output {
        Output::Json => json(out, &v),
        Output::Table => {
            for field in ["name", "id", "members", "nodes", "ops", "state_hash"] {
                writeln!(out, "{:<11}{}", field, str_of(&v, field))?;
            }
            let heads: Vec<String> = list_of(v.get("heads").unwrap_or(&Value::Null))
                .iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect();
            writeln!(out, "{:<11}{}", "heads", heads.join(" "))?;
            Ok(())
        }
    }
}

/// Fetches one of a team's list routes and prints it as JSON or as a table
/// with one row per item.
async fn team_listing(
    client: &Client,
    team: Option<&str>,
    route: &str,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let v = client
        .get(&format!("/v1/teams/{}/{route}", segment(&team)))
        .await?;
    match output {
        Output::Json => json(out, &v),
        Output::Table => {
            let rows: Vec<Vec<String>> = list_of(&v).iter().map(row).collect();
            table(out, headers, &rows)
        }
    }
}

pub async fn member_list(
    client: &Client,
    team: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
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
    let headers = ["NAME", "ROLE", "KEY", "EMAIL", "STATUS"];
    team_listing(client, team, "members", &headers, row, output, out).await
}

pub async fn node_list(
    client: &Client,
    team: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let route = |tail: &str| format!("/v1/teams/{}/{tail}", segment(&team));
    let mut nodes = client.get(&route("nodes")).await?;
    let status = client.get(&route("status")).await?;
    let status_of = |key: &str| list_of(&status).iter().find(|s| str_of(s, "key") == key);
    if let Some(list) = nodes.as_array_mut() {
        for n in list.iter_mut() {
            let st = status_of(&str_of(n, "key"));
            n["status"] = Value::String(
                st.map(|s| str_of(s, "status"))
                    .unwrap_or_else(|| "unreachable".into()),
            );
            // The running version, from the latest heartbeat when there is one.
            if let Some(v) = st
                .map(|s| str_of(s, "agent_version"))
                .filter(|v| !v.is_empty())
            {
                n["agent_version"] = Value::String(v);
            }
        }
    }
    match output {
        Output::Json => json(out, &nodes),
        Output::Table => {
            let rows: Vec<Vec<String>> = list_of(&nodes)
                .iter()
                .map(|n| {
                    vec![
                        str_of(n, "name"),
                        str_of(n, "runtime"),
                        short(&str_of(n, "key")),
                        str_of(n, "agent_version"),
                        str_of(n, "status"),
                    ]
                })
                .collect();
            table(out, &["NAME", "RUNTIME", "KEY", "VERSION", "STATUS"], &rows)
        }
    }
}

pub async fn node_peers(
    client: &Client,
    team: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let route = |tail: &str| format!("/v1/teams/{}/{tail}", segment(&team));
    let peers = client.get(&route("peers")).await?;
    let nodes = client.get(&route("nodes")).await?;
    let name_of = |key: &str| {
        list_of(&nodes)
            .iter()
            .find(|n| str_of(n, "key") == key)
            .map(|n| str_of(n, "name"))
            .unwrap_or_default()
    };
    let list: Vec<Value> = list_of(peers.get("peers").unwrap_or(&Value::Null))
        .iter()
        .filter_map(Value::as_str)
        .map(|k| serde_json::json!({ "key": k, "name": name_of(k) }))
        .collect();
    match output {
        Output::Json => json(out, &Value::Array(list)),
        Output::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| vec![str_of(p, "name"), str_of(p, "key")])
                .collect();
            table(out, &["NAME", "KEY"], &rows)
        }
    }
}
