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
pub fn run(config_dir: &Path, socket: &Path, args: RunArgs, up: bool) -> Result<()> {
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
    let listen: shoal_node::mesh::Multiaddr = args.listen.parse().with_context(|| {
        format!(
            "--listen {:?} is not a multiaddr such as /ip4/0.0.0.0/tcp/4001",
            args.listen
        )
    })?;
    writeln!(out, "node {} (runtime {})", node.key(), runtime)?;
    out.flush()?;
    drop(out);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(node, listen, !args.no_mdns, socket))
}

/// Prints a status line; a closed stdout must not stop the daemon.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs one mesh and one sync engine per team, and the control API over
/// them, until SIGINT or SIGTERM; then stops the API, then the engines (they
/// snapshot on the way out).
async fn serve(
    mut node: Node,
    listen: shoal_node::mesh::Multiaddr,
    mdns: bool,
    socket: &Path,
) -> Result<()> {
    use shoal_node::api::{self, ApiState, ApiTeam};
    use shoal_node::mesh::{Mesh, MeshConfig};
    use shoal_node::sync::{SyncConfig, SyncEngine};
    use tokio::signal::unix::{SignalKind, signal};
    use tokio_util::sync::CancellationToken;

    let cancel = CancellationToken::new();
    let mut running = Vec::new();
    let agent_version = format!("shoal/{}", env!("CARGO_PKG_VERSION"));
    let mut api_state = ApiState {
        node: node.key(),
        agent_version: agent_version.clone(),
        teams: Default::default(),
    };
    let teams: Vec<_> = node.teams().keys().copied().collect();
    for team in teams {
        let record = node
            .record(team)?
            .with_context(|| format!("team {team} has no record in the store"))?;
        let Some(replica) = node.take_replica(team) else {
            continue;
        };
        let name = replica
            .state()
            .info()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        let ops = replica.ops().len();
        let (mesh, events) = Mesh::spawn(
            MeshConfig {
                identity_seed: node.key_seed(),
                psk: record.psk,
                mdns,
                agent_version: agent_version.clone(),
            },
            cancel.child_token(),
        )?;
        let addrs = mesh
            .handle()
            .listen(listen.clone())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let sync = SyncEngine::spawn(
            replica,
            node.store(),
            node.key(),
            mesh.handle(),
            events,
            SyncConfig::default(),
            cancel.child_token(),
        )?;
        say(format_args!("team {name} ({team}): {ops} ops"));
        api_state.teams.insert(
            team,
            ApiTeam {
                name,
                sync: sync.handle(),
            },
        );
        for a in addrs {
            say(format_args!(
                "listening on {a}/p2p/{}",
                mesh.local_peer_id()
            ));
        }
        running.push((mesh, sync));
    }
    let api_cancel = cancel.child_token();
    let server = match api::serve(socket, api_state, api_cancel.clone()).await {
        Ok(s) => s,
        Err(e) => {
            cancel.cancel();
            for (mesh, sync) in running {
                let _ = sync.shutdown().await;
                let _ = mesh.join().await;
            }
            return Err(e).context("cannot start the control API");
        }
    };
    say(format_args!("control socket {}", server.path().display()));
    say(format_args!("ready; data in {}", node.data_dir().display()));

    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    api_cancel.cancel();
    let api_done = server.join().await;
    cancel.cancel();
    for (mesh, sync) in running {
        sync.shutdown()
            .await
            .context("the sync engine did not stop cleanly")?;
        mesh.join().await.context("the mesh did not stop cleanly")?;
    }
    node.snapshot_all()
        .context("cannot save the final snapshot")?;
    api_done.context("the control API did not stop cleanly")?;
    say(format_args!("stopped"));
    Ok(())
}
