//! Fleet commands: artifact keygen/sign/upload, fleet-sim.

use super::GlobalArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Not built yet.
    #[command(hide = true)]
    PlaceholderFleetCommand,
}

pub async fn run(command: FleetCommand, _global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        FleetCommand::PlaceholderFleetCommand => anyhow::bail!("not built yet"),
    }
}
