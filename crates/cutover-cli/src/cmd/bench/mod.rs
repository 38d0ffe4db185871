//! `cutover bench …`: benchmarks that print figures for docs/BENCHMARKS.md.

pub mod api;
pub mod engine;
pub mod fleet;
pub mod store;

use super::GlobalArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The rollout engine in process: a canary over N simulated targets.
    Engine(engine::EngineBenchArgs),
    /// Batched inserts of action events on SQLite and PostgreSQL.
    Store(store::StoreBenchArgs),
    /// Server, embedded broker and simulated fleet in one run: a rolling rollout.
    Fleet(fleet::FleetBenchArgs),
    /// The REST API under load from wrk on loopback.
    Api(api::ApiBenchArgs),
    /// Release switches through the built-in proxy under wrk load, against nginx.
    Cutover(crate::cmd::release::bench::BenchCutoverArgs),
}

pub async fn run(command: BenchCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        BenchCommand::Engine(args) => engine::run(args, global).await,
        BenchCommand::Store(args) => store::run(args, global).await,
        BenchCommand::Fleet(args) => fleet::run(args, global).await,
        BenchCommand::Api(args) => api::run(args, global).await,
        BenchCommand::Cutover(args) => crate::cmd::release::bench::run(args, global).await,
    }
}
