//! The subcommand tree. Each group of commands owns one module.

pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod release;
pub mod serve;

use crate::output::OutputFormat;
use clap::{Args, Parser, Subcommand};

/// cutover rolls new versions out safely: firmware to fleets of devices and
/// application releases to servers.
#[derive(Debug, Parser)]
#[command(name = "cutover", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Output format: text for people, json for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// More log output on stderr (-v info, -vv debug); CUTOVER_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system on embedded defaults with a simulated fleet of ~1,000 devices.
    Demo(demo::DemoArgs),
    /// Check or print the deployment configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Measure cutover's parts on this machine.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Git-push deploys on this host (init, setup, execute, releases, rollback, lock, logs, host).
    #[command(flatten)]
    Release(release::ReleaseCommand),
    /// The control plane: serve, demo.
    #[command(flatten)]
    Serve(serve::ServeCommand),
    /// Client commands of the REST API (env, plan, deploy, target, keys, audit, report).
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Fleet commands (artifact, fleet-sim).
    #[command(flatten)]
    Fleet(fleet::FleetCommand),
}

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Demo(args) => demo::run(args, &cli.global).await,
        Command::Config(command) => config::run(command, &cli.global).await,
        Command::Bench(command) => bench::run(command, &cli.global).await,
        Command::Release(command) => release::run(command, &cli.global).await,
        Command::Serve(command) => serve::run(command, &cli.global).await,
        Command::Client(command) => client::run(command, &cli.global).await,
        Command::Fleet(command) => fleet::run(command, &cli.global).await,
    }
}
