//! The standalone git-push commands of a single host: init, setup, execute,
//! releases, rollback, lock, logs, host.

use super::GlobalArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Write a documented deploy.yml in the current directory.
    Init,
}

pub async fn run(command: ReleaseCommand, _global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ReleaseCommand::Init => anyhow::bail!("init is not built yet"),
    }
}
