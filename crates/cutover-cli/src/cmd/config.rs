//! `cutover config check FILE` and `cutover config default`.

use super::GlobalArgs;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a deployment-config.yaml (or deploy.yml / config.yml) and summarise it.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a documented example configuration.
    Default,
}

pub async fn run(command: ConfigCommand, _global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ConfigCommand::Check { file } => anyhow::bail!("config check is not built yet: {}", file.display()),
        ConfigCommand::Default => anyhow::bail!("config default is not built yet"),
    }
}
