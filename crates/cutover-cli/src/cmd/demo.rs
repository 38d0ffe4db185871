//! `cutover demo`: one command, nothing to set up.

use super::GlobalArgs;
use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {}

pub async fn run(_args: DemoArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("demo is not built yet")
}
