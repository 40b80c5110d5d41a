//! `shoal ui`: the web dashboard, served by this CLI process (which holds
//! the profile key) on loopback. The server itself is `crate::ui`.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Result;
use clap::Args;

use crate::ctx::Ctx;

#[derive(Args, Debug)]
pub struct UiArgs {
    /// Where to serve the dashboard: a loopback address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Open the printed URL in the desktop's browser (xdg-open).
    #[arg(long)]
    pub open: bool,
}

pub async fn run(ctx: &Ctx, args: UiArgs, out: &mut impl Write) -> Result<()> {
    crate::ui::serve(ctx, args.listen, args.open, out).await
}
