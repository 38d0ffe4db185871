//! `cutover bench engine`.

use crate::cmd::GlobalArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Print one JSON line per scenario.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_args: EngineBenchArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("bench engine is not built yet")
}
