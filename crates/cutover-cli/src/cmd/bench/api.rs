//! `cutover bench api`.

use crate::cmd::GlobalArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_args: ApiBenchArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("bench api is not built yet")
}
