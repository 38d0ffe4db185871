//! Property tests of the rollout engine over random fleets, strategies,
//! failure patterns and event orders, including duplicated, late and
//! reordered reports, random ticks, metrics and operator commands.
//!
//! Invariants checked after every step: never more than max_in_flight in
//! progress; no target dispatched twice except by a retry; no wave before its
//! predecessor passed (and its gate, when gates are on); nothing dispatched
//! after an abort or while paused; the counts add up, per wave and in total.
//! At the end: the execution ended, and every touched target is succeeded,
//! failed, timed out, rolled back (or failed to) or canceled.
//!
//! The replay property records the stream, cuts it at every position,
//! rebuilds with `Rollout::replay`, continues, and must emit the same
//! commands and reach the same state as the uninterrupted run.

use cutover_core::engine::{
    ActionStage, Cause, Command, Decision, Event, ExecutionStatus, MetricSample, Millis,
    OperatorCommand, Percent, Phase, Rollout, RolloutSpec, SplitMix64, Strategy as RolloutStrategy,
    TargetState, Threshold, Trigger,
};
use proptest::prelude::*;
use std::collections::HashSet;

const T0: Millis = 1_700_000_000_000;

/// What a simulated target does with each attempt.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Succeed,
    Fail,
    FailTransient,
    Silent,
}

#[derive(Debug, Clone)]
struct Case {
    spec: RolloutSpec,
    fates: Vec<Fate>,
    seed: u64,
    operator_ppm: u32,
}

fn arb_percent() -> impl Strategy<Value = Percent> {
    (0u32..=100).prop_map(|p| Percent::whole(p).unwrap())
}

fn arb_threshold() -> impl proptest::strategy::Strategy<Value = Threshold> {
    prop_oneof![
        (0u32..6).prop_map(Threshold::Count),
        arb_percent().prop_map(Threshold::Percent)
    ]
}

fn arb_strategy() -> impl proptest::strategy::Strategy<Value = RolloutStrategy> {
    prop_oneof![
        Just(RolloutStrategy::Immediate),
        (1u32..8).prop_map(|c| RolloutStrategy::Rolling {
            batch_size: Threshold::Count(c)
        }),
        (1u32..60).prop_map(|p| RolloutStrategy::Rolling {
            batch_size: Threshold::percent(p)
        }),
        (
            proptest::collection::btree_set(1u32..100, 0..4),
            0i64..3_000
        )
            .prop_map(|(steps, bake_ms)| {
                let mut steps: Vec<Percent> = steps
                    .into_iter()
                    .map(|p| Percent::whole(p).unwrap())
                    .collect();
                steps.push(Percent::HUNDRED);
                RolloutStrategy::Canary {
                    steps,
                    canary_percentage: None,
                    bake_ms,
                }
            }),
        Just(RolloutStrategy::BlueGreen),
    ]
}

fn arb_fate() -> impl proptest::strategy::Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Succeed),
        1 => Just(Fate::Fail),
        1 => Just(Fate::FailTransient),
        1 => Just(Fate::Silent),
    ]
}

prop_compose! {
    fn arb_case()(
        strategy in arb_strategy(),
        fates in proptest::collection::vec(arb_fate(), 0..36),
        success in arb_threshold(),
        error in arb_threshold(),
        min_finished in 0u32..8,
        max_in_flight in proptest::option::of(1u32..6),
        max_retries in 0u8..3,
        auto_rollback in any::<bool>(),
        gates in any::<bool>(),
        monitor_ms in 0i64..2_000,
        health in any::<bool>(),
        user_limit in proptest::option::of(1u32..4),
        failure_rate in proptest::option::of(arb_percent()),
        seed in any::<u64>(),
        operator_ppm in prop_oneof![Just(0u32), Just(30_000u32), Just(100_000u32)],
    ) -> Case {
        let mut spec = RolloutSpec::new(strategy);
        spec.success_threshold = success;
        spec.error_threshold = error;
        spec.min_finished_for_error_rate = min_finished;
        spec.max_in_flight = max_in_flight;
        spec.max_retries = max_retries;
        spec.auto_rollback = auto_rollback;
        spec.gate_after_each_wave = gates;
        spec.monitor_ms = monitor_ms;
        spec.action_timeout_ms = 5_000;
        spec.rollback_timeout_ms = 4_000;
        spec.criteria.health_check_failure = health;
        spec.criteria.health_failing_for_ms = 1_000;
        spec.criteria.user_reported_issues = user_limit;
        spec.criteria.max_failure_rate = failure_rate;
        Case { spec, fates, seed, operator_ppm }
    }
}

