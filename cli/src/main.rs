//! `shoal`: the one binary. The CLI drives a daemon over its control socket;
//! `shoal up` and `shoal node run` start the daemon itself.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use shoal_protocol::model::{ContainerAction, Role, Runtime};

mod audit;
mod client;
mod compose;
mod config;
mod container;
mod daemon;
mod deploy;
mod domain;
mod follow;
mod node;
mod parse;
mod product;
mod profile;
mod read;
mod registry;
mod write;

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "Container deployments across a team's machines, with no central server"
)]
struct Cli {
    /// Where the profile (your key pair) lives.
    #[arg(long, global = true, env = "SHOAL_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// The daemon's control socket (default: $XDG_RUNTIME_DIR/shoal/shoal.sock,
    /// /run/shoal/shoal.sock for root).
    #[arg(long, global = true, env = "SHOAL_SOCKET")]
    socket: Option<PathBuf>,
    /// The team a command is about; needed only when the daemon holds several.
    #[arg(long, global = true, env = "SHOAL_TEAM")]
    team: Option<String>,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The one-command start: creates a profile and a team if there are
    /// none, then runs the daemon in the foreground.
    Up(RunArgs),
    /// Runs the daemon alone.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Your profile: name, email and key pair.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// The teams this node's daemon holds.
    #[command(subcommand)]
    Team(TeamCmd),
    /// The members of a team.
    #[command(subcommand)]
    Member(MemberCmd),
    /// A node's containers, from anywhere in the team.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Where images come from.
    #[command(subcommand)]
    Registry(registry::RegistryCmd),
    /// Applications: simple (one rolling version) or complex.
    #[command(subcommand)]
    Product(product::ProductCmd),
    /// A product's versions.
    #[command(subcommand)]
    Version(product::VersionCmd),
    /// A version's images and their container configs.
    #[command(subcommand)]
    Image(product::ImageCmd),
    /// Deployments: a version on a node under a prefix.
    #[command(subcommand)]
    Deploy(deploy::DeployCmd),
    /// The audit log: every signed change, and its verification.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Prints shell completions.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Runs the daemon in the foreground until SIGINT or SIGTERM.
    Run(RunArgs),
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

#[derive(Subcommand, Debug)]
enum TeamCmd {
    /// Lists the teams the daemon holds.
    List,
    /// Shows a team: ids, counts, state heads and hash.
    Show {
        /// Team name or id (default: --team, else the daemon's only team).
        team: Option<String>,
    },
    /// Creates a team owned by your profile, with this node as its first node.
    Create { name: String },
    /// Makes a single-use member ticket; the ticket is the last line.
    Invite {
        /// The new member's role: admin or user.
        #[arg(long, default_value = "user")]
        role: String,
        /// How long the ticket works (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// Joins a team with a ticket from `team invite`: your profile becomes a
    /// member and this machine's daemon one of the team's nodes.
    Join { ticket: String },
    /// Replaces the team secrets key with a new one sealed to every node and
    /// admin, and seals every registry password again to it (admins; done
    /// by `member remove` and `node remove` on their own).
    RotateKey,
}

#[derive(Subcommand, Debug)]
enum ContainerCmd {
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

#[derive(Subcommand, Debug)]
enum MemberCmd {
    /// Lists the members of a team.
    List,
    /// Changes a member's role (admin or user).
    Role { member: String, role: String },
    /// Removes a member from the team.
    Remove { member: String },
}

#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// Creates your profile and key pair (mode 0600 in the config dir).
    Init {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// Shows your profile's name, email and public key.
    Show,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = profile::config_dir(cli.config_dir.as_deref())?;
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(shoal_node::api::default_socket_path);
    let mut out = std::io::stdout().lock();
    let cli_ctx = (dir.clone(), cli.team.clone(), cli.output);
    match cli.command {
        Command::Profile(ProfileCmd::Init { name, email }) => {
            let p = profile::init(&dir, &name, email.as_deref())?;
            writeln!(out, "created profile {} with key {}", p.name, p.public())?;
        }
        Command::Profile(ProfileCmd::Show) => {
            let p = profile::load(&dir)?;
            match cli.output {
                Output::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"name": p.name, "email": p.email, "key": p.public().to_hex()})
                )?,
                Output::Table => {
                    writeln!(out, "name   {}", p.name)?;
                    writeln!(out, "email  {}", p.email.as_deref().unwrap_or("-"))?;
                    writeln!(out, "key    {}", p.public())?;
                }
            }
        }
        Command::Up(args) => daemon::run(&dir, &socket, args, true)?,
        Command::Node(NodeCmd::Run(args)) => daemon::run(&dir, &socket, args, false)?,
        Command::Team(TeamCmd::List) => ask(
            |c| async move { read::team_list(&c, cli.output, &mut out).await },
            &socket,
        )?,
        Command::Team(TeamCmd::Show { team }) => {
            let team = team.or(cli.team);
            ask(
                |c| async move { read::team_show(&c, team.as_deref(), cli.output, &mut out).await },
                &socket,
            )?
        }
        Command::Member(MemberCmd::List) => {
            let team = cli.team;
            ask(
                |c| async move { read::member_list(&c, team.as_deref(), cli.output, &mut out).await },
                &socket,
            )?
        }
        Command::Node(NodeCmd::List) => {
            let team = cli.team;
            ask(
                |c| async move { read::node_list(&c, team.as_deref(), cli.output, &mut out).await },
                &socket,
            )?
        }
        Command::Team(TeamCmd::Create { name }) => ask(
            |c| async move { write::team_create(c, &dir, &name, &mut out).await },
            &socket,
        )?,
        Command::Team(TeamCmd::Invite { role, expires }) => {
            let role = parse_role(&role)?;
            let life = write::parse_lifetime(&expires)?;
            let team = cli.team;
            ask(
                |c| async move {
                    let s = write::Session::open(c, &dir, team.as_deref()).await?;
                    write::team_invite(&s, role, life, &mut out).await
                },
                &socket,
            )?
        }
        Command::Team(TeamCmd::RotateKey) => {
            let team = cli.team;
            ask(
                |c| async move {
                    let s = write::Session::open(c, &dir, team.as_deref()).await?;
                    match write::rotate_key(&s).await? {
                        Some(r) => write::print_rotated(&r, &mut out),
                        None => anyhow::bail!(
                            "this team has no secrets key yet: it is made when an admin first stores a registry password"
                        ),
                    }
                },
                &socket,
            )?
        }
        Command::Team(TeamCmd::Join { ticket }) => ask(
            |c| async move { write::team_join(c, &dir, &ticket, &mut out).await },
            &socket,
        )?,
        Command::Member(MemberCmd::Role { member, role }) => {
            let role = parse_role(&role)?;
            let team = cli.team;
            ask(
                |c| async move {
                    let s = write::Session::open(c, &dir, team.as_deref()).await?;
                    write::member_role(&s, &member, role, &mut out).await
                },
                &socket,
            )?
        }
        Command::Member(MemberCmd::Remove { member }) => {
            let team = cli.team;
            ask(
                |c| async move {
                    let s = write::Session::open(c, &dir, team.as_deref()).await?;
                    write::member_remove(&s, &member, &mut out).await
                },
                &socket,
            )?
        }
        Command::Node(NodeCmd::Add {
            name,
            runtime,
            expires,
        }) => {
            let runtime = Runtime::parse(&runtime).ok_or_else(|| {
                Usage(format!(
                    "unknown runtime {runtime:?}: use docker, kubernetes or none"
                ))
            })?;
            let life = write::parse_lifetime(&expires)?;
            let team = cli.team;
            ask(
                |c| async move {
                    let s = write::Session::open(c, &dir, team.as_deref()).await?;
                    write::node_add(&s, &name, runtime, life, &mut out).await
                },
                &socket,
            )?
        }
        Command::Node(NodeCmd::Join { ticket }) => ask(
            |c| async move { write::node_join(c, &ticket, &mut out).await },
            &socket,
        )?,
        Command::Node(NodeCmd::Show { node }) => {
            let team = cli.team;
            let json_out = cli.output == Output::Json;
            ask(
                |c| async move {
                    node::show(&c, team.as_deref(), node.as_deref(), json_out, &mut out).await
                },
                &socket,
            )?
        }
        Command::Node(NodeCmd::Peers) => {
            let team = cli.team;
            ask(
                |c| async move { read::node_peers(&c, team.as_deref(), cli.output, &mut out).await },
                &socket,
            )?
        }
        Command::Node(NodeCmd::Remove { node }) => {
            let team = cli.team;
            ask(
                |c| async move {
                    let s = write::Session::open(c, &dir, team.as_deref()).await?;
                    write::node_remove(&s, &node, &mut out).await
                },
                &socket,
            )?
        }
        Command::Container(cmd) => {
            let team = cli.team;
            let output = cli.output;
            ask(
                |c| async move {
                    let team = team.as_deref();
                    let client = c.clone();
                    let dir = &dir;
                    let act = |node: String, container: String, action| async move {
                        let s = write::Session::open(client, dir, team).await?;
                        container::command(
                            &s,
                            &node,
                            &container,
                            action,
                            &mut std::io::stdout().lock(),
                        )
                        .await
                    };
                    match cmd {
                        ContainerCmd::List { node, prefix } => {
                            container::list(&c, team, &node, prefix.as_deref(), output, &mut out)
                                .await
                        }
                        ContainerCmd::Start { node, container } => {
                            act(node, container, ContainerAction::Start).await
                        }
                        ContainerCmd::Stop { node, container } => {
                            act(node, container, ContainerAction::Stop).await
                        }
                        ContainerCmd::Restart { node, container } => {
                            act(node, container, ContainerAction::Restart).await
                        }
                        ContainerCmd::Remove { node, container } => {
                            act(node, container, ContainerAction::Remove).await
                        }
                        ContainerCmd::Logs {
                            node,
                            container,
                            follow,
                            tail,
                        } => {
                            container::logs(&c, team, &node, &container, tail, follow, &mut out)
                                .await
                        }
                        ContainerCmd::Inspect { node, container } => {
                            container::inspect(&c, team, &node, &container, &mut out).await
                        }
                    }
                },
                &socket,
            )?
        }
        Command::Registry(cmd) => domain_cmd(&cli_ctx, &socket, |ctx| async move {
            registry::run(&ctx, cmd, &mut out).await
        })?,
        Command::Product(cmd) => domain_cmd(&cli_ctx, &socket, |ctx| async move {
            product::product(&ctx, cmd, &mut out).await
        })?,
        Command::Version(cmd) => domain_cmd(&cli_ctx, &socket, |ctx| async move {
            product::version(&ctx, cmd, &mut out).await
        })?,
        Command::Image(cmd) => domain_cmd(&cli_ctx, &socket, |ctx| async move {
            product::image(&ctx, cmd, &mut out).await
        })?,
        Command::Deploy(cmd) => domain_cmd(&cli_ctx, &socket, |ctx| async move {
            deploy::run(&ctx, cmd, &mut out).await
        })?,
        Command::Audit(cmd) => domain_cmd(&cli_ctx, &socket, |ctx| async move {
            audit::run(&ctx, cmd, &mut out).await
        })?,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut out);
        }
    }
    Ok(())
}

/// A usage error (exit code 2) found after parsing.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn parse_role(s: &str) -> anyhow::Result<Role> {
    match Role::parse(s) {
        Some(Role::Owner) => {
            Err(Usage("a team has exactly one owner: the role is admin or user".into()).into())
        }
        Some(r) => Ok(r),
        None => Err(Usage(format!("unknown role {s:?}: use admin or user")).into()),
    }
}

/// Runs a domain command with its context (config dir, team, output).
fn domain_cmd<F, Fut>(
    (dir, team, output): &(PathBuf, Option<String>, Output),
    socket: &std::path::Path,
    f: F,
) -> anyhow::Result<()>
where
    F: FnOnce(domain::Ctx) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let ctx = |client| domain::Ctx {
        client,
        dir: dir.clone(),
        team: team.clone(),
        output: *output,
    };
    ask(|c| f(ctx(c)), socket)
}

/// Runs one request-answer exchange with the daemon on `socket`.
fn ask<F, Fut>(f: F, socket: &std::path::Path) -> anyhow::Result<()>
where
    F: FnOnce(client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    rt.block_on(f(client::Client::new(socket)))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; usage errors exit 2.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
