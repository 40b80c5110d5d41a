//! `shoal up` and `shoal node run`: start the daemon in the foreground and
//! stop cleanly on SIGINT or SIGTERM.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use shoal_node::daemon::{self as node, Node};
use shoal_protocol::action::NewMember;
use shoal_protocol::model::Runtime;

use crate::{RunArgs, profile};

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

fn runtime(arg: Option<&str>) -> Result<Runtime> {
    match arg {
        None => Ok(node::detect_runtime()),
        Some(r) => Runtime::parse(r)
            .with_context(|| format!("unknown runtime {r:?}: use docker, kubernetes or none")),
    }
}

/// Runs the daemon; with `up`, first creates what is missing.
pub fn run(config_dir: &Path, args: RunArgs, up: bool) -> Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(node::default_data_dir);
    let runtime = runtime(args.runtime.as_deref())?;
    let mut node = Node::open(&data_dir)
        .with_context(|| format!("cannot open the node in {}", data_dir.display()))?;
    let mut out = std::io::stdout().lock();
    if up {
        let profile = match profile::load(config_dir) {
            Ok(p) => p,
            Err(_) if !config_dir.join("profile.json").exists() => {
                let name = std::env::var("USER").unwrap_or_else(|_| "me".into());
                let p = profile::init(config_dir, &name, None)?;
                writeln!(out, "created profile {} ({})", p.name, p.public().short())?;
                p
            }
            Err(e) => return Err(e),
        };
        if node.teams().is_empty() {
            let owner = NewMember {
                key: profile.public(),
                name: profile.name.clone(),
                email: profile.email.clone(),
                enc_key: String::new(),
            };
            let node_name = args.name.clone().unwrap_or_else(host_name);
            let team_name = format!("{}-team", profile.name);
            let body =
                node.new_team_body(&team_name, owner, &node_name, runtime, node::now_ms())?;
            // The profile key signs; the node only ever sees the signed op.
            let op = body.sign(&profile.key)?;
            let team = node.install_genesis(op)?;
            writeln!(out, "created team {team_name} ({team})")?;
        }
    }
    if node.teams().is_empty() {
        bail!("this node is in no team yet: run `shoal up` to create one");
    }
    writeln!(out, "node {} (runtime {})", node.key(), runtime)?;
    for (team, r) in node.teams() {
        let name = r.state().info().map(|i| i.name.clone()).unwrap_or_default();
        writeln!(out, "team {name} ({team}): {} ops", r.ops().len())?;
    }
    writeln!(out, "ready; data in {}", node.data_dir().display())?;
    out.flush()?;
    drop(out);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    node.snapshot_all()
        .context("cannot save the final snapshot")?;
    println!("stopped");
    Ok(())
}
