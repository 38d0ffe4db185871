//! Scenario tests of the rollout engine, one story per behaviour: each
//! strategy, thresholds at their exact boundaries, criteria with windows,
//! retries, timeouts, idempotent reports and operator commands.

use cutover_core::engine::{
    ActionStage, Cause, Command, Decision, DispatchMode, Event, ExecutionStatus, MetricSample,
    Millis, OperatorCommand, Percent, Phase, Rollout, RolloutSpec, Strategy, TargetState,
    Threshold, Trigger,
};

const T0: Millis = 1_000_000;

fn pct(x: u32) -> Percent {
    Percent::whole(x).unwrap()
}

fn dispatches(cmds: &[Command]) -> Vec<(u32, u16)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Dispatch {
                target, attempt, ..
            } => Some((*target, *attempt)),
            _ => None,
        })
        .collect()
}

fn rollbacks(cmds: &[Command]) -> Vec<(u32, u16)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Rollback {
                target, attempt, ..
            } => Some((*target, *attempt)),
            _ => None,
        })
        .collect()
}

fn decisions(cmds: &[Command]) -> Vec<Decision> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Notify { decision } => Some(decision.clone()),
            _ => None,
        })
        .collect()
}

fn texts(cmds: &[Command]) -> Vec<String> {
    decisions(cmds).iter().map(|d| d.to_string()).collect()
}

fn report(r: &mut Rollout, target: u32, stage: ActionStage, now: Millis) -> Vec<Command> {
    let attempt = r.target_attempt(target);
    r.step(
        Event::Report {
            target,
            attempt,
            stage,
        },
        now,
    )
}

fn succeed(r: &mut Rollout, target: u32, now: Millis) -> Vec<Command> {
    report(r, target, ActionStage::Succeeded, now)
}

fn fail(r: &mut Rollout, target: u32, now: Millis) -> Vec<Command> {
    report(
        r,
        target,
        ActionStage::Failed {
            transient: false,
            reason: "checksum mismatch".into(),
        },
        now,
    )
}

fn op(r: &mut Rollout, command: OperatorCommand, now: Millis) -> Vec<Command> {
    r.step(Event::Operator { command }, now)
}

fn spec(strategy: Strategy) -> RolloutSpec {
    let mut s = RolloutSpec::new(strategy);
    s.success_threshold = Threshold::percent(50);
    s.error_threshold = Threshold::percent(10);
    s.min_finished_for_error_rate = 1;
    s
}

#[test]
fn immediate_dispatches_every_target_and_succeeds() {
    let mut r = Rollout::new(spec(Strategy::Immediate), 5).unwrap();
    assert_eq!(r.status(), ExecutionStatus::Pending);
    let cmds = r.start(T0);
    assert_eq!(
        dispatches(&cmds),
        vec![(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]
    );
    assert_eq!(
        texts(&cmds)[0],
        "execution started: immediate over 5 targets in 1 waves"
    );
    for t in 0..4 {
        assert!(succeed(&mut r, t, T0 + 10).is_empty());
    }
    let cmds = succeed(&mut r, 4, T0 + 20);
    assert_eq!(r.status(), ExecutionStatus::Succeeded);
    assert!(
        texts(&cmds)
            .iter()
            .any(|t| t == "execution succeeded: 5 of 5 targets updated, 0 failed")
    );
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn an_empty_fleet_succeeds_at_once() {
    let mut r = Rollout::new(spec(Strategy::Immediate), 0).unwrap();
    r.start(T0);
    assert_eq!(r.status(), ExecutionStatus::Succeeded);
}

#[test]
fn rolling_keeps_max_in_flight_and_waits_for_each_wave() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(4),
    });
    s.max_in_flight = Some(2);
    s.success_threshold = Threshold::percent(100);
    let mut r = Rollout::new(s, 10).unwrap();
    assert_eq!(r.wave_count(), 3);
    let cmds = r.start(T0);
    assert_eq!(dispatches(&cmds), vec![(0, 1), (1, 1)]);
    assert_eq!(dispatches(&succeed(&mut r, 0, T0 + 1)), vec![(2, 1)]);
    assert_eq!(dispatches(&succeed(&mut r, 1, T0 + 2)), vec![(3, 1)]);
    // Wave 0 has one target left: nothing of wave 1 yet, though a slot is free.
    assert!(dispatches(&succeed(&mut r, 2, T0 + 3)).is_empty());
    let cmds = succeed(&mut r, 3, T0 + 4);
    assert_eq!(dispatches(&cmds), vec![(4, 1), (5, 1)]);
    assert!(
        texts(&cmds)
            .iter()
            .any(|t| t.starts_with("wave 1 passed: 4 of 4 targets succeeded (100 %"))
    );
    assert!(
        texts(&cmds)
            .iter()
            .any(|t| t == "wave 2 of 3 started: 4 targets")
    );
    for t in 4..10 {
        succeed(&mut r, t, T0 + 10);
    }
    assert_eq!(r.status(), ExecutionStatus::Succeeded);
}

