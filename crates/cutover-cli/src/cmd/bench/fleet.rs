//! `cutover bench fleet`.

use crate::cmd::GlobalArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(_args: FleetBenchArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("bench fleet is not built yet")
}
