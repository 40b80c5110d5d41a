//! `shoal node`: the nodes of a team; adding one with a ticket (and the
//! install command), joining, removing, the connected peers, and
//! `node show [NODE]`: what a node is and, for this daemon's own node, how
//! it runs: peers and sync lag, quarantined ops, runtime health and the
//! store. `node run` is in [`super::up`].
//!
//! The JSON form of `node show` (`-o json`) is one object, every key always present:
//! the node as the team records it (`key`, `name`, `runtime`, `enc_key`,
//! `addresses`, `agent_version`, `protocol_version`, `joined`, `invite`,
//! `sponsor`, `removed`) with `addresses` and `agent_version` replaced by
//! the latest heartbeat's when there is one, plus `status`, `this_node`,
//! `seen_ms_ago`, `load` and `running` (from a fresh heartbeat, else
//! `null`), and `peers`, `ops`, `runtime_health`, `store`, which are
//! `null` for a node other than this daemon's own (see `docs/api.md`).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use shoal_api::containers::CommandResult;
use shoal_api::join::{JoinRequest, Joined};
use shoal_api::node::{NodeInfo, RuntimeHealth, StoreInfo};
use shoal_api::nodes::{HostLoad, Node, NodeList, StatusList};
use shoal_api::sync::{OpCounts, PeerSync, TeamSync};
use shoal_api::teams::Peers;
use shoal_protocol::Action;
use shoal_protocol::model::{InviteKind, Runtime};
use shoal_protocol::ticket::Ticket;

use crate::ctx::{Ctx, block_on, find, key_of};
use crate::error::Usage;
use crate::output::{Output, json, short, table, when};
use crate::parse;
use crate::session::{Session, now_ms, rotate_after};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Runs the daemon in the foreground until SIGINT or SIGTERM.
    Run(super::up::RunArgs),
    /// Lists the nodes of a team.
    List,
    /// Makes a ticket for a new node and prints the install command; the
    /// ticket alone is the last line.
    Add {
        name: String,
        /// docker, kubernetes or none.
        #[arg(long, default_value = "docker")]
        runtime: String,
        /// How long the ticket works (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// Enrolls this machine's daemon as a node, with a ticket from `node add`.
    Join { ticket: String },
    /// Shows one node: key, runtime, status, agent version, addresses; for
    /// this daemon's own node also peers and sync lag, ops (quarantined
    /// ones too), runtime health and the store.
    Show {
        /// Node name or key prefix (default: this daemon's own node).
        node: Option<String>,
    },
    /// Lists the team's nodes this daemon is connected to now.
    Peers,
    /// Removes a node from the team (it is disconnected at once).
    Remove { node: String },
    /// Removes the images on a node that no deployment on it can roll back
    /// to (an admin's audited op, carried out by the node), and prints what
    /// was removed. Only repositories the team's deployments on the node
    /// use are looked at; images a container uses stay.
    Prune {
        node: String,
        /// How long to wait for the node to carry it out (e.g. 30s, 5m).
        #[arg(long, default_value = "2m")]
        timeout: String,
    },
}

/// Runs `node run` (the daemon, in the foreground, with its own async
/// runtime) or a command answered by the daemon.
pub fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Run(args) => super::up::daemon(ctx, args, false),
        Cmd::List => block_on(list(ctx, out)),
        Cmd::Add {
            name,
            runtime,
            expires,
        } => {
            let runtime = Runtime::parse(&runtime).ok_or_else(|| {
                Usage(format!(
                    "unknown runtime {runtime:?}: use docker, kubernetes or none"
                ))
            })?;
            let life = parse::lifetime(&expires)?;
            block_on(async {
                let s = Session::open(ctx).await?;
                add(&s, &name, runtime, life, out).await
            })
        }
        Cmd::Join { ticket } => block_on(join(ctx, &ticket, out)),
        Cmd::Show { node } => block_on(show(ctx, node.as_deref(), out)),
        Cmd::Peers => block_on(peers(ctx, out)),
        Cmd::Remove { node } => block_on(remove(ctx, &node, out)),
        Cmd::Prune { node, timeout } => {
            let wait = parse::lifetime(&timeout)?;
            block_on(prune(ctx, &node, wait, out))
        }
    }
}

/// A node as `node list` shows it: as the team records it, with its
/// liveness and the version of its latest heartbeat.
#[derive(Debug, Serialize)]
struct ListedNode {
    #[serde(flatten)]
    node: Node,
    status: String,
    /// Host load from a fresh heartbeat.
    load: Option<HostLoad>,
}