#[test]
fn canary_bakes_between_waves_and_a_person_can_promote() {
    let s = spec(Strategy::Canary {
        steps: vec![pct(10), pct(50), pct(100)],
        canary_percentage: None,
        bake_ms: 60_000,
    });
    let mut r = Rollout::new(s, 10).unwrap();
    assert_eq!(dispatches(&r.start(T0)), vec![(0, 1)]);
    let cmds = succeed(&mut r, 0, T0 + 5_000);
    assert!(dispatches(&cmds).is_empty());
    assert_eq!(
        r.phase(),
        Phase::Bake {
            wave: 0,
            until: T0 + 65_000
        }
    );
    assert_eq!(r.next_deadline(), Some(T0 + 65_000));
    // A tick before the bake ends changes nothing.
    assert!(r.step(Event::Tick, T0 + 64_999).is_empty());
    let cmds = r.step(Event::Tick, T0 + 65_000);
    assert_eq!(dispatches(&cmds), vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
    for t in 1..5 {
        succeed(&mut r, t, T0 + 70_000);
    }
    assert!(matches!(r.phase(), Phase::Bake { wave: 1, .. }));
    let cmds = op(&mut r, OperatorCommand::Promote, T0 + 71_000);
    assert!(
        texts(&cmds)
            .iter()
            .any(|t| t == "wave 2 promoted by an operator before its bake ended")
    );
    assert_eq!(dispatches(&cmds).len(), 5);
    // Promote with no bake running is refused with the reason.
    let cmds = op(&mut r, OperatorCommand::Promote, T0 + 71_001);
    assert_eq!(
        texts(&cmds),
        vec!["promote ignored: no wave is baking".to_string()]
    );
}

#[test]
fn error_threshold_aborts_and_rolls_back_touched_targets_latest_wave_first() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(10),
    });
    s.success_threshold = Threshold::percent(80);
    s.min_finished_for_error_rate = 5;
    let mut r = Rollout::new(s, 30).unwrap();
    r.start(T0);
    for t in 0..10 {
        succeed(&mut r, t, T0 + 1);
    }
    // Wave 1 (targets 10..20) is in progress; 20..30 never dispatched.
    assert_eq!(r.phase(), Phase::Wave { wave: 1 });
    for t in 10..14 {
        succeed(&mut r, t, T0 + 2);
    }
    // 1 failed of 5 finished = 20 % > 10 %.
    let cmds = fail(&mut r, 14, T0 + 3);
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
    assert_eq!(
        texts(&cmds)[0],
        "wave 2 aborted: error rate 20 % > 10 % over 5 finished targets (minimum 5); \
         rolling back 20 touched targets, latest wave first"
    );
    let rb = rollbacks(&cmds);
    let order: Vec<u32> = rb.iter().map(|&(t, _)| t).collect();
    assert_eq!(order, (0..20).rev().collect::<Vec<_>>());
    assert!(rb.iter().all(|&(t, a)| a == r.target_attempt(t) && a == 2));
    assert!(dispatches(&cmds).is_empty());
    assert_eq!(r.totals().canceled, 10);
    // A late success of the aborted attempt changes nothing.
    assert!(
        r.step(
            Event::Report {
                target: 15,
                attempt: 1,
                stage: ActionStage::Succeeded
            },
            T0 + 4
        )
        .is_empty()
    );
    for (t, a) in rb {
        r.step(
            Event::Report {
                target: t,
                attempt: a,
                stage: ActionStage::RolledBack,
            },
            T0 + 10,
        );
    }
    assert_eq!(r.status(), ExecutionStatus::RolledBack);
    assert_eq!(r.totals().rolled_back, 20);
}

