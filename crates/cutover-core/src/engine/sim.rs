//! A pure fleet simulator for the engine: simulated targets answer commands
//! after pseudo-random delays on a virtual clock, through a time-ordered
//! event queue. No threads, no clock, no IO: the same seed gives the same
//! run, which makes it a benchmark (`cutover bench engine`) and a test
//! driver (the replay tests record its event stream).

use super::command::Command;
use super::event::{ActionStage, Attempt, Event, TargetIndex};
use super::percent::{Percent, Threshold};
use super::prng::SplitMix64;
use super::rollout::Rollout;
use super::spec::{RolloutSpec, SpecError, Strategy};
use super::state::{ExecutionStatus, StateCounts};
use super::{Decision, Millis};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How the simulated targets behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// Failure chance per attempt in parts per million, by wave; waves past
    /// the end use the last entry.
    pub failure_ppm_by_wave: Vec<u32>,
    /// Share of failures that are transient (retryable), parts per million.
    pub transient_ppm: u32,
    /// Chance that a target never answers an attempt (it times out).
    pub silent_ppm: u32,
    /// Chance that a final report is delivered a second time, later.
    pub duplicate_ppm: u32,
    /// Delay before the "installing" report, uniform in this range (ms).
    pub installing_ms: (u64, u64),
    /// Further delay before the final report.
    pub finishing_ms: (u64, u64),
    /// Delay before a rollback is confirmed.
    pub rollback_ms: (u64, u64),
    /// Delay before a gate answers (always passed).
    pub gate_ms: u64,
}

impl Behaviour {
    /// Every attempt fails with `failure_ppm`; answers within about 1.5 min.
    pub fn uniform(failure_ppm: u32) -> Self {
        Self {
            failure_ppm_by_wave: vec![failure_ppm],
            transient_ppm: 500_000,
            silent_ppm: 0,
            duplicate_ppm: 10_000,
            installing_ms: (1_000, 30_000),
            finishing_ms: (1_000, 60_000),
            rollback_ms: (1_000, 20_000),
            gate_ms: 5_000,
        }
    }

    fn failure_ppm(&self, wave: u32) -> u32 {
        let i = (wave as usize).min(self.failure_ppm_by_wave.len().saturating_sub(1));
        self.failure_ppm_by_wave.get(i).copied().unwrap_or(0)
    }
}

/// The two benchmark scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 0.5 % random failures everywhere: must succeed.
    Baseline,
    /// 15 % failures in the second wave (a fifth of them transient): must
    /// abort and roll back.
    Failing,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::Baseline, Scenario::Failing];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::Failing => "failing",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The outcome the scenario must reach.
    pub fn expected(self) -> ExecutionStatus {
        match self {
            Scenario::Baseline => ExecutionStatus::Succeeded,
            Scenario::Failing => ExecutionStatus::RolledBack,
        }
    }

    /// A canary 1 → 10 → 50 → 100 % with a 10 min bake, a gate after each
    /// wave, one retry of transient failures, success at 95 %, abort above
    /// 10 % failed once 100 targets finished, and auto_rollback.
    pub fn spec(self) -> RolloutSpec {
        let p = |x| Percent::whole(x).unwrap_or(Percent::HUNDRED);
        let mut spec = RolloutSpec::new(Strategy::Canary {
            steps: vec![p(1), p(10), p(50), p(100)],
            canary_percentage: None,
            bake_ms: 10 * 60 * 1000,
        });
        spec.success_threshold = Threshold::percent(95);
        spec.error_threshold = Threshold::percent(10);
        spec.min_finished_for_error_rate = 100;
        spec.max_retries = 1;
        spec.gate_after_each_wave = true;
        spec.auto_rollback = true;
        spec.criteria.max_failure_rate = Some(p(10));
        spec
    }

    pub fn behaviour(self) -> Behaviour {
        match self {
            Scenario::Baseline => Behaviour::uniform(5_000),
            Scenario::Failing => {
                let mut b = Behaviour::uniform(5_000);
                // A bad build fails the same way again: few failures are transient.
                b.failure_ppm_by_wave = vec![5_000, 150_000, 5_000];
                b.transient_ppm = 200_000;
                b
            }
        }
    }
}

