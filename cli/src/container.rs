//! `shoal container`: a node's containers, from anywhere in the team.
//!
//! Listing, logs and inspect are questions to the node (answered over the
//! mesh when it is another node); start, stop, restart and remove are signed
//! `container.command` ops the node carries out, so they are audited.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures::StreamExt as _;
use serde_json::Value;
use shoal_protocol::Action;
use shoal_protocol::model::ContainerAction;

use crate::Output;
use crate::client::Client;
use crate::read::{pick_team, segment, str_of};
use crate::write::{Session, find_node};

/// How long a container command waits for the node to carry it out.
const COMMAND_WAIT: Duration = Duration::from_secs(60);
/// Between two polls of a command's effect.
const POLL: Duration = Duration::from_millis(500);

fn route(team: &str, node: &str, tail: &str) -> String {
    format!(
        "/v1/teams/{}/nodes/{}/containers{tail}",
        segment(team),
        segment(node)
    )
}

async fn list_of(
    client: &Client,
    team: &str,
    node: &str,
    prefix: Option<&str>,
) -> Result<Vec<Value>> {
    let q = prefix
        .map(|p| format!("?prefix={}", segment(p)))
        .unwrap_or_default();
    let v = client.get(&route(team, node, &q)).await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

pub async fn list(
    client: &Client,
    team: Option<&str>,
    node: &str,
    prefix: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let list = list_of(client, &team, node, prefix).await?;
    if output == Output::Json {
        writeln!(out, "{}", serde_json::to_string(&list)?)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let ports: Vec<String> = c["ports"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|p| format!("{}->{}", str_of(p, "external"), str_of(p, "internal")))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                str_of(c, "name"),
                str_of(c, "prefix"),
                str_of(&c["state"], "state"),
                str_of(c, "version"),
                str_of(&c["state"], "image"),
                ports.join(","),
            ]
        })
        .collect();
    crate::read::table(
        out,
        &["NAME", "PREFIX", "STATE", "VERSION", "IMAGE", "PORTS"],
        &rows,
    )
}

fn state_of(list: &[Value], name: &str) -> Option<String> {
    list.iter()
        .find(|c| str_of(c, "name") == name)
        .map(|c| str_of(&c["state"], "state"))
}

pub async fn command(
    s: &Session,
    node: &str,
    container: &str,
    action: ContainerAction,
    out: &mut impl Write,
) -> Result<()> {
    let n = find_node(s, node).await?;
    let key = str_of(&n, "key")
        .parse()
        .map_err(|e| anyhow!("the daemon sent a malformed node key: {e}"))?;
    let node_name = str_of(&n, "name");
    let before = list_of(&s.client, &s.team, &node_name, None).await?;
    if state_of(&before, container).is_none() {
        bail!(
            "node {node_name} runs no container {container:?} of this team: see `shoal container list {node_name}`"
        );
    }
    let id = s.ids(1).await?.remove(0);
    s.act(Action::ContainerCommand {
        id,
        node: key,
        container: container.to_string(),
        action,
    })
    .await?;
    writeln!(out, "asked {node_name} to {} {container}", action.as_str())?;
    let done = |state: Option<String>| match action {
        ContainerAction::Remove => state.is_none(),
        ContainerAction::Stop => state.is_some_and(|s| s != "running"),
        ContainerAction::Start => state.is_some_and(|s| s == "running"),
        ContainerAction::Restart => state.is_some_and(|s| s == "running"),
    };
    let deadline = Instant::now() + COMMAND_WAIT;
    // A restart ends running as it began: give the node a moment first.
    if action == ContainerAction::Restart {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    loop {
        let now = list_of(&s.client, &s.team, &node_name, None).await?;
        let state = state_of(&now, container);
        if done(state.clone()) {
            writeln!(
                out,
                "{container}: {}",
                state.unwrap_or_else(|| "removed".into())
            )?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{node_name} has not carried out the command yet (state {}): it will when it sees the op; check `shoal container list {node_name}`",
                state.unwrap_or_else(|| "gone".into())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn logs(
    client: &Client,
    team: Option<&str>,
    node: &str,
    container: &str,
    tail: Option<u64>,
    follow: bool,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let fetch = |tail: u64| {
        let r = route(
            &team,
            node,
            &format!("/{}/logs?tail={tail}", segment(container)),
        );
        async move {
            let v = client.get(&r).await?;
            let lines: Vec<String> = serde_json::from_value(v["lines"].clone()).unwrap_or_default();
            anyhow::Ok(lines)
        }
    };
    if follow {
        // Streamed from the node: each line once, as it is written, until
        // the container stops.
        let route = route(&team, node, &format!("/{}/follow", segment(container)));
        let mut lines = crate::follow::container(
            client.clone(),
            route,
            tail.unwrap_or(100),
            None,
            crate::follow::Link::default(),
        );
        while let Some(chunk) = lines.next().await {
            for l in chunk? {
                writeln!(out, "{l}")?;
            }
            out.flush()?;
        }
        return Ok(());
    }
    for l in fetch(tail.unwrap_or(100)).await? {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn inspect(
    client: &Client,
    team: Option<&str>,
    node: &str,
    container: &str,
    out: &mut impl Write,
) -> Result<()> {
    let team = pick_team(client, team).await?;
    let v = client
        .get(&route(
            &team,
            node,
            &format!("/{}/inspect", segment(container)),
        ))
        .await?;
    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}
