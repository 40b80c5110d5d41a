//! `shoal completion SHELL`: shell completions for the whole command tree.

use std::io::Write;

/// Prints the completions of `command` (the CLI's tree) for `shell`.
pub fn run(shell: clap_complete::Shell, command: &mut clap::Command, out: &mut impl Write) {
    clap_complete::generate(shell, command, "shoal", out);
}
