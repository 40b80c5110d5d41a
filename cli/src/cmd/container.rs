//! `shoal container`: a node's containers, from anywhere in the team.
//!
//! Listing, logs and inspect are questions to the node (answered over the
//! mesh when it is another node); start, stop, restart and remove are signed
//! `container.command` ops the node carries out, so they are audited.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use futures::StreamExt as _;
use shoal_api::containers::{ContainerInfo, ContainerList, Inspect, LogLines, Protocol};
use shoal_protocol::Action;
use shoal_protocol::model::ContainerAction;

use crate::ctx::{Ctx, segment};
use crate::output::{Output, json, table};
use crate::session::Session;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Lists a node's containers of this team, with their state.
    List {
        node: String,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Starts a container (a signed, audited command the node carries out).
    Start { node: String, container: String },
    /// Stops a container.
    Stop { node: String, container: String },
    /// Restarts a container.
    Restart { node: String, container: String },
    /// Removes a container.
    Remove { node: String, container: String },
    /// Prints a container's logs.
    Logs {
        node: String,
        container: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// How many lines from the end (default 100).
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Shows a container's engine document (secret values redacted).
    Inspect { node: String, container: String },
}

/// How long a container command waits for the node to carry it out.
const COMMAND_WAIT: Duration = Duration::from_secs(60);
/// Between two polls of a command's effect.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::List { node, prefix } => list(ctx, &node, prefix.as_deref(), out).await,
        Cmd::Start { node, container } => {
            command(ctx, &node, &container, ContainerAction::Start, out).await
        }
        Cmd::Stop { node, container } => {
            command(ctx, &node, &container, ContainerAction::Stop, out).await
        }
        Cmd::Restart { node, container } => {
            command(ctx, &node, &container, ContainerAction::Restart, out).await
        }
        Cmd::Remove { node, container } => {
            command(ctx, &node, &container, ContainerAction::Remove, out).await
        }
        Cmd::Logs {
            node,
            container,
            follow,
            tail,
        } => logs(ctx, &node, &container, tail, follow, out).await,
        Cmd::Inspect { node, container } => inspect(ctx, &node, &container, out).await,
    }
}

/// The route of a node's containers (`tail` already encoded).
async fn route(ctx: &Ctx, node: &str, tail: &str) -> Result<String> {
    ctx.route(&format!("nodes/{}/containers{tail}", segment(node)))
        .await
}

async fn containers(ctx: &Ctx, node: &str, prefix: Option<&str>) -> Result<ContainerList> {
    let q = prefix
        .map(|p| format!("?prefix={}", segment(p)))
        .unwrap_or_default();
    ctx.client.get(&route(ctx, node, &q).await?).await
}

/// The node's containers as its runtime says now (not from a heartbeat):
/// what a command's effect is judged on.
async fn containers_now(ctx: &Ctx, node: &str) -> Result<ContainerList> {
    ctx.client
        .get(&route(ctx, node, "?fresh=true").await?)
        .await
}

async fn list(ctx: &Ctx, node: &str, prefix: Option<&str>, out: &mut impl Write) -> Result<()> {
    let list = containers(ctx, node, prefix).await?;
    if ctx.output == Output::Json {
        return json(out, &list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            // As docker ps shows them: HOST_IP:HOST_PORT->INTERNAL/PROTO.
            let ports: Vec<String> = c
                .ports
                .iter()
                .map(|p| {
                    let proto = match p.protocol {
                        Protocol::Tcp => "tcp",
                        Protocol::Udp => "udp",
                    };
                    format!("{}:{}->{}/{proto}", p.host_ip, p.host_port, p.internal)
                })
                .collect();
            vec![
                c.name.clone(),
                c.prefix.clone(),
                c.state.state.clone(),
                c.version.clone(),
                c.state.image.clone(),
                ports.join(","),
            ]
        })
        .collect();
    table(
        out,
        &["NAME", "PREFIX", "STATE", "VERSION", "IMAGE", "PORTS"],
        &rows,
    )
}

fn state_of(list: &[ContainerInfo], name: &str) -> Option<String> {
    list.iter()
        .find(|c| c.name == name)
        .map(|c| c.state.state.clone())
}

async fn command(
    ctx: &Ctx,
    node: &str,
    container: &str,
    action: ContainerAction,
    out: &mut impl Write,
) -> Result<()> {
    let s = Session::open(ctx).await?;
    let n = ctx.find_node(node).await?;
    let key = n
        .key
        .parse()
        .map_err(|e| anyhow!("the daemon sent a malformed node key: {e}"))?;
    let node_name = n.name;
    let before = containers_now(ctx, &node_name).await?;
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
        ContainerAction::Remove | ContainerAction::RemoveVolumes | ContainerAction::PruneImages => {
            state.is_none()
        }
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
        let now = containers_now(ctx, &node_name).await?;
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

async fn logs(
    ctx: &Ctx,
    node: &str,
    container: &str,
    tail: Option<u64>,
    follow: bool,
    out: &mut impl Write,
) -> Result<()> {
    if follow {
        // Streamed from the node: each line once, as it is written, until
        // the container stops.
        let route = route(ctx, node, &format!("/{}/follow", segment(container))).await?;
        let mut lines = crate::follow::container(
            ctx.client.clone(),
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
    let tail = tail.unwrap_or(100);
    let r = route(
        ctx,
        node,
        &format!("/{}/logs?tail={tail}", segment(container)),
    )
    .await?;
    let v: LogLines = ctx.client.get(&r).await?;
    for l in v.lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

async fn inspect(ctx: &Ctx, node: &str, container: &str, out: &mut impl Write) -> Result<()> {
    let r = route(ctx, node, &format!("/{}/inspect", segment(container))).await?;
    let v: Inspect = ctx.client.get(&r).await?;
    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}
