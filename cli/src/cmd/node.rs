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
//! `seen_ms_ago`, and `peers`, `ops`, `runtime_health`, `store`, which are
//! `null` for a node other than this daemon's own (see `docs/api.md`).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use shoal_protocol::Action;
use shoal_protocol::model::{InviteKind, Runtime};
use shoal_protocol::ticket::Ticket;

use crate::ctx::{Ctx, block_on, find, key_of, list_of, str_of};
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
    }
}

async fn list(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let mut nodes = ctx.get("nodes").await?;
    let status = ctx.get("status").await?;
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
    match ctx.output {
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

async fn peers(ctx: &Ctx, out: &mut impl Write) -> Result<()> {
    let peers = ctx.get("peers").await?;
    let nodes = ctx.get("nodes").await?;
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
    match ctx.output {
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
async fn join(ctx: &Ctx, ticket: &str, out: &mut impl Write) -> Result<()> {
    let t = Ticket::decode(ticket)?;
    t.check_fresh(now_ms())?;
    let v = ctx
        .client
        .post("/v1/join", &json!({ "ticket": ticket.trim() }))
        .await?;
    let name = match &t.kind {
        InviteKind::Node { name, .. } => name.clone(),
        InviteKind::Member { .. } => String::new(),
    };
    writeln!(
        out,
        "node {name} joined team {} ({})",
        str_of(&v, "name"),
        str_of(&v, "team")
    )?;
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
    let list = ctx.get("nodes").await?;
    let n = find(list_of(&list), node, "node")?;
    let name = str_of(n, "name");
    s.act(Action::NodeRemove { node: key_of(n)? }).await?;
    writeln!(out, "removed node {name}")?;
    rotate_after(&s, &format!("node {name}"), out).await
}

/// Shows `node` (default: this daemon's own node).
async fn show(ctx: &Ctx, node: Option<&str>, out: &mut impl Write) -> Result<()> {
    let client = &ctx.client;
    let base = ctx.base().await?;
    let route = |tail: &str| format!("{base}/{tail}");
    let here = client.get("/v1/node").await?;
    let me = str_of(&here, "key");
    let list = client.get(&route("nodes")).await?;
    let n = match node {
        Some(arg) => find(list_of(&list), arg, "node")?.clone(),
        None => find(list_of(&list), &me, "node")?.clone(),
    };
    let key = str_of(&n, "key");
    let this_node = key == me;
    let all = client.get(&route("status")).await?;
    let st = list_of(&all)
        .iter()
        .find(|s| str_of(s, "key") == key)
        .cloned()
        .unwrap_or(Value::Null);
    let status = match str_of(&st, "status") {
        s if s.is_empty() => "unreachable".to_string(),
        s => s,
    };
    let mut v = n;
    v["status"] = json!(status);
    v["this_node"] = json!(this_node);
    v["seen_ms_ago"] = st.get("seen_ms_ago").cloned().unwrap_or(Value::Null);
    if let Some(a) = st.get("agent_version").filter(|a| !a.is_null()) {
        v["agent_version"] = a.clone();
    }
    if let Some(a) = st.get("addresses").filter(|a| a.is_array()) {
        v["addresses"] = a.clone();
    }
    for k in ["peers", "ops", "runtime_health", "store"] {
        v[k] = Value::Null;
    }
    if this_node {
        let sync = client.get(&route("sync")).await?;
        v["peers"] = sync.get("peers").cloned().unwrap_or(Value::Null);
        v["ops"] = sync.get("ops").cloned().unwrap_or(Value::Null);
        v["runtime_health"] = client.get("/v1/node/health").await?;
        v["store"] = client.get("/v1/node/store").await?;
    }
    if ctx.json() {
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    print_table(&v, out)
}

fn words(v: &Value) -> String {
    let list: Vec<String> = list_of(v)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(" ")
    }
}

fn count(v: &Value) -> String {
    v.as_u64().map_or_else(|| "?".into(), |n| n.to_string())
}

fn print_table(v: &Value, out: &mut impl Write) -> Result<()> {
    const W: usize = 12;
    let line = |out: &mut dyn Write, k: &str, val: String| writeln!(out, "{k:<W$}{val}");
    line(out, "name", str_of(v, "name"))?;
    line(out, "key", str_of(v, "key"))?;
    line(out, "runtime", str_of(v, "runtime"))?;
    let status = if v["this_node"] == true {
        "this node".to_string()
    } else {
        match v["seen_ms_ago"].as_u64() {
            Some(ms) => format!(
                "{} (heard {:.1}s ago)",
                str_of(v, "status"),
                ms as f64 / 1000.0
            ),
            None => str_of(v, "status"),
        }
    };
    line(out, "status", status)?;
    line(out, "agent", str_of(v, "agent_version"))?;
    line(out, "addresses", words(&v["addresses"]))?;
    if v["this_node"] != true {
        return Ok(());
    }
    let h = &v["runtime_health"];
    line(
        out,
        "health",
        format!(
            "{} ({})",
            if h["ok"] == true { "ok" } else { "FAILING" },
            str_of(h, "detail")
        ),
    )?;
    let s = &v["store"];
    line(
        out,
        "store",
        format!(
            "{} ({} bytes, schema {}, written by shoal {})",
            str_of(s, "path"),
            count(&s["size_bytes"]),
            count(&s["schema_version"]),
            str_of(s, "written_by"),
        ),
    )?;
    let o = &v["ops"];
    line(
        out,
        "ops",
        format!(
            "{} applied, {} waiting, {} quarantined ({} refused since start)",
            count(&o["applied"]),
            count(&o["waiting"]),
            count(&o["quarantined"]),
            count(&o["rejected_since_start"]),
        ),
    )?;
    let peers = list_of(&v["peers"]);
    if peers.is_empty() {
        line(out, "peers", "none connected".into())?;
        return Ok(());
    }
    line(out, "peers", String::new())?;
    for p in peers {
        let name = match str_of(p, "name") {
            n if n.is_empty() => short(&str_of(p, "key")),
            n => n,
        };
        let lag = match (p["they_lack"].as_u64(), p["we_lack"].as_u64()) {
            (Some(0), Some(0)) => "in sync".to_string(),
            (Some(t), Some(w)) => format!("lacks {t} of ours, we lack {w} of its"),
            _ => "lag not known yet".to_string(),
        };
        let conn = if p["connected"] == true {
            "connected"
        } else {
            "disconnected"
        };
        writeln!(
            out,
            "  {name} {} {conn}, {lag}, {}",
            short(&str_of(p, "key")),
            words(&p["addresses"])
        )?;
    }
    Ok(())
}