#[test]
fn error_rate_equal_to_the_threshold_does_not_abort() {
    let mut s = spec(Strategy::Immediate);
    s.min_finished_for_error_rate = 10;
    let mut r = Rollout::new(s, 20).unwrap();
    r.start(T0);
    fail(&mut r, 0, T0);
    for t in 1..10 {
        succeed(&mut r, t, T0);
    }
    // 1 of 10 finished = exactly 10 %: the comparison is strict.
    assert_eq!(r.status(), ExecutionStatus::Running);
    fail(&mut r, 10, T0);
    // 2 of 11 = 18.18 % > 10 %.
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
}

#[test]
fn the_minimum_finished_holds_back_the_error_rate() {
    let mut s = spec(Strategy::Immediate);
    s.min_finished_for_error_rate = 20;
    let mut r = Rollout::new(s, 100).unwrap();
    r.start(T0);
    for t in 0..5 {
        fail(&mut r, t, T0);
    }
    for t in 5..19 {
        succeed(&mut r, t, T0);
    }
    assert_eq!(
        r.status(),
        ExecutionStatus::Running,
        "19 finished < minimum 20"
    );
    let cmds = succeed(&mut r, 19, T0);
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
    assert!(
        texts(&cmds)[0].contains("error rate 25 % > 10 % over 20 finished targets (minimum 20)")
    );
}

#[test]
fn a_count_error_threshold_counts_failures() {
    let mut s = spec(Strategy::Immediate);
    s.error_threshold = Threshold::Count(2);
    let mut r = Rollout::new(s, 10).unwrap();
    r.start(T0);
    fail(&mut r, 0, T0);
    fail(&mut r, 1, T0);
    assert_eq!(r.status(), ExecutionStatus::Running);
    let cmds = fail(&mut r, 2, T0);
    assert!(texts(&cmds)[0].contains("3 failed targets > 2 allowed"));
}

#[test]
fn without_auto_rollback_an_abort_pauses_and_a_person_decides() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(5),
    });
    s.auto_rollback = false;
    s.max_in_flight = Some(2);
    s.min_finished_for_error_rate = 2;
    let mut r = Rollout::new(s, 10).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0 + 1);
    let cmds = fail(&mut r, 1, T0 + 2);
    assert_eq!(r.status(), ExecutionStatus::Paused);
    assert!(
        dispatches(&cmds).is_empty(),
        "nothing dispatched while paused"
    );
    assert!(texts(&cmds)[0].ends_with("paused for a decision because auto_rollback is off"));
    assert!(matches!(
        r.pause_trigger(),
        Some(Trigger::ErrorThreshold { .. })
    ));
    // In-flight actions still report while paused.
    succeed(&mut r, 2, T0 + 3);
    let cmds = op(&mut r, OperatorCommand::Resume, T0 + 4);
    assert_eq!(r.status(), ExecutionStatus::Running);
    assert!(
        texts(&cmds)
            .iter()
            .any(|t| t.starts_with("resumed by an operator, overriding: error rate"))
    );
    assert_eq!(dispatches(&cmds), vec![(3, 1), (4, 1)]);
    // The overridden threshold is not judged again in this wave.
    fail(&mut r, 3, T0 + 5);
    assert_eq!(r.status(), ExecutionStatus::Running);
}

