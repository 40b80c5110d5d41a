//! `shoal`: the one binary. The CLI drives a daemon over its control socket;
//! `shoal up` and `shoal node run` start the daemon itself.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

mod daemon;
mod profile;

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
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Runs the daemon in the foreground until SIGINT or SIGTERM.
    Run(RunArgs),
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
    let mut out = std::io::stdout().lock();
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
        Command::Up(args) => daemon::run(&dir, args, true)?,
        Command::Node(NodeCmd::Run(args)) => daemon::run(&dir, args, false)?,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut out);
        }
    }
    Ok(())
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
            ExitCode::from(1)
        }
    }
}