/// What a simulated run produced.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub targets: u32,
    pub status: ExecutionStatus,
    pub totals: StateCounts,
    /// Events fed to the engine.
    pub events: u64,
    /// Commands the engine returned.
    pub commands: u64,
    /// Virtual time from start to end.
    pub virtual_ms: Millis,
    /// [`Rollout::heap_bytes`] at the end (the vectors never shrink, so it
    /// is the peak).
    pub engine_bytes: usize,
    pub decisions: Vec<Decision>,
    /// The events with their times, when recording was asked for.
    pub log: Vec<(Event, Millis)>,
}

impl SimReport {
    pub fn bytes_per_target(&self) -> f64 {
        self.engine_bytes as f64 / f64::from(self.targets.max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Installing,
    Succeeded,
    Failed { transient: bool },
    RolledBack,
    Gate { wave: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    at: Millis,
    seq: u64,
    target: TargetIndex,
    attempt: Attempt,
    answer: Answer,
}

/// A simulated fleet driving one [`Rollout`].
pub struct Simulation {
    rollout: Rollout,
    behaviour: Behaviour,
    rng: SplitMix64,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    now: Millis,
    events: u64,
    commands: u64,
    decisions: Vec<Decision>,
    record: bool,
    log: Vec<(Event, Millis)>,
    buffer: Vec<Command>,
}

/// The virtual time the runs start at (2026-01-01T00:00:00Z).
pub const EPOCH: Millis = 1_767_225_600_000;

impl Simulation {
    pub fn new(
        spec: RolloutSpec,
        targets: u32,
        behaviour: Behaviour,
        seed: u64,
    ) -> Result<Self, SpecError> {
        Ok(Self {
            rollout: Rollout::new(spec, targets)?,
            behaviour,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            now: EPOCH,
            events: 0,
            commands: 0,
            decisions: Vec::new(),
            record: false,
            log: Vec::new(),
            buffer: Vec::new(),
        })
    }

    /// Keeps every event fed to the engine, with its time, in the report.
    pub fn recording(mut self) -> Self {
        self.record = true;
        self
    }

    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// Feeds one event to the engine and lets the fleet react.
    pub fn feed(&mut self, event: Event, now: Millis) {
        self.now = self.now.max(now);
        if self.record {
            self.log.push((event.clone(), now));
        }
        self.events += 1;
        let mut out = std::mem::take(&mut self.buffer);
        self.rollout.step_into(event, now, &mut out);
        self.commands += out.len() as u64;
        for command in out.drain(..) {
            self.react(command);
        }
        self.buffer = out;
    }

    /// Runs from the start until the execution ends or nothing is left to
    /// happen, with a safety cap of events.
    pub fn run(mut self, max_events: u64) -> SimReport {
        self.drive(max_events);
        self.report()
    }

    /// Starts the execution and drives it until it ends, nothing is left to
    /// happen, or `max_events` were fed; the simulation stays inspectable.
    pub fn drive(&mut self, max_events: u64) {
        self.feed(Event::Start, EPOCH);
        while !self.rollout.status().is_terminal() && self.events < max_events {
            let next_answer = self.queue.peek().map(|Reverse(q)| q.at);
            let deadline = self.rollout.next_deadline();
            match (next_answer, deadline) {
                (None, None) => break,
                (Some(at), Some(d)) if d <= at => self.feed(Event::Tick, d.max(self.now)),
                (None, Some(d)) => self.feed(Event::Tick, d.max(self.now)),
                _ => {
                    let Some(Reverse(q)) = self.queue.pop() else {
                        break;
                    };
                    let event = match q.answer {
                        Answer::Installing => Event::Report {
                            target: q.target,
                            attempt: q.attempt,
                            stage: ActionStage::Installing,
                        },
                        Answer::Succeeded => Event::Report {
                            target: q.target,
                            attempt: q.attempt,
                            stage: ActionStage::Succeeded,
                        },
                        Answer::Failed { transient } => Event::Report {
                            target: q.target,
                            attempt: q.attempt,
                            stage: ActionStage::Failed {
                                transient,
                                reason: String::new(),
                            },
                        },
                        Answer::RolledBack => Event::Report {
                            target: q.target,
                            attempt: q.attempt,
                            stage: ActionStage::RolledBack,
                        },
                        Answer::Gate { wave } => Event::GateResult {
                            wave,
                            passed: true,
                            reason: String::new(),
                            hold: false,
                        },
                    };
                    self.feed(event, q.at);
                }
            }
        }
    }

    /// The figures of the run so far.
    pub fn report(self) -> SimReport {
        SimReport {
            targets: self.rollout.target_count(),
            status: self.rollout.status(),
            totals: self.rollout.totals(),
            events: self.events,
            commands: self.commands,
            virtual_ms: self.now - EPOCH,
            engine_bytes: self.rollout.heap_bytes(),
            decisions: self.decisions,
            log: self.log,
        }
    }

    fn schedule(&mut self, at: Millis, target: TargetIndex, attempt: Attempt, answer: Answer) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            target,
            attempt,
            answer,
        }));
    }

    fn delay(&mut self, range: (u64, u64)) -> Millis {
        self.rng.range(range.0, range.1) as Millis
    }

    fn react(&mut self, command: Command) {
        match command {
            Command::Dispatch {
                target,
                wave,
                attempt,
                ..
            } => {
                if self.rng.chance_ppm(self.behaviour.silent_ppm) {
                    return;
                }
                let installing = self.now + self.delay(self.behaviour.installing_ms);
                self.schedule(installing, target, attempt, Answer::Installing);
                let done = installing + self.delay(self.behaviour.finishing_ms);
                let answer = if self.rng.chance_ppm(self.behaviour.failure_ppm(wave)) {
                    Answer::Failed {
                        transient: self.rng.chance_ppm(self.behaviour.transient_ppm),
                    }
                } else {
                    Answer::Succeeded
                };
                self.schedule(done, target, attempt, answer);
                if self.rng.chance_ppm(self.behaviour.duplicate_ppm) {
                    let late = done + self.delay(self.behaviour.finishing_ms);
                    self.schedule(late, target, attempt, answer);
                }
            }
            Command::Rollback {
                target, attempt, ..
            } => {
                let at = self.now + self.delay(self.behaviour.rollback_ms);
                self.schedule(at, target, attempt, Answer::RolledBack);
            }
            Command::RunGate { wave } => {
                let at = self.now + self.behaviour.gate_ms as Millis;
                self.schedule(at, 0, 0, Answer::Gate { wave });
            }
            Command::Notify { decision } => self.decisions.push(decision),
            Command::Activate { .. } | Command::CancelAction { .. } => {}
        }
    }
}