#[test]
fn duplicated_late_and_backward_reports_are_ignored() {
    let mut s = spec(Strategy::Immediate);
    s.max_retries = 1;
    let mut r = Rollout::new(s, 3).unwrap();
    r.start(T0);
    report(&mut r, 0, ActionStage::Installing, T0 + 1);
    assert_eq!(r.target_state(0), TargetState::Installing);
    report(&mut r, 0, ActionStage::Downloading, T0 + 2);
    assert_eq!(
        r.target_state(0),
        TargetState::Installing,
        "no going backwards"
    );
    succeed(&mut r, 0, T0 + 3);
    succeed(&mut r, 0, T0 + 3);
    report(&mut r, 0, ActionStage::Installing, T0 + 4);
    assert_eq!(r.target_state(0), TargetState::Succeeded);
    // A transient failure is retried; the old attempt's reports are ignored.
    let cmds = report(
        &mut r,
        1,
        ActionStage::Failed {
            transient: true,
            reason: "network".into(),
        },
        T0 + 5,
    );
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Dispatch {
            target: 1,
            attempt: 2,
            cause: Cause::Retry,
            ..
        }
    )));
    r.step(
        Event::Report {
            target: 1,
            attempt: 1,
            stage: ActionStage::Succeeded,
        },
        T0 + 6,
    );
    assert_eq!(r.target_state(1), TargetState::Dispatched);
    // Unknown targets and attempts from the future are ignored too.
    r.step(
        Event::Report {
            target: 99,
            attempt: 1,
            stage: ActionStage::Succeeded,
        },
        T0 + 6,
    );
    r.step(
        Event::Report {
            target: 2,
            attempt: 7,
            stage: ActionStage::Succeeded,
        },
        T0 + 6,
    );
    assert_eq!(r.target_state(2), TargetState::Dispatched);
    assert_eq!(r.progress().ignored_reports, 6);
    let totals = r.totals();
    assert_eq!(totals.succeeded, 1);
    assert_eq!(totals.total(), 3);
}

#[test]
fn a_second_transient_failure_past_the_retry_limit_fails() {
    let mut s = spec(Strategy::Immediate);
    s.max_retries = 1;
    s.min_finished_for_error_rate = 100;
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    let transient = || ActionStage::Failed {
        transient: true,
        reason: "timeout talking to the mirror".into(),
    };
    report(&mut r, 0, transient(), T0);
    assert_eq!(r.target_attempt(0), 2);
    let cmds = report(&mut r, 0, transient(), T0);
    assert!(dispatches(&cmds).is_empty());
    assert_eq!(r.target_state(0), TargetState::Failed);
}

#[test]
fn an_action_past_its_timeout_counts_as_failed() {
    let mut s = spec(Strategy::Immediate);
    s.action_timeout_ms = 60_000;
    s.success_threshold = Threshold::percent(50);
    s.min_finished_for_error_rate = 100;
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0 + 1_000);
    assert_eq!(r.next_deadline(), Some(T0 + 60_000));
    let cmds = r.step(Event::Tick, T0 + 60_000);
    assert!(cmds.contains(&Command::CancelAction {
        target: 1,
        attempt: 1,
        cause: Cause::Timeout
    }));
    assert!(
        texts(&cmds)
            .iter()
            .any(|t| t == "1 actions timed out after 1 min and count as failed")
    );
    assert_eq!(r.target_state(1), TargetState::TimedOut);
    // A late success for the timed-out attempt does not revive it.
    succeed(&mut r, 1, T0 + 61_000);
    assert_eq!(r.target_state(1), TargetState::TimedOut);
    assert_eq!(r.status(), ExecutionStatus::Succeeded, "1 of 2 meets 50 %");
}

#[test]
fn a_bricked_device_does_not_stall_the_rollout() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(2),
    });
    s.action_timeout_ms = 1_000;
    s.success_threshold = Threshold::percent(100);
    s.min_finished_for_error_rate = 100;
    let mut r = Rollout::new(s, 4).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0 + 10);
    // Target 1 never answers: the tick at the deadline settles the wave,
    // which then misses its 100 % success threshold.
    let deadline = r.next_deadline().unwrap();
    let cmds = r.step(Event::Tick, deadline);
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
    assert!(texts(&cmds).iter().any(|t| {
        t.contains("only 1 of 2 targets succeeded (50 %), below the success threshold of 100 %")
    }));
}

