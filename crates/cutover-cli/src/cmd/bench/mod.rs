//! `cutover bench …`: benchmarks that print figures for docs/BENCHMARKS.md.

pub mod engine;
pub mod store;

use super::GlobalArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The rollout engine in process: a canary over N simulated targets.
    Engine(engine::EngineBenchArgs),
    /// Batched inserts of action events on SQLite and PostgreSQL.
    Store(store::StoreBenchArgs),
}

pub async fn run(command: BenchCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        BenchCommand::Engine(args) => engine::run(args, global).await,
        BenchCommand::Store(args) => store::run(args, global).await,
    }
}
