//! `cutover bench engine`: the pure rollout engine driven by the in-process
//! fleet simulator (`cutover_core::engine::sim`), a canary 1 → 10 → 50 → 100 %
//! over N simulated targets on a virtual clock. No network, no disk: what is
//! measured is the engine (and the simulator's event queue) on one core.

use crate::cmd::GlobalArgs;
use crate::output::OutputFormat;
use anyhow::Context;
use clap::Args;
use cutover_core::engine::sim::{self, Scenario, SimReport};
use std::time::Instant;

#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Print one JSON line per scenario.
    #[arg(long)]
    pub json: bool,
    /// Simulated targets.
    #[arg(long, default_value_t = 1_000_000)]
    pub targets: u32,
    /// Run one scenario only: baseline (0.5 % failures, must succeed) or
    /// failing (15 % failures in the second wave, must roll back).
    #[arg(long, value_parser = ["baseline", "failing"])]
    pub scenario: Option<String>,
    /// Seed of the simulator's pseudo-random generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One scenario's figures.
#[derive(Debug, serde::Serialize)]
struct Line {
    scenario: &'static str,
    targets: u32,
    wall_s: f64,
    events_per_s: f64,
    bytes_per_target: f64,
    outcome: &'static str,
}

pub async fn run(args: EngineBenchArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let json = args.json || matches!(global.output, OutputFormat::Json);
    let scenarios: Vec<Scenario> =
        match &args.scenario {
            Some(name) => vec![Scenario::parse(name).with_context(|| {
                format!("unknown scenario {name:?}: expected baseline or failing")
            })?],
            None => Scenario::ALL.to_vec(),
        };
    let mut all_as_expected = true;
    for scenario in scenarios {
        let targets = args.targets;
        let seed = args.seed;
        // The simulation is CPU-bound and synchronous: keep it off the runtime's workers.
        let (report, wall) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let report = sim::run_scenario(scenario, targets, seed);
            (report, started.elapsed())
        })
        .await
        .context("the simulation thread panicked")?;
        let report: SimReport =
            report.context("the benchmark scenario's rollout spec is invalid")?;
        let wall_s = wall.as_secs_f64();
        let line = Line {
            scenario: scenario.name(),
            targets,
            wall_s: round3(wall_s),
            events_per_s: (report.events as f64 / wall_s.max(1e-9)).round(),
            bytes_per_target: round3(report.bytes_per_target()),
            outcome: report.status.name(),
        };
        if report.status != scenario.expected() {
            all_as_expected = false;
        }
        if json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!(
                "{:<9} {} targets: {} in {:.3} s wall ({} events, {:.0} events/s, {} commands), \
                 {:.1} bytes/target of engine state, {:.1} h virtual",
                line.scenario,
                targets,
                line.outcome,
                wall_s,
                report.events,
                line.events_per_s,
                report.commands,
                line.bytes_per_target,
                report.virtual_ms as f64 / 3_600_000.0,
            );
            if let Some(last) = report
                .decisions
                .iter()
                .rev()
                .find(|d| matches!(d, cutover_core::engine::Decision::Aborted { .. }))
            {
                println!("          {last}");
            }
        }
        if report.status != scenario.expected() {
            eprintln!(
                "error: scenario {} ended {} but must end {}",
                scenario.name(),
                report.status.name(),
                scenario.expected().name()
            );
        }
    }
    Ok(if all_as_expected { 0 } else { 1 })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