#[test]
fn gates_run_after_each_wave_and_a_failed_gate_aborts() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(1),
    });
    s.gate_after_each_wave = true;
    let mut r = Rollout::new(s, 3).unwrap();
    r.start(T0);
    let cmds = succeed(&mut r, 0, T0 + 1);
    assert!(cmds.contains(&Command::RunGate { wave: 0 }));
    assert!(
        dispatches(&cmds).is_empty(),
        "no wave before its predecessor's gate passed"
    );
    // A result for another wave is not this gate's.
    assert!(
        r.step(
            Event::GateResult {
                wave: 1,
                passed: true,
                reason: String::new(),
                hold: false,
            },
            T0 + 2
        )
        .is_empty()
    );
    let cmds = r.step(
        Event::GateResult {
            wave: 0,
            passed: true,
            reason: "health_check ok".into(),
            hold: false,
        },
        T0 + 2,
    );
    assert!(texts(&cmds).contains(&"gate after wave 1 passed: health_check ok".to_string()));
    assert_eq!(dispatches(&cmds), vec![(1, 1)]);
    succeed(&mut r, 1, T0 + 3);
    let cmds = r.step(
        Event::GateResult {
            wave: 1,
            passed: false,
            reason: "functionality_test: 3 failures".into(),
            hold: false,
        },
        T0 + 4,
    );
    assert_eq!(
        texts(&cmds)[0],
        "wave 2 aborted: gate failed: functionality_test: 3 failures; rolling back 2 touched targets, latest wave first"
    );
    assert_eq!(
        rollbacks(&cmds).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 0]
    );
}

#[test]
fn a_gate_waiting_for_a_person_pauses_without_rolling_back_and_a_resume_passes_it() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(1),
    });
    s.gate_after_each_wave = true;
    s.auto_rollback = true;
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0 + 1);
    let reason = "gate user_acceptance_test waits for a person: resume the deployment to pass it";
    let cmds = r.step(
        Event::GateResult {
            wave: 0,
            passed: false,
            reason: reason.into(),
            hold: true,
        },
        T0 + 2,
    );
    assert_eq!(r.status(), ExecutionStatus::Paused, "held, not rolled back");
    assert!(rollbacks(&cmds).is_empty() && dispatches(&cmds).is_empty());
    assert_eq!(
        texts(&cmds),
        vec![format!("gate after wave 1 holds the execution: {reason}")]
    );
    assert_eq!(
        r.pause_trigger().map(|t| t.to_string()),
        Some(reason.to_string())
    );
    // Ticks do not move it on.
    assert!(dispatches(&r.step(Event::Tick, T0 + 60_000)).is_empty());
    let cmds = r.step(
        Event::Operator {
            command: OperatorCommand::Resume,
        },
        T0 + 70_000,
    );
    assert_eq!(r.status(), ExecutionStatus::Running);
    assert_eq!(
        dispatches(&cmds),
        vec![(1, 1)],
        "the resume passed the gate"
    );
}

#[test]
fn blue_green_stages_switches_at_once_then_monitors() {
    let mut s = spec(Strategy::BlueGreen);
    s.success_threshold = Threshold::percent(100);
    s.monitor_ms = 300_000;
    s.gate_after_each_wave = true;
    let mut r = Rollout::new(s, 3).unwrap();
    let cmds = r.start(T0);
    assert!(
        cmds.iter()
            .filter(|c| matches!(
                c,
                Command::Dispatch {
                    mode: DispatchMode::Stage,
                    ..
                }
            ))
            .count()
            == 3
    );
    succeed(&mut r, 0, T0 + 1);
    succeed(&mut r, 1, T0 + 1);
    let cmds = succeed(&mut r, 2, T0 + 2);
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Activate { .. })),
        "verify before switching"
    );
    let cmds = r.step(
        Event::GateResult {
            wave: 0,
            passed: true,
            reason: String::new(),
            hold: false,
        },
        T0 + 3,
    );
    let switched: Vec<u32> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Activate { target } => Some(*target),
            _ => None,
        })
        .collect();
    assert_eq!(switched, vec![0, 1, 2]);
    assert!(texts(&cmds).contains(&"switching 3 staged targets to the new version".to_string()));
    assert_eq!(r.next_deadline(), Some(T0 + 3 + 300_000));
    r.step(Event::Tick, T0 + 3 + 300_000);
    assert_eq!(r.status(), ExecutionStatus::Succeeded);
}

