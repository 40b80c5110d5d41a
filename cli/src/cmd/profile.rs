//! `shoal profile`: your name, email and key pair, kept in the config dir.

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;

use crate::ctx::Ctx;
use crate::output::Output;
use crate::profile;

#[derive(Subcommand, Debug)]
pub enum Cmd {
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

pub fn run(ctx: &Ctx, cmd: Cmd, out: &mut impl Write) -> Result<()> {
    match cmd {
        Cmd::Init { name, email } => {
            let p = profile::init(&ctx.dir, &name, email.as_deref())?;
            writeln!(out, "created profile {} with key {}", p.name, p.public())?;
        }
        Cmd::Show => {
            let p = profile::load(&ctx.dir)?;
            match ctx.output {
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
    }
    Ok(())
}
