//! `shoal up` and `shoal node run`: start the daemon in the foreground and
//! stop cleanly on SIGINT or SIGTERM.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use shoal_node::daemon::{self as node, Node};
use shoal_node::live::LIVE_REFRESH;
use shoal_node::runtime::kubernetes::KubeConnect;
use shoal_node::service::{self, ServiceConfig};
use shoal_node::sync::{HEARTBEAT_INTERVAL, SyncConfig};
use shoal_protocol::action::NewMember;
use shoal_protocol::model::Runtime;

use crate::ctx::Ctx;
use crate::profile;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Where the node keeps its store.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// docker, kubernetes or none (default: docker if a Docker engine answers).
    #[arg(long)]
    runtime: Option<String>,
    /// The node's name in a new team (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Where the mesh listens.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/0")]
    listen: String,
    /// Do not look for peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Keep deployments that target this node waiting instead of running
    /// them (maintenance); they run once the node starts without this flag.
    #[arg(long, env = "SHOAL_PAUSE_DEPLOYMENTS")]
    pause_deployments: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, env = "SHOAL_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Kubernetes runtime: the kubeconfig to connect with; several files
    /// separated by ':' are merged as kubectl merges them (default: the
    /// in-cluster service account, else ~/.kube/config).
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<std::ffi::OsString>,
    /// Kubernetes runtime: the kubeconfig context to use (default: its
    /// current context).
    #[arg(long, value_name = "NAME")]
    kube_context: Option<String>,
    /// Log lines on stderr: human or json. The level comes from SHOAL_LOG
    /// (e.g. `debug`, `shoal_node=debug,libp2p=info`; default `info`).
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Milliseconds between two heartbeats (tuning and tests).
    #[arg(long, hide = true, value_name = "MS", value_parser = clap::value_parser!(u64).range(MIN_PERIOD_MS..))]
    heartbeat_ms: Option<u64>,
    /// Longest milliseconds between two looks at the live state; changes
    /// of containers come sooner, through the runtime's events (tuning and
    /// tests).
    #[arg(long, hide = true, value_name = "MS", value_parser = clap::value_parser!(u64).range(MIN_PERIOD_MS..))]
    live_refresh_ms: Option<u64>,
}

/// The shortest period `--heartbeat-ms` and `--live-refresh-ms` take: a
/// node must not flood its peers or spin on its runtime.
const MIN_PERIOD_MS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// `shoal up`: creates a profile and a team if there are none, then runs
/// the daemon.
pub fn run(ctx: &Ctx, args: RunArgs) -> Result<()> {
    daemon(ctx, args, true)
}

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

/// Sends the daemon's `tracing` events to stderr, as human lines or JSON.
fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_mdns=warn,libp2p_swarm=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (never in the binary) is not an error worth stopping for.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Runs the daemon; with `up`, first creates what is missing.
pub fn daemon(ctx: &Ctx, args: RunArgs, up: bool) -> Result<()> {
    let config_dir = ctx.dir.as_path();
    init_logs(args.log_format);
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
                enc_key: profile.enc.public_hex(),
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
    let listen: shoal_node::mesh::Multiaddr = args.listen.parse().with_context(|| {
        format!(
            "--listen {:?} is not a multiaddr such as /ip4/0.0.0.0/tcp/4001",
            args.listen
        )
    })?;
    writeln!(out, "node {} (runtime {})", node.key(), runtime)?;
    if node.teams().is_empty() {
        writeln!(
            out,
            "this node is in no team yet: `shoal team create NAME`, `shoal team join TICKET` or `shoal node join TICKET`"
        )?;
    }
    out.flush()?;
    drop(out);

    let config = ServiceConfig {
        listen,
        mdns: !args.no_mdns,
        socket: ctx.client.socket().to_path_buf(),
        name: args.name.clone().unwrap_or_else(host_name),
        runtime,
        sync: SyncConfig::default(),
        metrics: args.metrics,
        pause_deployments: args.pause_deployments,
        kube: KubeConnect {
            kubeconfig: args
                .kubeconfig
                .as_deref()
                .map(KubeConnect::split_list)
                .unwrap_or_default(),
            context: args.kube_context.clone(),
        },
        heartbeat_interval: args
            .heartbeat_ms
            .map_or(HEARTBEAT_INTERVAL, Duration::from_millis),
        live_refresh: args
            .live_refresh_ms
            .map_or(LIVE_REFRESH, Duration::from_millis),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        // The handlers are installed now, before the daemon says it listens:
        // a SIGTERM that arrives during start-up stops it cleanly instead of
        // killing it.
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        let shutdown = async move {
            match (term, int) {
                (Some(mut term), Some(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                (None, _) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        service::run(node, config, Arc::new(say), shutdown).await
    })
    .context("the daemon stopped with an error")
}

/// Prints a status line; a closed stdout must not stop the daemon.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
