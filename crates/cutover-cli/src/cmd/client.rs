//! The CLI client of the REST API: env, plan, deploy, target, keys, audit, report.

use super::GlobalArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Not built yet.
    #[command(hide = true)]
    PlaceholderClientCommand,
}

pub async fn run(command: ClientCommand, _global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ClientCommand::PlaceholderClientCommand => anyhow::bail!("not built yet"),
    }
}
