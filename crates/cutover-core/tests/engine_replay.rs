//! Restart safety: the orchestrator persists every event and rebuilds an
//! execution with `Rollout::replay` after a crash. These tests record whole
//! simulated rollouts (the benchmark's canary, a rollback, a blue-green),
//! cut the stream at every position, rebuild, continue with the rest of the
//! stream, and require the same commands and the same end as the
//! uninterrupted run.

use cutover_core::engine::sim::{Behaviour, Scenario, Simulation};
use cutover_core::engine::{
    Command, Event, ExecutionStatus, Millis, Rollout, RolloutSpec, Strategy, Threshold,
};

/// Replays `log[..cut]`, feeds the rest, and compares with the original run.
fn check_every_cut(
    spec: &RolloutSpec,
    targets: u32,
    log: &[(Event, Millis)],
    expected_end: &Rollout,
) {
    // The commands of the uninterrupted run, step by step.
    let mut original = Rollout::new(spec.clone(), targets).unwrap();
    let outputs: Vec<Vec<Command>> = log
        .iter()
        .map(|(e, now)| original.step(e.clone(), *now))
        .collect();
    assert!(
        &original == expected_end,
        "a replay of the whole stream equals the live state"
    );
    for cut in 0..=log.len() {
        let mut rebuilt =
            Rollout::replay(spec.clone(), targets, log[..cut].iter().cloned()).unwrap();
        for (i, (event, now)) in log.iter().enumerate().skip(cut) {
            let cmds = rebuilt.step(event.clone(), *now);
            assert_eq!(
                cmds, outputs[i],
                "commands differ at event {i} after a cut at {cut}"
            );
        }
        assert!(
            rebuilt == *expected_end,
            "the end differs after a cut at {cut}"
        );
    }
}

fn record(
    spec: RolloutSpec,
    targets: u32,
    behaviour: Behaviour,
    seed: u64,
) -> (Vec<(Event, Millis)>, Rollout) {
    let mut sim = Simulation::new(spec, targets, behaviour, seed)
        .unwrap()
        .recording();
    sim.drive(100_000);
    let end = sim.rollout().clone();
    let report = sim.report();
    assert!(
        report.status.is_terminal(),
        "the recorded run ended: {:?}",
        report.status
    );
    (report.log, end)
}

#[test]
fn the_benchmark_canary_resumes_from_any_cut() {
    let scenario = Scenario::Baseline;
    let (log, end) = record(scenario.spec(), 150, scenario.behaviour(), 11);
    assert_eq!(end.status(), ExecutionStatus::Succeeded);
    assert!(log.len() > 300, "a real stream: {} events", log.len());
    check_every_cut(&scenario.spec(), 150, &log, &end);
}

#[test]
fn a_rollback_resumes_from_any_cut() {
    let scenario = Scenario::Failing;
    let mut behaviour = scenario.behaviour();
    behaviour.failure_ppm_by_wave = vec![0, 400_000];
    let mut spec = scenario.spec();
    spec.min_finished_for_error_rate = 5;
    let (log, end) = record(spec.clone(), 120, behaviour, 5);
    assert_eq!(end.status(), ExecutionStatus::RolledBack);
    check_every_cut(&spec, 120, &log, &end);
}

#[test]
fn a_rolling_update_with_timeouts_and_retries_resumes_from_any_cut() {
    let mut spec = RolloutSpec::new(Strategy::Rolling {
        batch_size: Threshold::Count(15),
    });
    spec.max_in_flight = Some(6);
    spec.max_retries = 2;
    spec.action_timeout_ms = 120_000;
    spec.success_threshold = Threshold::percent(70);
    spec.error_threshold = Threshold::percent(40);
    let mut behaviour = Behaviour::uniform(150_000);
    behaviour.silent_ppm = 50_000;
    behaviour.duplicate_ppm = 200_000;
    let (log, end) = record(spec.clone(), 60, behaviour, 3);
    assert!(
        log.iter().any(|(e, _)| matches!(e, Event::Tick)),
        "timeouts were ticked"
    );
    assert!(end.totals().timed_out > 0, "some actions timed out");
    check_every_cut(&spec, 60, &log, &end);
}

#[test]
fn blue_green_resumes_from_any_cut() {
    let mut spec = RolloutSpec::new(Strategy::BlueGreen);
    spec.gate_after_each_wave = true;
    spec.monitor_ms = 600_000;
    let (log, end) = record(spec.clone(), 40, Behaviour::uniform(0), 8);
    assert_eq!(end.status(), ExecutionStatus::Succeeded);
    check_every_cut(&spec, 40, &log, &end);
}