/// Pending answers from the simulated fleet, delivered in random order.
#[derive(Debug, Clone)]
enum Pending {
    Report {
        target: u32,
        attempt: u16,
        stage: ActionStage,
    },
    Gate {
        wave: u32,
        passed: bool,
    },
}

/// Everything the checks remember between steps.
#[derive(Default)]
struct Observed {
    waves_passed: HashSet<u32>,
    gates_passed: HashSet<u32>,
    ended_dispatching: bool,
}

struct Driver {
    case: Case,
    rollout: Rollout,
    rng: SplitMix64,
    pool: Vec<Pending>,
    now: Millis,
    observed: Observed,
    /// The stream with its times and the commands of each step, for replay.
    log: Vec<(Event, Millis)>,
    outputs: Vec<Vec<Command>>,
}

impl Driver {
    fn new(case: Case) -> Self {
        let n = case.fates.len() as u32;
        let rollout = Rollout::new(case.spec.clone(), n).expect("generated specs are valid");
        let rng = SplitMix64::new(case.seed);
        Self {
            case,
            rollout,
            rng,
            pool: Vec::new(),
            now: T0,
            observed: Observed::default(),
            log: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn feed(&mut self, event: Event) {
        let before = self.rollout.clone();
        let cmds = self.rollout.step(event.clone(), self.now);
        check_step(
            &self.case,
            &event,
            &before,
            &self.rollout,
            &cmds,
            &mut self.observed,
        );
        self.log.push((event, self.now));
        for c in &cmds {
            self.react(c);
        }
        self.outputs.push(cmds);
    }

    fn react(&mut self, command: &Command) {
        match *command {
            Command::Dispatch {
                target, attempt, ..
            } => {
                let fate = self.case.fates[target as usize];
                if matches!(fate, Fate::Silent) {
                    return;
                }
                for stage in [
                    ActionStage::Downloading,
                    ActionStage::Installing,
                    ActionStage::Verifying,
                ] {
                    if self.rng.chance_ppm(500_000) {
                        self.pool.push(Pending::Report {
                            target,
                            attempt,
                            stage,
                        });
                    }
                }
                let stage = match fate {
                    Fate::Succeed => ActionStage::Succeeded,
                    Fate::Fail => ActionStage::Failed {
                        transient: false,
                        reason: "bad image".into(),
                    },
                    Fate::FailTransient => {
                        // Transient failures clear up on a later attempt half the time.
                        if attempt > 1 && self.rng.chance_ppm(500_000) {
                            ActionStage::Succeeded
                        } else {
                            ActionStage::Failed {
                                transient: true,
                                reason: "network".into(),
                            }
                        }
                    }
                    Fate::Silent => return,
                };
                self.pool.push(Pending::Report {
                    target,
                    attempt,
                    stage,
                });
            }
            Command::Rollback {
                target, attempt, ..
            } => {
                if self.rng.chance_ppm(100_000) {
                    return; // never confirmed: the rollback times out
                }
                let stage = if self.rng.chance_ppm(50_000) {
                    ActionStage::Failed {
                        transient: false,
                        reason: "slot b corrupt".into(),
                    }
                } else {
                    ActionStage::RolledBack
                };
                self.pool.push(Pending::Report {
                    target,
                    attempt,
                    stage,
                });
            }
            Command::RunGate { wave } => {
                let passed = self.rng.chance_ppm(900_000);
                self.pool.push(Pending::Gate { wave, passed });
            }
            _ => {}
        }
    }

    fn deliver(&mut self, index: usize, keep: bool) {
        let pending = if keep {
            self.pool[index].clone()
        } else {
            self.pool.swap_remove(index)
        };
        let event = match pending {
            Pending::Report {
                target,
                attempt,
                stage,
            } => Event::Report {
                target,
                attempt,
                stage,
            },
            Pending::Gate { wave, passed } => Event::GateResult {
                wave,
                passed,
                reason: String::new(),
                hold: false,
            },
        };
        self.feed(event);
    }

    fn random_step(&mut self) {
        self.now += self.rng.range(0, 400) as Millis;
        let n = self.case.fates.len() as u64;
        let roll = self.rng.range(0, 1_000_000) as u32;
        if roll < self.case.operator_ppm {
            let commands = [
                OperatorCommand::Pause,
                OperatorCommand::Resume,
                OperatorCommand::Promote,
                OperatorCommand::RetryFailed,
                OperatorCommand::Rollback,
                OperatorCommand::Cancel,
            ];
            // Rollback and cancel end the run: keep them rare.
            let i = self.rng.range(0, 40) as usize;
            let command = if i < 4 {
                commands[i]
            } else if i == 4 {
                OperatorCommand::Rollback
            } else if i == 5 {
                OperatorCommand::Cancel
            } else {
                commands[i % 4]
            };
            self.feed(Event::Operator { command });
        } else if roll < 150_000 && n > 0 {
            let target = self.rng.range(0, n + 1) as u32; // sometimes out of range
            let sample = MetricSample {
                healthy: Some(self.rng.chance_ppm(900_000)),
                ..Default::default()
            };
            self.feed(Event::Metrics { target, sample });
        } else if roll < 160_000 {
            self.feed(Event::UserReport {
                target: None,
                summary: "odd".into(),
            });
        } else if roll < 250_000 || self.pool.is_empty() {
            if let Some(d) = self.rollout.next_deadline() {
                self.now = self.now.max(d);
            }
            self.feed(Event::Tick);
        } else {
            let i = self.rng.range(0, self.pool.len() as u64) as usize;
            let keep = self.rng.chance_ppm(150_000); // duplicated later
            self.deliver(i, keep);
        }
    }

    /// Settles everything so the execution must end.
    fn drain(&mut self) {
        for _ in 0..20_000 {
            if self.rollout.status().is_terminal() {
                return;
            }
            if !self.pool.is_empty() {
                self.deliver(0, false);
                continue;
            }
            if let Some(trigger) = self.rollout.pause_trigger().cloned() {
                let _ = trigger;
                self.feed(Event::Operator {
                    command: OperatorCommand::Resume,
                });
                continue;
            }
            if self.rollout.status() == ExecutionStatus::Paused {
                self.feed(Event::Operator {
                    command: OperatorCommand::Resume,
                });
                continue;
            }
            if matches!(self.rollout.phase(), Phase::Bake { .. }) && self.rng.chance_ppm(500_000) {
                self.feed(Event::Operator {
                    command: OperatorCommand::Promote,
                });
                continue;
            }
            match self.rollout.next_deadline() {
                Some(d) => {
                    self.now = self.now.max(d);
                    self.feed(Event::Tick);
                }
                None => {
                    self.now += 1;
                    self.feed(Event::Tick);
                }
            }
        }
    }

    fn run(&mut self, steps: usize) {
        self.feed(Event::Start);
        for _ in 0..steps {
            if self.rollout.status().is_terminal() {
                break;
            }
            self.random_step();
        }
        self.drain();
    }
}

fn recount(r: &Rollout) -> [u32; 13] {
    let mut c = [0u32; 13];
    for t in 0..r.target_count() {
        c[r.target_state(t) as usize] += 1;
    }
    c
}

fn check_step(
    case: &Case,
    event: &Event,
    before: &Rollout,
    after: &Rollout,
    cmds: &[Command],
    seen: &mut Observed,
) {
    let n = after.target_count();
    let mut dispatched_now = HashSet::new();
    let mut rollback_begun = false;
    let mut timed_out = HashSet::new();
    for c in cmds {
        match c {
            Command::CancelAction {
                target,
                cause: Cause::Timeout,
                ..
            } => {
                timed_out.insert(*target);
            }
            Command::Notify { decision } => match decision {
                Decision::WavePassed { wave, .. } => {
                    seen.waves_passed.insert(*wave);
                }
                Decision::GatePassed { wave, .. } => {
                    seen.gates_passed.insert(*wave);
                }
                Decision::Aborted {
                    auto_rollback,
                    trigger,
                    ..
                } if *auto_rollback || matches!(trigger, Trigger::Operator) => {
                    rollback_begun = true;
                }
                _ => {}
            },
            Command::Dispatch {
                target,
                wave,
                attempt,
                cause,
                ..
            } => {
                assert!(
                    !seen.ended_dispatching,
                    "dispatch after an abort or the end: {c:?}"
                );
                assert!(
                    !rollback_begun,
                    "dispatch after an abort in the same step: {c:?}"
                );
                assert!(*target < n);
                assert!(
                    dispatched_now.insert(*target),
                    "target {target} dispatched twice in one step"
                );
                assert_eq!(*wave, after.wave_of(*target));
                let prev = before.target_state(*target);
                let prev_attempt = before.target_attempt(*target);
                assert_eq!(*attempt, prev_attempt + 1, "attempts count up by one");
                match prev {
                    TargetState::Pending => {
                        assert_eq!(*cause, Cause::Wave);
                        if *wave > 0 {
                            assert!(
                                seen.waves_passed.contains(&(wave - 1)),
                                "wave {wave} before its predecessor passed"
                            );
                            if case.spec.gate_after_each_wave {
                                assert!(
                                    seen.gates_passed.contains(&(wave - 1)),
                                    "wave {wave} before its predecessor's gate passed"
                                );
                            }
                        }
                    }
                    TargetState::AwaitingRetry | TargetState::Failed | TargetState::TimedOut => {
                        assert!(
                            matches!(cause, Cause::Retry | Cause::OperatorRetry),
                            "{c:?} from {prev:?}"
                        );
                    }
                    s if s.is_in_flight() => {
                        // The failure that frees the retry happened in this very
                        // step: a transient failure report (retried by the engine),
                        // or a timeout noticed first and retried by a person.
                        let failed_now = matches!(
                            event,
                            Event::Report { target: t, attempt: a, stage: ActionStage::Failed { transient: true, .. } }
                                if t == target && *a == prev_attempt
                        ) && *cause == Cause::Retry;
                        let timed_out_now = timed_out.contains(target)
                            && matches!(
                                event,
                                Event::Operator {
                                    command: OperatorCommand::RetryFailed
                                }
                            )
                            && *cause == Cause::OperatorRetry;
                        assert!(
                            failed_now || timed_out_now,
                            "target {target} dispatched again while {s:?}: {c:?}"
                        );
                    }
                    other => panic!("target {target} dispatched again from {other:?}: {c:?}"),
                }
            }
            _ => {}
        }
    }
    if after.status() == ExecutionStatus::Paused {
        assert!(
            dispatched_now.is_empty(),
            "dispatch in a step that ends paused"
        );
    }
    if matches!(after.status(), ExecutionStatus::RollingBack) || after.status().is_terminal() {
        seen.ended_dispatching = true;
    }
    // max_in_flight
    let totals = after.totals();
    if let Some(cap) = case.spec.max_in_flight {
        assert!(
            totals.in_flight() <= cap,
            "{} in flight > {cap}",
            totals.in_flight()
        );
    }
    // counts add up
    assert_eq!(totals.total(), u64::from(n));
    let progress = after.progress();
    let mut sum = 0u64;
    for w in &progress.waves {
        assert_eq!(
            w.counts.total(),
            u64::from(w.size),
            "wave {} counts",
            w.wave
        );
        sum += u64::from(w.size);
    }
    assert_eq!(sum, u64::from(n));
    let recounted = recount(after);
    for (i, state) in [
        TargetState::Pending,
        TargetState::Dispatched,
        TargetState::Downloading,
        TargetState::Installing,
        TargetState::Verifying,
        TargetState::AwaitingRetry,
        TargetState::Succeeded,
        TargetState::Failed,
        TargetState::TimedOut,
        TargetState::Canceled,
        TargetState::RollingBack,
        TargetState::RolledBack,
        TargetState::RollbackFailed,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(totals.get(state), recounted[i], "count of {state:?}");
    }
}

fn check_end(r: &Rollout) {
    let status = r.status();
    assert!(
        status.is_terminal(),
        "the execution did not end: {status:?} {:?}",
        r.phase()
    );
    for t in 0..r.target_count() {
        let s = r.target_state(t);
        if r.target_attempt(t) > 0 {
            assert!(
                matches!(
                    s,
                    TargetState::Succeeded
                        | TargetState::Failed
                        | TargetState::TimedOut
                        | TargetState::RolledBack
                        | TargetState::RollbackFailed
                        | TargetState::Canceled
                ),
                "touched target {t} ended {s:?}"
            );
        } else {
            assert!(
                s == TargetState::Canceled,
                "untouched target {t} ended {s:?} in a {status:?} execution"
            );
        }
        if status == ExecutionStatus::RolledBack {
            assert!(
                matches!(s, TargetState::RolledBack | TargetState::Canceled),
                "target {t} is {s:?} after a full rollback"
            );
        }
    }
}

/// `default` cases, or `PROPTEST_CASES` for a longer hunt; no failure files.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn invariants_hold_under_any_event_order(case in arb_case()) {
        let mut driver = Driver::new(case);
        driver.run(400);
        check_end(&driver.rollout);
        if std::env::var_os("ENGINE_PROPERTY_STATS").is_some() {
            eprintln!("outcome {:?} after {} events", driver.rollout.status(), driver.log.len());
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn replay_from_any_cut_reaches_the_same_end(case in arb_case()) {
        let spec = case.spec.clone();
        let n = case.fates.len() as u32;
        let mut driver = Driver::new(case);
        driver.run(150);
        let log = driver.log.clone();
        for cut in 0..=log.len() {
            let mut rebuilt = Rollout::replay(spec.clone(), n, log[..cut].iter().cloned()).unwrap();
            for (i, (event, now)) in log.iter().enumerate().skip(cut) {
                let cmds = rebuilt.step(event.clone(), *now);
                prop_assert_eq!(&cmds, &driver.outputs[i], "commands differ at event {} after a cut at {}", i, cut);
            }
            prop_assert!(rebuilt == driver.rollout, "state differs after a cut at {}", cut);
        }
    }
}