#[test]
fn blue_green_switches_back_when_health_fails_after_the_switch() {
    let mut s = spec(Strategy::BlueGreen);
    s.monitor_ms = 300_000;
    s.criteria.health_check_failure = true;
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0);
    succeed(&mut r, 1, T0);
    assert!(matches!(r.phase(), Phase::Monitor { .. }));
    let sample = MetricSample {
        healthy: Some(false),
        ..Default::default()
    };
    let cmds = r.step(Event::Metrics { target: 1, sample }, T0 + 10);
    assert_eq!(
        texts(&cmds)[0],
        "execution aborted: health checks failing on 1 targets; rolling back 2 touched targets, latest wave first"
    );
    assert_eq!(rollbacks(&cmds).len(), 2);
}

#[test]
fn health_must_fail_for_the_whole_window() {
    let mut s = spec(Strategy::Immediate);
    s.criteria.health_check_failure = true;
    s.criteria.health_failing_for_ms = 5 * 60_000;
    let mut r = Rollout::new(s, 3).unwrap();
    r.start(T0);
    let bad = MetricSample {
        healthy: Some(false),
        ..Default::default()
    };
    let good = MetricSample {
        healthy: Some(true),
        ..Default::default()
    };
    r.step(
        Event::Metrics {
            target: 0,
            sample: bad.clone(),
        },
        T0,
    );
    assert_eq!(r.next_deadline(), Some(T0 + 300_000));
    // Recovers before the window ends: the clock restarts.
    r.step(
        Event::Metrics {
            target: 0,
            sample: good,
        },
        T0 + 200_000,
    );
    r.step(Event::Tick, T0 + 300_000);
    assert_eq!(r.status(), ExecutionStatus::Running);
    r.step(
        Event::Metrics {
            target: 2,
            sample: bad,
        },
        T0 + 400_000,
    );
    r.step(Event::Tick, T0 + 699_999);
    assert_eq!(r.status(), ExecutionStatus::Running);
    let cmds = r.step(Event::Tick, T0 + 700_000);
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
    assert!(texts(&cmds)[0].contains("health checks failing on 1 targets for 5 min"));
}

#[test]
fn error_rate_above_the_limit_for_consecutive_minutes_aborts() {
    let mut s = spec(Strategy::Immediate);
    s.criteria.max_error_rate = Some(pct(5));
    s.criteria.error_rate_for_ms = 3 * 60_000;
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    let rate = |bp| MetricSample {
        error_rate: Some(Percent::from_basis_points(bp).unwrap()),
        ..Default::default()
    };
    // Mean of 4 % and 6 % is exactly 5 %: not above.
    r.step(
        Event::Metrics {
            target: 0,
            sample: rate(400),
        },
        T0,
    );
    r.step(
        Event::Metrics {
            target: 1,
            sample: rate(600),
        },
        T0,
    );
    assert_eq!(
        r.next_deadline(),
        Some(T0 + 3_600_000),
        "only the action timeout is pending"
    );
    r.step(
        Event::Metrics {
            target: 1,
            sample: rate(700),
        },
        T0 + 1_000,
    );
    r.step(Event::Tick, T0 + 1_000 + 179_999);
    assert_eq!(r.status(), ExecutionStatus::Running);
    let cmds = r.step(Event::Tick, T0 + 1_000 + 180_000);
    assert!(
        texts(&cmds)[0].contains("mean error rate 5.5 % > 5 % over 2 reporting targets for 3 min")
    );
}

#[test]
fn response_time_worse_than_the_baseline_aborts() {
    let mut s = spec(Strategy::Immediate);
    s.criteria.performance_degradation = Some(pct(50));
    s.baseline.response_ms = Some(100);
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    let ms = |v| MetricSample {
        response_ms: Some(v),
        ..Default::default()
    };
    r.step(
        Event::Metrics {
            target: 0,
            sample: ms(150),
        },
        T0,
    );
    assert_eq!(
        r.status(),
        ExecutionStatus::Running,
        "exactly 50 % worse is not more than 50 %"
    );
    let cmds = r.step(
        Event::Metrics {
            target: 1,
            sample: ms(152),
        },
        T0,
    );
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
    assert!(
        texts(&cmds)[0].contains(
            "mean response time 151 ms is 51 % worse than the baseline 100 ms (limit 50 %)"
        )
    );
}

