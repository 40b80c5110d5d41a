//! `shoal`: the one binary. The CLI drives a daemon over its control socket;
//! `shoal up` and `shoal node run` start the daemon itself.
//!
//! This file holds the command line's root (global flags), the dispatch to
//! the command groups in `cmd/` and the exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

mod client;
mod cmd;
mod compose;
mod config;
mod ctx;
mod edits;
mod error;
mod follow;
mod image_ref;
mod output;
mod parse;
mod profile;
mod session;
mod templates;
mod ui;

use cmd::{
    audit, completion, container, deploy, image, member, node, product, registry, team, up, version,
};
use ctx::{Ctx, block_on};
use output::Output;

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

#[derive(Subcommand, Debug)]
enum Command {
    /// The one-command start: creates a profile and a team if there are
    /// none, then runs the daemon in the foreground.
    Up(up::RunArgs),
    /// Runs the daemon alone.
    #[command(subcommand)]
    Node(node::Cmd),
    /// Your profile: name, email and key pair.
    #[command(subcommand)]
    Profile(cmd::profile::Cmd),
    /// The teams this node's daemon holds.
    #[command(subcommand)]
    Team(team::Cmd),
    /// The members of a team.
    #[command(subcommand)]
    Member(member::Cmd),
    /// A node's containers, from anywhere in the team.
    #[command(subcommand)]
    Container(container::Cmd),
    /// Where images come from.
    #[command(subcommand)]
    Registry(registry::Cmd),
    /// Applications: simple (one rolling version) or complex.
    #[command(subcommand)]
    Product(product::Cmd),
    /// A product's versions.
    #[command(subcommand)]
    Version(version::Cmd),
    /// A version's images and their container configs.
    #[command(subcommand)]
    Image(image::Cmd),
    /// Deployments: a version on a node under a prefix.
    #[command(subcommand)]
    Deploy(deploy::Cmd),
    /// Writes a product (versions, images, configs; secrets by name) as one YAML file.
    Export(cmd::export::ExportArgs),
    /// Makes the team's product match a file of `shoal export`, with the fewest ops.
    Apply(cmd::apply::ApplyArgs),
    /// The web dashboard: served on loopback by this process, which signs
    /// with your key; prints a one-time login URL.
    Ui(cmd::ui::UiArgs),
    /// The audit log: every signed change, and its verification.
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Prints shell completions.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = profile::config_dir(cli.config_dir.as_deref())?;
    let socket = cli
        .socket
        .unwrap_or_else(shoal_node::api::default_socket_path);
    let ctx = Ctx::new(client::Client::new(&socket), dir, cli.team, cli.output);
    let mut out = std::io::stdout().lock();
    let out = &mut out;
    match cli.command {
        Command::Up(args) => up::run(&ctx, args),
        Command::Node(c) => node::run(&ctx, c, out),
        Command::Profile(c) => cmd::profile::run(&ctx, c, out),
        Command::Team(c) => block_on(team::run(&ctx, c, out)),
        Command::Member(c) => block_on(member::run(&ctx, c, out)),
        Command::Container(c) => block_on(container::run(&ctx, c, out)),
        Command::Registry(c) => block_on(registry::run(&ctx, c, out)),
        Command::Product(c) => block_on(product::run(&ctx, c, out)),
        Command::Version(c) => block_on(version::run(&ctx, c, out)),
        Command::Image(c) => block_on(image::run(&ctx, c, out)),
        Command::Deploy(c) => block_on(deploy::run(&ctx, c, out)),
        Command::Audit(c) => block_on(audit::run(&ctx, c, out)),
        Command::Ui(a) => block_on(cmd::ui::run(&ctx, a, out)),
        Command::Export(a) => block_on(cmd::export::run(&ctx, a, out)),
        Command::Apply(a) => block_on(cmd::apply::run(&ctx, a, out)),
        Command::Completion { shell } => {
            completion::run(shell, &mut Cli::command(), out);
            Ok(())
        }
    }
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
            if e.downcast_ref::<error::Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The code layout lists (`cli/build.rs`) hold symbol names of the
    /// binary's own code, each once and most of them Rust functions: a
    /// list written from the wrong output (libc's versioned names,
    /// callgrind's addresses or file names, blank lines) would be skipped by
    /// the linker in silence.
    #[test]
    fn code_layout_lists_name_each_function_once() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link");
        let mut lists = 0;
        for entry in std::fs::read_dir(&dir).expect("cli/link exists") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_none_or(|x| x != "order") {
                continue;
            }
            lists += 1;
            let text = std::fs::read_to_string(&path).expect("a readable list");
            let mut seen = std::collections::HashSet::new();
            let mut rust = 0;
            for line in text.lines() {
                assert!(
                    !line.is_empty()
                        && !line.starts_with("0x")
                        && !line.contains(|c: char| c.is_whitespace() || "@/()".contains(c)),
                    "{}: {line:?} is not a symbol of the binary's code",
                    path.display()
                );
                assert!(seen.insert(line), "{}: {line} twice", path.display());
                if line.starts_with("_ZN") || line.starts_with("_R") {
                    rust += 1;
                }
            }
            let n = seen.len();
            assert!(
                n > 1000 && rust * 10 > n * 9,
                "{}: {rust} Rust functions of {n}",
                path.display()
            );
        }
        assert!(lists > 0, "no list in {}", dir.display());
    }
}
