//! `cutover bench store`.

use crate::cmd::GlobalArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Print one JSON line per scenario.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_args: StoreBenchArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("bench store is not built yet")
}