#[test]
fn user_reports_abort_at_the_limit() {
    let mut s = spec(Strategy::Immediate);
    s.criteria.user_reported_issues = Some(2);
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    r.step(
        Event::UserReport {
            target: None,
            summary: "login broken".into(),
        },
        T0,
    );
    assert_eq!(r.status(), ExecutionStatus::Running);
    let cmds = r.step(
        Event::UserReport {
            target: Some(1),
            summary: "slow".into(),
        },
        T0,
    );
    assert!(texts(&cmds)[0].contains("2 user-reported issues (limit 2)"));
}

#[test]
fn max_failure_rate_judges_the_whole_execution() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(10),
    });
    s.error_threshold = Threshold::percent(50);
    s.criteria.max_failure_rate = Some(pct(10));
    s.min_finished_for_error_rate = 10;
    s.success_threshold = Threshold::percent(80);
    let mut r = Rollout::new(s, 20).unwrap();
    r.start(T0);
    fail(&mut r, 0, T0);
    for t in 1..10 {
        succeed(&mut r, t, T0);
    }
    assert_eq!(r.status(), ExecutionStatus::Running);
    // 2 of 11 finished in the whole execution; the wave itself has only 1.
    let cmds = fail(&mut r, 10, T0);
    assert_eq!(r.status(), ExecutionStatus::RollingBack);
    assert!(
        texts(&cmds)[0]
            .contains("failure rate 18.19 % > 10 % over 11 finished targets of the execution")
    );
}

#[test]
fn cancel_stops_everything_and_later_commands_are_refused() {
    let mut s = spec(Strategy::Immediate);
    s.max_in_flight = Some(2);
    let mut r = Rollout::new(s, 5).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0);
    let cmds = op(&mut r, OperatorCommand::Cancel, T0 + 1);
    assert_eq!(r.status(), ExecutionStatus::Canceled);
    let canceled: Vec<u32> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::CancelAction { target, .. } => Some(*target),
            _ => None,
        })
        .collect();
    assert_eq!(canceled, vec![1, 2]);
    assert_eq!(r.totals().canceled, 4);
    assert_eq!(r.totals().succeeded, 1);
    let cmds = op(&mut r, OperatorCommand::Resume, T0 + 2);
    assert_eq!(
        texts(&cmds),
        vec!["resume ignored: the execution already ended (canceled)".to_string()]
    );
}

#[test]
fn pause_holds_dispatch_and_resume_goes_on() {
    let mut s = spec(Strategy::Immediate);
    s.max_in_flight = Some(1);
    let mut r = Rollout::new(s, 3).unwrap();
    r.start(T0);
    op(&mut r, OperatorCommand::Pause, T0);
    assert_eq!(r.status(), ExecutionStatus::Paused);
    assert!(dispatches(&succeed(&mut r, 0, T0 + 1)).is_empty());
    assert_eq!(
        texts(&op(&mut r, OperatorCommand::Pause, T0 + 2)),
        vec!["pause ignored: the execution is already paused".to_string()]
    );
    assert_eq!(
        dispatches(&op(&mut r, OperatorCommand::Resume, T0 + 3)),
        vec![(1, 1)]
    );
}

#[test]
fn retry_failed_redispatches_and_the_wave_is_judged_again() {
    let mut s = spec(Strategy::Rolling {
        batch_size: Threshold::Count(2),
    });
    s.auto_rollback = false;
    s.success_threshold = Threshold::percent(100);
    s.error_threshold = Threshold::percent(100);
    let mut r = Rollout::new(s, 4).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0);
    fail(&mut r, 1, T0);
    assert_eq!(r.status(), ExecutionStatus::Paused);
    assert!(matches!(
        r.pause_trigger(),
        Some(Trigger::SuccessThreshold { .. })
    ));
    let cmds = op(&mut r, OperatorCommand::RetryFailed, T0 + 1);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Dispatch {
            target: 1,
            attempt: 2,
            cause: Cause::OperatorRetry,
            ..
        }
    )));
    assert_eq!(r.status(), ExecutionStatus::Running);
    let cmds = succeed(&mut r, 1, T0 + 2);
    assert_eq!(dispatches(&cmds), vec![(2, 1), (3, 1)]);
}