/// Runs a benchmark scenario over `targets` simulated targets.
pub fn run_scenario(scenario: Scenario, targets: u32, seed: u64) -> Result<SimReport, SpecError> {
    let sim = Simulation::new(scenario.spec(), targets, scenario.behaviour(), seed)?;
    Ok(sim.run(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_succeeds_and_failing_rolls_back() {
        for scenario in Scenario::ALL {
            let report = run_scenario(scenario, 20_000, 42).unwrap();
            assert_eq!(
                report.status,
                scenario.expected(),
                "{}: {:?}",
                scenario.name(),
                report.decisions
            );
            assert_eq!(report.totals.total(), 20_000);
        }
    }

    #[test]
    fn failing_aborts_in_the_second_wave_with_its_reason() {
        let report = run_scenario(Scenario::Failing, 20_000, 7).unwrap();
        let abort = report
            .decisions
            .iter()
            .find(|d| matches!(d, Decision::Aborted { .. }))
            .expect("an abort decision");
        let text = abort.to_string();
        assert!(text.starts_with("wave 2 aborted: error rate"), "{text}");
        assert_eq!(report.totals.succeeded, 0);
        assert_eq!(report.totals.rolled_back + report.totals.canceled, 20_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let a = run_scenario(Scenario::Baseline, 2_000, 9).unwrap();
        let b = run_scenario(Scenario::Baseline, 2_000, 9).unwrap();
        assert_eq!(a.events, b.events);
        assert_eq!(a.totals, b.totals);
        assert_eq!(a.decisions, b.decisions);
    }
}