async fn list(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let nodes: NodeList = ctx.get("nodes").await?;
    let status: StatusList = ctx.get("status").await?;
    let nodes: Vec<ListedNode> = nodes
        .into_iter()
        .map(|mut node| {
            let st = status.iter().find(|s| s.key == node.key);
            // The running version, from the latest heartbeat when there is one.
            if let Some(v) = st.map(|s| &s.agent_version).filter(|v| !v.is_empty()) {
                node.agent_version = v.clone();
            }
            ListedNode {
                node,
                status: st
                    .map(|s| s.status.to_string())
                    .unwrap_or_else(|| "unreachable".into()),
                load: st.and_then(|s| s.load),
            }
        })
        .collect();
    match ctx.output {
        Output::Json => json(out, &nodes),
        Output::Table => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node.name.clone(),
                        n.node.runtime.to_string(),
                        short(&n.node.key),
                        n.node.agent_version.clone(),
                        n.status.clone(),
                        n.load.as_ref().map_or_else(|| "-".into(), cpu),
                        n.load.as_ref().map_or_else(
                            || "-".into(),
                            |l| ratio(l.memory_used_bytes, l.memory_total_bytes),
                        ),
                        n.load.as_ref().map_or_else(
                            || "-".into(),
                            |l| ratio(l.disk_used_bytes, l.disk_total_bytes),
                        ),
                    ]
                })
                .collect();
            table(
                out,
                &[
                    "NAME", "RUNTIME", "KEY", "VERSION", "STATUS", "CPU", "MEM", "DISK",
                ],
                &rows,
            )
        }
    }
}

/// The busy share of all CPUs, as a percentage.
fn cpu(l: &HostLoad) -> String {
    format!("{:.0}%", f64::from(l.cpu_permille) / 10.0)
}

/// `used/total` as a percentage with the total in GiB: `41% of 7.6G`.
fn ratio(used: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    let gib = total as f64 / f64::from(1u32 << 30);
    format!("{:.0}% of {gib:.1}G", used as f64 * 100.0 / total as f64)
}

/// A connected node, as `node peers` shows it.
#[derive(Debug, Serialize)]
struct Peer {
    key: String,
    name: String,
}

async fn peers(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let peers: Peers = ctx.get("peers").await?;
    let nodes: NodeList = ctx.get("nodes").await?;
    let list: Vec<Peer> = peers
        .peers
        .into_iter()
        .map(|key| Peer {
            name: nodes
                .iter()
                .find(|n| n.key == key)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            key,
        })
        .collect();
    match ctx.output {
        Output::Json => json(out, &list),
        Output::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| vec![p.name.clone(), p.key.clone()])
                .collect();
            table(out, &["NAME", "KEY"], &rows)
        }
    }
}

async fn join(ctx: &Ctx, ticket: &str, out: &mut impl Write) -> Result<()> {
    let t = Ticket::decode(ticket)?;
    t.check_fresh(now_ms())?;
    let v: Joined = ctx
        .client
        .post(
            "/v1/join",
            &JoinRequest {
                ticket: ticket.trim().to_string(),
                member: None,
            },
        )
        .await?;
    let name = match &t.kind {
        InviteKind::Node { name, .. } => name.clone(),
        InviteKind::Member { .. } => String::new(),
    };
    writeln!(out, "node {name} joined team {} ({})", v.name, v.team)?;
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

async fn add(
    s: &Session<'_>,
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

async fn remove(ctx: &Ctx, node: &str, out: &mut impl Write) -> Result<()> {
    let s = Session::open(ctx).await?;
    let list: NodeList = ctx.get("nodes").await?;
    let n = find(&list, node, "node")?;
    let name = &n.name;
    s.act(Action::NodeRemove { node: key_of(n)? }).await?;
    writeln!(out, "removed node {name}")?;
    rotate_after(&s, &format!("node {name}"), out).await
}

/// How often `node prune` asks the node whether it is done.
const PRUNE_POLL: Duration = Duration::from_millis(500);

async fn prune(ctx: &Ctx, node: &str, wait: Duration, out: &mut impl Write) -> Result<()> {
    let s = Session::open(ctx).await?;
    let list: NodeList = ctx.get("nodes").await?;
    let n = find(&list, node, "node")?;
    let name = n.name.clone();
    let id = s.ids(1).await?.remove(0);
    s.act(Action::NodePrune {
        id: id.clone(),
        node: key_of(n)?,
    })
    .await?;
    writeln!(
        out,
        "asked {name} to remove the images no deployment on it can roll back to"
    )?;
    let route = format!(
        "nodes/{}/commands/{}",
        crate::ctx::segment(&name),
        crate::ctx::segment(&id)
    );
    let deadline = std::time::Instant::now() + wait;
    loop {
        // The node may not have the op yet, or be briefly unreachable.
        if let Ok(r) = ctx.get::<CommandResult>(&route).await
            && let Some(line) = r.result
        {
            if let Some(failed) = line.strip_prefix("failed: prune-images: ") {
                anyhow::bail!("{name} could not prune its images: {failed}");
            }
            match line.strip_prefix("done: prune-images: removed ") {
                Some(refs) => {
                    for r in refs.split_whitespace() {
                        writeln!(out, "removed {r}")?;
                    }
                }
                None => writeln!(out, "nothing to remove")?,
            }
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{name} has not pruned yet: it will when it sees the op (node.prune {id} in `shoal audit list`)"
            );
        }
        tokio::time::sleep(PRUNE_POLL).await;
    }
}

/// `node show`'s answer: the node as the team records it, with its
/// heartbeat's addresses and version, its liveness and, for this daemon's
/// own node, how it runs (`null` for another node).
#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    node: Node,
    status: String,
    this_node: bool,
    seen_ms_ago: Option<u64>,
    /// Host load and running containers from a fresh heartbeat.
    load: Option<HostLoad>,
    running: Option<u32>,
    peers: Option<Vec<PeerSync>>,
    ops: Option<OpCounts>,
    runtime_health: Option<RuntimeHealth>,
    store: Option<StoreInfo>,
}

