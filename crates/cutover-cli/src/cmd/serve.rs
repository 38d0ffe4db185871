//! `cutover serve` and `cutover demo`.

use super::GlobalArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Not built yet.
    #[command(hide = true)]
    PlaceholderServeCommand,
}

pub async fn run(command: ServeCommand, _global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ServeCommand::PlaceholderServeCommand => anyhow::bail!("not built yet"),
    }
}