#[test]
fn an_operator_rollback_ignores_auto_rollback() {
    let mut s = spec(Strategy::Immediate);
    s.auto_rollback = false;
    s.rollback_timeout_ms = 10_000;
    let mut r = Rollout::new(s, 2).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0);
    let cmds = op(&mut r, OperatorCommand::Rollback, T0 + 1);
    assert_eq!(
        texts(&cmds)[0],
        "execution aborted: rollback requested by an operator; rolling back 2 touched targets, latest wave first"
    );
    assert!(cmds.iter().all(
        |c| !matches!(c, Command::Rollback { cause, .. } if *cause != Cause::OperatorRollback)
    ));
    report(&mut r, 0, ActionStage::RolledBack, T0 + 2);
    // Target 1 never confirms: after the rollback timeout it has failed.
    assert_eq!(r.next_deadline(), Some(T0 + 1 + 10_000));
    let cmds = r.step(Event::Tick, T0 + 1 + 10_000);
    assert_eq!(r.status(), ExecutionStatus::Failed);
    assert_eq!(
        texts(&cmds),
        vec![
            "rollback incomplete: 1 targets restored, 1 did not confirm; they need a person"
                .to_string()
        ]
    );
}

#[test]
fn time_going_backwards_is_read_as_the_latest_time() {
    let mut s = spec(Strategy::Immediate);
    s.action_timeout_ms = 100;
    let mut r = Rollout::new(s, 1).unwrap();
    r.start(T0 + 50);
    r.step(Event::Tick, T0);
    assert_eq!(r.next_deadline(), Some(T0 + 150));
}

#[test]
fn events_and_specs_survive_json() {
    let events = vec![
        Event::Start,
        Event::Report {
            target: 3,
            attempt: 2,
            stage: ActionStage::Failed {
                transient: true,
                reason: "disk full".into(),
            },
        },
        Event::Metrics {
            target: 1,
            sample: MetricSample {
                healthy: Some(false),
                error_rate: Some(pct(12)),
                response_ms: Some(80),
            },
        },
        Event::UserReport {
            target: None,
            summary: "blank screen".into(),
        },
        Event::Tick,
        Event::Operator {
            command: OperatorCommand::RetryFailed,
        },
        Event::GateResult {
            wave: 2,
            passed: false,
            reason: "manual: rejected".into(),
            hold: false,
        },
    ];
    let json = serde_json::to_string(&events).unwrap();
    let back: Vec<Event> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, events);
    let json = r#"{"type":"report","target":1,"attempt":1,"stage":{"stage":"succeeded"}}"#;
    assert_eq!(
        serde_json::from_str::<Event>(json).unwrap(),
        Event::Report {
            target: 1,
            attempt: 1,
            stage: ActionStage::Succeeded
        }
    );
    let mut s = spec(Strategy::canary(pct(10), 60_000));
    s.criteria.max_failure_rate = Some(pct(10));
    let back: RolloutSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn the_state_is_small_per_target() {
    let mut r = Rollout::new(spec(Strategy::canary(pct(1), 0)), 100_000).unwrap();
    r.start(T0);
    let per_target = r.heap_bytes() as f64 / 100_000.0;
    assert!(per_target < 32.0, "{per_target} bytes per target");
    assert!(r.heap_bytes() >= 100_000 * 4);
}

#[test]
fn a_snapshot_of_the_state_round_trips_through_json() {
    let mut s = spec(Strategy::canary(pct(10), 60_000));
    s.max_retries = 1;
    let mut r = Rollout::new(s, 20).unwrap();
    r.start(T0);
    succeed(&mut r, 0, T0 + 1);
    succeed(&mut r, 1, T0 + 2);
    let json = serde_json::to_string(&r).unwrap();
    let mut back: Rollout = serde_json::from_str(&json).unwrap();
    assert!(back == r);
    assert_eq!(
        back.step(Event::Tick, T0 + 60_002),
        r.step(Event::Tick, T0 + 60_002)
    );
    assert!(back == r);
}