/// Shows `node` (default: this daemon's own node).
async fn show(ctx: &Ctx, node: Option<&str>, out: &mut impl Write) -> Result<()> {
    let client = &ctx.client;
    let base = ctx.base().await?;
    let route = |tail: &str| format!("{base}/{tail}");
    let here: NodeInfo = client.get("/v1/node").await?;
    let me = here.key;
    let list: NodeList = client.get(&route("nodes")).await?;
    let mut n = find(&list, node.unwrap_or(&me), "node")?.clone();
    let this_node = n.key == me;
    let all: StatusList = client.get(&route("status")).await?;
    let st = all.iter().find(|s| s.key == n.key);
    if let Some(st) = st {
        n.agent_version = st.agent_version.clone();
        n.addresses = st.addresses.clone();
    }
    let mut v = Shown {
        node: n,
        status: st
            .map(|s| s.status.to_string())
            .unwrap_or_else(|| "unreachable".into()),
        this_node,
        seen_ms_ago: st.and_then(|s| s.seen_ms_ago),
        load: st.and_then(|s| s.load),
        running: st.and_then(|s| s.running),
        peers: None,
        ops: None,
        runtime_health: None,
        store: None,
    };
    if this_node {
        let sync: TeamSync = client.get(&route("sync")).await?;
        v.peers = Some(sync.peers);
        v.ops = Some(sync.ops);
        v.runtime_health = Some(client.get("/v1/node/health").await?);
        v.store = Some(client.get("/v1/node/store").await?);
    }
    if ctx.json() {
        return json(out, &v);
    }
    print_table(&v, out)
}

fn words(list: &[String]) -> String {
    if list.is_empty() {
        "-".into()
    } else {
        list.join(" ")
    }
}

fn print_table(v: &Shown, out: &mut impl Write) -> Result<()> {
    const W: usize = 12;
    let line = |out: &mut dyn Write, k: &str, val: String| writeln!(out, "{k:<W$}{val}");
    line(out, "name", v.node.name.clone())?;
    line(out, "key", v.node.key.clone())?;
    line(out, "runtime", v.node.runtime.to_string())?;
    let status = if v.this_node {
        "this node".to_string()
    } else {
        match v.seen_ms_ago {
            Some(ms) => format!("{} (heard {:.1}s ago)", v.status, ms as f64 / 1000.0),
            None => v.status.clone(),
        }
    };
    line(out, "status", status)?;
    line(out, "agent", v.node.agent_version.clone())?;
    line(out, "addresses", words(&v.node.addresses))?;
    if let Some(l) = &v.load {
        line(
            out,
            "load",
            format!(
                "cpu {} of {} cpus, memory {}, disk {}",
                cpu(l),
                l.cpus,
                ratio(l.memory_used_bytes, l.memory_total_bytes),
                ratio(l.disk_used_bytes, l.disk_total_bytes)
            ),
        )?;
    }
    if let Some(n) = v.running {
        line(out, "running", format!("{n} containers of the team"))?;
    }
    let (Some(h), Some(s), Some(o), Some(peers)) = (&v.runtime_health, &v.store, &v.ops, &v.peers)
    else {
        return Ok(());
    };
    line(
        out,
        "health",
        format!("{} ({})", if h.ok { "ok" } else { "FAILING" }, h.detail),
    )?;
    line(
        out,
        "store",
        format!(
            "{} ({} bytes, schema {}, written by shoal {})",
            s.path,
            s.size_bytes,
            s.schema_version,
            s.written_by.as_deref().unwrap_or_default(),
        ),
    )?;
    line(
        out,
        "ops",
        format!(
            "{} applied, {} waiting, {} quarantined ({} lost forks, {} void; {} refused since start)",
            o.applied, o.waiting, o.quarantined, o.forks, o.voided, o.rejected_since_start,
        ),
    )?;
    if peers.is_empty() {
        line(out, "peers", "none connected".into())?;
        return Ok(());
    }
    line(out, "peers", String::new())?;
    for p in peers {
        let name = match p.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => short(&p.key),
        };
        let lag = match (p.they_lack, p.we_lack) {
            (Some(0), Some(0)) => "in sync".to_string(),
            (Some(t), Some(w)) => format!("lacks {t} of ours, we lack {w} of its"),
            _ => "lag not known yet".to_string(),
        };
        let conn = if p.connected {
            "connected"
        } else {
            "disconnected"
        };
        writeln!(
            out,
            "  {name} {} {conn}, {lag}, {}",
            short(&p.key),
            words(&p.addresses)
        )?;
    }
    Ok(())
}
