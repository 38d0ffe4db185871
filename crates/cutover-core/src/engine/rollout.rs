//! The state machine: [`Rollout::step`] takes one event and the current time
//! and returns the commands to carry out.
//!
//! Targets are dense indices with 4 bytes of state each; waves are contiguous
//! index ranges, so "latest wave first" is "highest index first". Action
//! deadlines sit in a FIFO that is ordered by construction (every action gets
//! the same timeout and time never goes backwards here), so timeouts cost
//! O(1) each and no scan of the fleet is ever needed on a tick.

use super::Millis;
use super::command::{Cause, Command, Decision, DispatchMode, Trigger};
use super::event::{
    ActionStage, Attempt, Event, MetricSample, OperatorCommand, TargetIndex, WaveIndex,
};
use super::percent::{Percent, WHOLE};
use super::spec::{RolloutSpec, SpecError, Strategy};
use super::state::{
    ExecutionStatus, Phase, Progress, STATE_COUNT, StateCounts, TargetState, WaveProgress,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One target: its action state, last health report and current attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    state: u8,
    /// 0 unknown, 1 healthy, 2 unhealthy.
    health: u8,
    attempt: Attempt,
}

const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_OK: u8 = 1;
const HEALTH_BAD: u8 = 2;

/// When an attempt expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Deadline {
    at: Millis,
    target: TargetIndex,
    attempt: Attempt,
}

/// Why dispatching stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Pause {
    Operator,
    Trigger(Trigger),
}

/// The state of one execution. Build it with [`Rollout::new`], feed it with
/// [`Rollout::step`], rebuild it after a restart with [`Rollout::replay`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    spec: RolloutSpec,
    target_count: u32,
    /// Exclusive end index of each wave.
    ends: Vec<u32>,
    slots: Vec<Slot>,
    wave_counts: Vec<[u32; STATE_COUNT]>,
    totals: [u32; STATE_COUNT],
    status: ExecutionStatus,
    phase: Phase,
    pause: Option<Pause>,
    /// The latest time seen; earlier times are read as this one.
    now: Millis,
    /// The next never-dispatched target of the current wave.
    cursor: u32,
    /// Targets to dispatch again, and whether a person asked for it.
    retry_queue: VecDeque<(TargetIndex, bool)>,
    deadlines: VecDeque<Deadline>,
    rollback_deadlines: VecDeque<Deadline>,
    wave_error_fired: bool,
    wave_success_override: bool,
    /// The gate of the current `Phase::Gate` failed; a resume overrides it.
    gate_failed: bool,
    /// Execution criteria that fired already (a bit per criterion): each
    /// fires at most once, and a person's resume overrides it for good.
    fired: u8,
    /// Latest error rate per target in basis points (`u16::MAX`: none);
    /// allocated on the first sample.
    error_bp: Vec<u16>,
    /// Latest response time per target (`u32::MAX`: none); allocated on the
    /// first sample.
    response_ms: Vec<u32>,
    unhealthy: u32,
    error_sum: u64,
    error_reporting: u32,
    response_sum: u64,
    response_reporting: u32,
    health_since: Option<Millis>,
    error_since: Option<Millis>,
    response_since: Option<Millis>,
    user_reports: u32,
    ignored_reports: u64,
}

impl Rollout {
    /// A pending execution over targets `0..target_count`.
    pub fn new(spec: RolloutSpec, target_count: u32) -> Result<Self, SpecError> {
        spec.validate()?;
        let ends = spec.wave_ends(target_count);
        let mut wave_counts = vec![[0u32; STATE_COUNT]; ends.len()];
        let mut start = 0;
        for (w, &end) in ends.iter().enumerate() {
            wave_counts[w][TargetState::Pending as usize] = end - start;
            start = end;
        }
        let mut totals = [0u32; STATE_COUNT];
        totals[TargetState::Pending as usize] = target_count;
        Ok(Self {
            spec,
            target_count,
            ends,
            slots: vec![Slot::default(); target_count as usize],
            wave_counts,
            totals,
            status: ExecutionStatus::Pending,
            phase: Phase::NotStarted,
            pause: None,
            now: Millis::MIN,
            cursor: 0,
            retry_queue: VecDeque::new(),
            deadlines: VecDeque::new(),
            rollback_deadlines: VecDeque::new(),
            wave_error_fired: false,
            wave_success_override: false,
            gate_failed: false,
            fired: 0,
            error_bp: Vec::new(),
            response_ms: Vec::new(),
            unhealthy: 0,
            error_sum: 0,
            error_reporting: 0,
            response_sum: 0,
            response_reporting: 0,
            health_since: None,
            error_since: None,
            response_since: None,
            user_reports: 0,
            ignored_reports: 0,
        })
    }

    /// Rebuilds the state from the stored events (with `Event::Start` among
    /// them), as it was after the last one. The commands are not returned:
    /// they were carried out before the restart.
    pub fn replay(
        spec: RolloutSpec,
        target_count: u32,
        events: impl IntoIterator<Item = (Event, Millis)>,
    ) -> Result<Self, SpecError> {
        let mut rollout = Self::new(spec, target_count)?;
        let mut sink = Vec::new();
        for (event, now) in events {
            rollout.step_into(event, now, &mut sink);
            sink.clear();
        }
        Ok(rollout)
    }

    /// `step(Event::Start, now)`.
    pub fn start(&mut self, now: Millis) -> Vec<Command> {
        self.step(Event::Start, now)
    }

    /// Applies one event at `now` and returns the commands to carry out.
    pub fn step(&mut self, event: Event, now: Millis) -> Vec<Command> {
        let mut out = Vec::new();
        self.step_into(event, now, &mut out);
        out
    }

    /// [`Rollout::step`] appending to a caller's buffer, to spare an
    /// allocation per event on a large fleet.
    pub fn step_into(&mut self, event: Event, now: Millis, out: &mut Vec<Command>) {
        let now = now.max(self.now);
        self.now = now;
        if self.status.is_terminal() {
            if let Event::Operator { command } = event {
                let why = format!("the execution already ended ({})", self.status.name());
                out.push(Command::Notify {
                    decision: Decision::Ignored { command, why },
                });
            }
            return;
        }
        if self.phase == Phase::NotStarted {
            match event {
                Event::Start => self.on_start(out),
                Event::Operator {
                    command: OperatorCommand::Cancel,
                } => self.cancel(out),
                Event::Operator { command } => {
                    let why = "the execution has not started".to_string();
                    out.push(Command::Notify {
                        decision: Decision::Ignored { command, why },
                    });
                }
                _ => {}
            }
            self.advance(out);
            return;
        }
        self.expire(out);
        match event {
            Event::Start | Event::Tick => {}
            Event::Report {
                target,
                attempt,
                stage,
            } => self.on_report(target, attempt, stage),
            Event::Metrics { target, sample } => self.on_metrics(target, &sample),
            Event::UserReport { .. } => self.user_reports = self.user_reports.saturating_add(1),
            Event::Operator { command } => self.on_operator(command, out),
            Event::GateResult {
                wave,
                passed,
                reason,
                hold,
            } => self.on_gate(wave, passed, reason, hold, out),
        }
        self.evaluate(out);
        self.advance(out);
        self.trim_deadlines();
    }

    /// The execution's status.
    pub fn status(&self) -> ExecutionStatus {
        self.status
    }

    /// Where the execution is between waves.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The trigger the execution is paused on, if a trigger paused it.
    pub fn pause_trigger(&self) -> Option<&Trigger> {
        match &self.pause {
            Some(Pause::Trigger(t)) => Some(t),
            _ => None,
        }
    }

    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }

    pub fn target_count(&self) -> u32 {
        self.target_count
    }

    pub fn wave_count(&self) -> u32 {
        self.ends.len() as u32
    }

    /// Targets `range.start..range.end` of `wave`.
    pub fn wave_range(&self, wave: WaveIndex) -> std::ops::Range<u32> {
        let w = wave as usize;
        let start = if w == 0 { 0 } else { self.ends[w - 1] };
        start..self.ends[w]
    }

    /// The wave a target belongs to.
    pub fn wave_of(&self, target: TargetIndex) -> WaveIndex {
        self.ends.partition_point(|&end| end <= target) as WaveIndex
    }

    /// One target's state; out-of-range targets read as pending.
    pub fn target_state(&self, target: TargetIndex) -> TargetState {
        self.slots
            .get(target as usize)
            .map_or(TargetState::Pending, |s| TargetState::from_u8(s.state))
    }

    /// The attempt a target's reports must carry now (0: never dispatched).
    pub fn target_attempt(&self, target: TargetIndex) -> Attempt {
        self.slots.get(target as usize).map_or(0, |s| s.attempt)
    }

    /// Counts for the whole execution.
    pub fn totals(&self) -> StateCounts {
        StateCounts::from_array(&self.totals)
    }

    /// Counts per wave and in total.
    pub fn progress(&self) -> Progress {
        let waves = (0..self.wave_count())
            .map(|w| {
                let range = self.wave_range(w);
                WaveProgress {
                    wave: w,
                    first: range.start,
                    size: range.end - range.start,
                    counts: StateCounts::from_array(&self.wave_counts[w as usize]),
                }
            })
            .collect();
        Progress {
            status: self.status,
            phase: self.phase,
            targets: self.target_count,
            waves,
            totals: self.totals(),
            ignored_reports: self.ignored_reports,
            user_reports: self.user_reports,
        }
    }

    /// When the caller should send `Event::Tick` next: the earliest action or
    /// rollback timeout, bake or monitor end, or criterion window. `None`
    /// when nothing is timed (or the execution ended).
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.status.is_terminal() || self.phase == Phase::NotStarted {
            return None;
        }
        let mut best: Option<Millis> = None;
        let mut consider = |t: Millis| best = Some(best.map_or(t, |b: Millis| b.min(t)));
        if let Some(d) = self.deadlines.front() {
            consider(d.at);
        }
        if let Some(d) = self.rollback_deadlines.front() {
            consider(d.at);
        }
        if self.pause.is_none() {
            match self.phase {
                Phase::Bake { until, .. } => consider(until),
                Phase::Monitor { until } if until > self.now => consider(until),
                _ => {}
            }
        }
        if matches!(
            self.status,
            ExecutionStatus::Running | ExecutionStatus::Paused
        ) {
            let c = &self.spec.criteria;
            if c.health_check_failure
                && self.fired & 2 == 0
                && let Some(since) = self.health_since
            {
                consider(since.saturating_add(c.health_failing_for_ms));
            }
            if c.max_error_rate.is_some()
                && self.fired & 4 == 0
                && let Some(since) = self.error_since
            {
                consider(since.saturating_add(c.error_rate_for_ms));
            }
            if c.performance_degradation.is_some()
                && self.fired & 8 == 0
                && let Some(since) = self.response_since
            {
                consider(since.saturating_add(c.degradation_for_ms));
            }
        }
        best
    }

    /// Bytes of heap the state owns, from the capacities of its vectors and
    /// queues (what the allocator was asked for, without its own overhead),
    /// plus the struct itself. Comparable across runs; a lower bound on RSS.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let steps = match &self.spec.strategy {
            Strategy::Canary { steps, .. } => steps.capacity() * size_of::<Percent>(),
            _ => 0,
        };
        size_of::<Self>()
            + steps
            + self.ends.capacity() * size_of::<u32>()
            + self.slots.capacity() * size_of::<Slot>()
            + self.wave_counts.capacity() * size_of::<[u32; STATE_COUNT]>()
            + self.retry_queue.capacity() * size_of::<(TargetIndex, bool)>()
            + self.deadlines.capacity() * size_of::<Deadline>()
            + self.rollback_deadlines.capacity() * size_of::<Deadline>()
            + self.error_bp.capacity() * size_of::<u16>()
            + self.response_ms.capacity() * size_of::<u32>()
    }

    // ---- events ----

    fn on_start(&mut self, out: &mut Vec<Command>) {
        self.status = ExecutionStatus::Running;
        out.push(Command::Notify {
            decision: Decision::Started {
                targets: self.target_count,
                waves: self.wave_count(),
                strategy: self.spec.strategy.name().to_string(),
            },
        });
        if self.ends.is_empty() {
            self.phase = Phase::Monitor { until: self.now };
        } else {
            self.begin_wave(0, out);
        }
    }

    fn on_report(&mut self, target: TargetIndex, attempt: Attempt, stage: ActionStage) {
        let Some(slot) = self.slots.get(target as usize).copied() else {
            self.ignored_reports += 1;
            return;
        };
        let state = TargetState::from_u8(slot.state);
        if attempt != slot.attempt || attempt == 0 {
            self.ignored_reports += 1;
            return;
        }
        let next = match (state, stage) {
            (s, ActionStage::Downloading) if s.is_in_flight() && s < TargetState::Downloading => {
                TargetState::Downloading
            }
            (s, ActionStage::Installing) if s.is_in_flight() && s < TargetState::Installing => {
                TargetState::Installing
            }
            (s, ActionStage::Verifying) if s.is_in_flight() && s < TargetState::Verifying => {
                TargetState::Verifying
            }
            (s, ActionStage::Succeeded) if s.is_in_flight() => TargetState::Succeeded,
            (s, ActionStage::Failed { transient, .. }) if s.is_in_flight() => {
                if transient && attempt <= Attempt::from(self.spec.max_retries) {
                    self.retry_queue.push_back((target, false));
                    TargetState::AwaitingRetry
                } else {
                    TargetState::Failed
                }
            }
            (TargetState::RollingBack, ActionStage::RolledBack) => TargetState::RolledBack,
            (TargetState::RollingBack, ActionStage::Failed { .. }) => TargetState::RollbackFailed,
            _ => {
                self.ignored_reports += 1;
                return;
            }
        };
        self.set_state(target, next);
    }

    fn on_metrics(&mut self, target: TargetIndex, sample: &MetricSample) {
        let Some(slot) = self.slots.get(target as usize).copied() else {
            return;
        };
        let state = TargetState::from_u8(slot.state);
        let runs_new_version = slot.attempt > 0
            && (state.is_in_flight()
                || matches!(
                    state,
                    TargetState::Succeeded
                        | TargetState::Failed
                        | TargetState::TimedOut
                        | TargetState::AwaitingRetry
                ));
        if !runs_new_version {
            return;
        }
        let t = target as usize;
        if let Some(healthy) = sample.healthy {
            let new = if healthy { HEALTH_OK } else { HEALTH_BAD };
            let old = slot.health;
            if old == HEALTH_BAD && new != HEALTH_BAD {
                self.unhealthy -= 1;
            } else if old != HEALTH_BAD && new == HEALTH_BAD {
                self.unhealthy += 1;
            }
            self.slots[t].health = new;
        }
        if let Some(rate) = sample.error_rate {
            if self.error_bp.is_empty() {
                self.error_bp = vec![u16::MAX; self.target_count as usize];
            }
            let old = self.error_bp[t];
            if old == u16::MAX {
                self.error_reporting += 1;
            } else {
                self.error_sum -= u64::from(old);
            }
            let bp = rate.basis_points() as u16;
            self.error_bp[t] = bp;
            self.error_sum += u64::from(bp);
        }
        if let Some(ms) = sample.response_ms {
            if self.response_ms.is_empty() {
                self.response_ms = vec![u32::MAX; self.target_count as usize];
            }
            let ms = ms.min(u32::MAX - 1);
            let old = self.response_ms[t];
            if old == u32::MAX {
                self.response_reporting += 1;
            } else {
                self.response_sum -= u64::from(old);
            }
            self.response_ms[t] = ms;
            self.response_sum += u64::from(ms);
        }
        self.update_conditions();
    }

    /// Starts or clears the clocks of the windowed criteria.
    fn update_conditions(&mut self) {
        let now = self.now;
        let set = |since: &mut Option<Millis>, holds: bool| {
            if !holds {
                *since = None;
            } else if since.is_none() {
                *since = Some(now);
            }
        };
        set(&mut self.health_since, self.unhealthy > 0);
        let c = &self.spec.criteria;
        let error_high = c.max_error_rate.is_some_and(|max| {
            max.exceeded_by(self.error_sum, u64::from(self.error_reporting) * WHOLE)
        });
        set(&mut self.error_since, error_high);
        let slow = match (c.performance_degradation, self.spec.baseline.response_ms) {
            (Some(max), Some(baseline)) if self.response_reporting > 0 => {
                // mean > baseline × (1 + max): sum × WHOLE > baseline × n × (WHOLE + max)
                u128::from(self.response_sum) * u128::from(WHOLE)
                    > u128::from(baseline)
                        * u128::from(self.response_reporting)
                        * (u128::from(WHOLE) + u128::from(max.basis_points()))
            }
            _ => false,
        };
        set(&mut self.response_since, slow);
    }

    fn on_operator(&mut self, command: OperatorCommand, out: &mut Vec<Command>) {
        let ignore = |out: &mut Vec<Command>, why: &str| {
            out.push(Command::Notify {
                decision: Decision::Ignored {
                    command,
                    why: why.to_string(),
                },
            });
        };
        if self.status == ExecutionStatus::RollingBack {
            return ignore(out, "a rollback is in progress");
        }
        match command {
            OperatorCommand::Pause => {
                if self.pause.is_some() {
                    return ignore(out, "the execution is already paused");
                }
                self.pause = Some(Pause::Operator);
                self.status = ExecutionStatus::Paused;
                out.push(Command::Notify {
                    decision: Decision::Paused,
                });
            }
            OperatorCommand::Resume => {
                let Some(pause) = self.pause.take() else {
                    return ignore(out, "the execution is not paused");
                };
                self.status = ExecutionStatus::Running;
                let overriding = match pause {
                    Pause::Operator => None,
                    Pause::Trigger(trigger) => {
                        if let Trigger::SuccessThreshold { .. } = trigger {
                            self.wave_success_override = true;
                        }
                        Some(trigger)
                    }
                };
                out.push(Command::Notify {
                    decision: Decision::Resumed { overriding },
                });
                // A failed gate stays failed until a person resumes past it,
                // even if another trigger paused the execution since.
                if let Phase::Gate { wave } = self.phase
                    && self.gate_failed
                {
                    self.gate_failed = false;
                    let reason = "failed, overridden by an operator".to_string();
                    out.push(Command::Notify {
                        decision: Decision::GatePassed { wave, reason },
                    });
                    self.after_gate(wave, out);
                }
            }
            OperatorCommand::Cancel => self.cancel(out),
            OperatorCommand::Rollback => {
                self.start_rollback(Trigger::Operator, Cause::OperatorRollback, out)
            }
            OperatorCommand::Promote => {
                let Phase::Bake { wave, .. } = self.phase else {
                    return ignore(out, "no wave is baking");
                };
                out.push(Command::Notify {
                    decision: Decision::BakeEnded {
                        wave,
                        promoted: true,
                    },
                });
                self.after_bake(wave, out);
            }
            OperatorCommand::RetryFailed => {
                let switched = matches!(self.spec.strategy, Strategy::BlueGreen)
                    && matches!(self.phase, Phase::Monitor { .. });
                if switched {
                    return ignore(out, "the targets were already switched");
                }
                let mut count = 0u32;
                for t in 0..self.cursor {
                    let s = self.target_state(t);
                    if matches!(s, TargetState::Failed | TargetState::TimedOut) {
                        self.set_state(t, TargetState::AwaitingRetry);
                        self.retry_queue.push_back((t, true));
                        count += 1;
                    }
                }
                if count == 0 {
                    return ignore(out, "no target has failed");
                }
                self.wave_error_fired = false;
                if let Some(Pause::Trigger(
                    Trigger::SuccessThreshold { .. } | Trigger::ErrorThreshold { .. },
                )) = self.pause
                {
                    self.pause = None;
                    self.status = ExecutionStatus::Running;
                }
                out.push(Command::Notify {
                    decision: Decision::RetryRequested { targets: count },
                });
            }
        }
    }

    fn on_gate(
        &mut self,
        wave: WaveIndex,
        passed: bool,
        reason: String,
        hold: bool,
        out: &mut Vec<Command>,
    ) {
        if self.phase != (Phase::Gate { wave }) || self.gate_failed {
            return;
        }
        if passed {
            out.push(Command::Notify {
                decision: Decision::GatePassed { wave, reason },
            });
            self.after_gate(wave, out);
        } else if hold {
            // Waiting for a person is not a failure: no rollback, whatever
            // auto_rollback says; a resume passes the gate.
            self.gate_failed = true;
            if self.pause.is_none() {
                self.pause = Some(Pause::Trigger(Trigger::GateHeld {
                    wave,
                    reason: reason.clone(),
                }));
                self.status = ExecutionStatus::Paused;
            }
            out.push(Command::Notify {
                decision: Decision::GateHeld { wave, reason },
            });
        } else {
            self.gate_failed = true;
            self.abort(Trigger::GateFailed { wave, reason }, out);
        }
    }

    // ---- time ----

    /// Times out actions and rollbacks whose deadline passed.
    fn expire(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let mut timed_out = 0u32;
        while let Some(d) = self.deadlines.front().copied() {
            if d.at > now {
                break;
            }
            self.deadlines.pop_front();
            let slot = self.slots[d.target as usize];
            if slot.attempt == d.attempt && TargetState::from_u8(slot.state).is_in_flight() {
                self.set_state(d.target, TargetState::TimedOut);
                out.push(Command::CancelAction {
                    target: d.target,
                    attempt: d.attempt,
                    cause: Cause::Timeout,
                });
                timed_out += 1;
            }
        }
        if timed_out > 0 {
            out.push(Command::Notify {
                decision: Decision::TimedOut {
                    targets: timed_out,
                    timeout_ms: self.spec.action_timeout_ms,
                },
            });
        }
        while let Some(d) = self.rollback_deadlines.front().copied() {
            if d.at > now {
                break;
            }
            self.rollback_deadlines.pop_front();
            let slot = self.slots[d.target as usize];
            if slot.attempt == d.attempt
                && TargetState::from_u8(slot.state) == TargetState::RollingBack
            {
                self.set_state(d.target, TargetState::RollbackFailed);
            }
        }
    }

    /// Drops queue heads that no longer matter, so `next_deadline` is exact.
    fn trim_deadlines(&mut self) {
        while let Some(d) = self.deadlines.front() {
            let slot = self.slots[d.target as usize];
            if slot.attempt == d.attempt && TargetState::from_u8(slot.state).is_in_flight() {
                break;
            }
            self.deadlines.pop_front();
        }
        while let Some(d) = self.rollback_deadlines.front() {
            let slot = self.slots[d.target as usize];
            if slot.attempt == d.attempt
                && TargetState::from_u8(slot.state) == TargetState::RollingBack
            {
                break;
            }
            self.rollback_deadlines.pop_front();
        }
    }

    // ---- judgement ----

    /// Judges the current wave's error threshold and the execution criteria;
    /// the first that fires aborts.
    fn evaluate(&mut self, out: &mut Vec<Command>) {
        if !matches!(
            self.status,
            ExecutionStatus::Running | ExecutionStatus::Paused
        ) {
            return;
        }
        if let Some(trigger) = self.check_wave_errors().or_else(|| self.check_criteria()) {
            self.abort(trigger, out);
        }
    }

    fn check_wave_errors(&mut self) -> Option<Trigger> {
        let Phase::Wave { wave } = self.phase else {
            return None;
        };
        if self.wave_error_fired {
            return None;
        }
        let c = &self.wave_counts[wave as usize];
        let failed = c[TargetState::Failed as usize] + c[TargetState::TimedOut as usize];
        let finished = failed + c[TargetState::Succeeded as usize];
        let minimum = self.spec.min_finished_for_error_rate;
        if finished < minimum || finished == 0 {
            return None;
        }
        let threshold = self.spec.error_threshold;
        let over = match threshold {
            super::percent::Threshold::Count(limit) => failed > limit,
            super::percent::Threshold::Percent(p) => {
                p.exceeded_by(u64::from(failed), u64::from(finished))
            }
        };
        if !over {
            return None;
        }
        self.wave_error_fired = true;
        Some(Trigger::ErrorThreshold {
            wave,
            failed,
            finished,
            threshold,
            minimum,
        })
    }

    fn check_criteria(&mut self) -> Option<Trigger> {
        let now = self.now;
        let c = &self.spec.criteria;
        let trigger = if let Some(max) = c.max_failure_rate.filter(|_| self.fired & 1 == 0) {
            let failed = self.totals[TargetState::Failed as usize]
                + self.totals[TargetState::TimedOut as usize];
            let finished = failed + self.totals[TargetState::Succeeded as usize];
            let minimum = self.spec.min_finished_for_error_rate;
            (finished >= minimum && max.exceeded_by(u64::from(failed), u64::from(finished)))
                .then_some(Trigger::FailureRate {
                    failed,
                    finished,
                    max,
                    minimum,
                })
        } else {
            None
        };
        let trigger = trigger.or_else(|| {
            let since = self.health_since?;
            (c.health_check_failure
                && self.fired & 2 == 0
                && now - since >= c.health_failing_for_ms)
                .then_some(Trigger::HealthFailing {
                    unhealthy: self.unhealthy,
                    since,
                    window_ms: c.health_failing_for_ms,
                })
        });
        let trigger = trigger.or_else(|| {
            let since = self.error_since?;
            let max = c.max_error_rate?;
            (self.fired & 4 == 0 && now - since >= c.error_rate_for_ms).then_some(
                Trigger::ErrorRate {
                    rate_sum_bp: self.error_sum,
                    reporting: self.error_reporting,
                    max,
                    since,
                    window_ms: c.error_rate_for_ms,
                },
            )
        });
        let trigger = trigger.or_else(|| {
            let since = self.response_since?;
            let max = c.performance_degradation?;
            let baseline_ms = self.spec.baseline.response_ms?;
            (self.fired & 8 == 0 && now - since >= c.degradation_for_ms).then_some(
                Trigger::Performance {
                    response_sum_ms: self.response_sum,
                    reporting: self.response_reporting,
                    baseline_ms,
                    max,
                    since,
                    window_ms: c.degradation_for_ms,
                },
            )
        });
        let trigger = trigger.or_else(|| {
            let limit = c.user_reported_issues?;
            (self.fired & 16 == 0 && self.user_reports >= limit).then_some(Trigger::UserReports {
                count: self.user_reports,
                limit,
            })
        });
        if let Some(t) = &trigger {
            self.fired |= t.latch_bit();
        }
        trigger
    }

    /// A trigger fired: roll back, or pause for a person.
    fn abort(&mut self, trigger: Trigger, out: &mut Vec<Command>) {
        if self.spec.auto_rollback {
            self.start_rollback(trigger, Cause::Abort, out);
        } else {
            self.pause = Some(Pause::Trigger(trigger.clone()));
            self.status = ExecutionStatus::Paused;
            out.push(Command::Notify {
                decision: Decision::Aborted {
                    trigger,
                    rolling_back: 0,
                    auto_rollback: false,
                },
            });
        }
    }

    // ---- moving on ----

    /// Moves through the phases as far as the state allows.
    fn advance(&mut self, out: &mut Vec<Command>) {
        loop {
            match self.phase {
                Phase::NotStarted | Phase::Done => return,
                Phase::RollingBack => {
                    if self.totals[TargetState::RollingBack as usize] == 0 {
                        self.finish_rollback(out);
                    }
                    return;
                }
                _ => {}
            }
            if self.pause.is_some() {
                return;
            }
            // A settled wave is judged before anything else is dispatched,
            // so that an abort is never preceded by a dispatch in one step.
            if !matches!(self.phase, Phase::Wave { wave } if self.wave_settled(wave)) {
                self.fill(out);
            }
            match self.phase {
                Phase::Wave { wave } => {
                    if !self.wave_settled(wave) {
                        return;
                    }
                    let c = &self.wave_counts[wave as usize];
                    let succeeded = c[TargetState::Succeeded as usize];
                    let range = self.wave_range(wave);
                    let size = range.end - range.start;
                    let threshold = self.spec.success_threshold;
                    let met = succeeded >= threshold.of_ceil(size);
                    if met || self.wave_success_override {
                        out.push(Command::Notify {
                            decision: Decision::WavePassed {
                                wave,
                                succeeded,
                                size,
                                threshold,
                                overridden: !met,
                            },
                        });
                        self.after_wave(wave, out);
                    } else {
                        self.abort(
                            Trigger::SuccessThreshold {
                                wave,
                                succeeded,
                                size,
                                threshold,
                            },
                            out,
                        );
                    }
                }
                Phase::Bake { wave, until } => {
                    if self.now < until {
                        return;
                    }
                    out.push(Command::Notify {
                        decision: Decision::BakeEnded {
                            wave,
                            promoted: false,
                        },
                    });
                    self.after_bake(wave, out);
                }
                Phase::Monitor { until } => {
                    let busy = self.totals_in_flight() > 0
                        || self.totals[TargetState::AwaitingRetry as usize] > 0;
                    if self.now < until || busy {
                        return;
                    }
                    self.finish_succeeded(out);
                }
                Phase::Gate { .. } | Phase::NotStarted | Phase::Done | Phase::RollingBack => return,
            }
        }
    }

    /// Dispatches retries, then the current wave's next targets, up to
    /// `max_in_flight`.
    fn fill(&mut self, out: &mut Vec<Command>) {
        if self.status != ExecutionStatus::Running {
            return;
        }
        let cap = self.spec.max_in_flight.unwrap_or(u32::MAX);
        let mut in_flight = self.totals_in_flight();
        let wave_end = match self.phase {
            Phase::Wave { wave } => self.ends[wave as usize],
            _ => self.cursor,
        };
        while in_flight < cap {
            if let Some((t, by_operator)) = self.retry_queue.pop_front() {
                if self.target_state(t) != TargetState::AwaitingRetry {
                    continue;
                }
                let cause = if by_operator {
                    Cause::OperatorRetry
                } else {
                    Cause::Retry
                };
                self.dispatch(t, cause, out);
            } else if self.cursor < wave_end {
                let t = self.cursor;
                self.cursor += 1;
                self.dispatch(t, Cause::Wave, out);
            } else {
                break;
            }
            in_flight += 1;
        }
    }

    fn dispatch(&mut self, target: TargetIndex, cause: Cause, out: &mut Vec<Command>) {
        let slot = &mut self.slots[target as usize];
        slot.attempt = slot.attempt.saturating_add(1);
        let attempt = slot.attempt;
        self.set_state(target, TargetState::Dispatched);
        self.deadlines.push_back(Deadline {
            at: self.now.saturating_add(self.spec.action_timeout_ms),
            target,
            attempt,
        });
        let mode = match self.spec.strategy {
            Strategy::BlueGreen => DispatchMode::Stage,
            _ => DispatchMode::Install,
        };
        out.push(Command::Dispatch {
            target,
            wave: self.wave_of(target),
            attempt,
            mode,
            cause,
        });
    }

    fn wave_settled(&self, wave: WaveIndex) -> bool {
        let c = &self.wave_counts[wave as usize];
        let busy = [
            TargetState::Pending,
            TargetState::Dispatched,
            TargetState::Downloading,
            TargetState::Installing,
            TargetState::Verifying,
            TargetState::AwaitingRetry,
        ];
        busy.iter().all(|&s| c[s as usize] == 0)
    }

    fn totals_in_flight(&self) -> u32 {
        self.totals[1] + self.totals[2] + self.totals[3] + self.totals[4]
    }

    fn begin_wave(&mut self, wave: WaveIndex, out: &mut Vec<Command>) {
        self.phase = Phase::Wave { wave };
        self.wave_error_fired = false;
        self.wave_success_override = false;
        let range = self.wave_range(wave);
        self.cursor = range.start;
        out.push(Command::Notify {
            decision: Decision::WaveStarted {
                wave,
                waves: self.wave_count(),
                targets: range.end - range.start,
            },
        });
    }

    fn after_wave(&mut self, wave: WaveIndex, out: &mut Vec<Command>) {
        let bake = self.spec.bake_ms();
        if bake > 0 && wave + 1 < self.wave_count() {
            let until = self.now.saturating_add(bake);
            self.phase = Phase::Bake { wave, until };
            out.push(Command::Notify {
                decision: Decision::BakeStarted { wave, until },
            });
        } else {
            self.after_bake(wave, out);
        }
    }

    fn after_bake(&mut self, wave: WaveIndex, out: &mut Vec<Command>) {
        if self.spec.gate_after_each_wave {
            self.phase = Phase::Gate { wave };
            self.gate_failed = false;
            out.push(Command::Notify {
                decision: Decision::GateRequested { wave },
            });
            out.push(Command::RunGate { wave });
        } else {
            self.after_gate(wave, out);
        }
    }

    fn after_gate(&mut self, wave: WaveIndex, out: &mut Vec<Command>) {
        if wave + 1 < self.wave_count() {
            self.begin_wave(wave + 1, out);
            return;
        }
        if matches!(self.spec.strategy, Strategy::BlueGreen) {
            let staged = self.totals[TargetState::Succeeded as usize];
            out.push(Command::Notify {
                decision: Decision::Switched { targets: staged },
            });
            for t in 0..self.target_count {
                if self.target_state(t) == TargetState::Succeeded {
                    out.push(Command::Activate { target: t });
                }
            }
        }
        let until = self.now.saturating_add(self.spec.monitor_ms);
        if self.spec.monitor_ms > 0 {
            out.push(Command::Notify {
                decision: Decision::MonitorStarted { until },
            });
        }
        self.phase = Phase::Monitor { until };
    }

    fn finish_succeeded(&mut self, out: &mut Vec<Command>) {
        self.phase = Phase::Done;
        self.status = ExecutionStatus::Succeeded;
        out.push(Command::Notify {
            decision: Decision::Succeeded {
                succeeded: self.totals[TargetState::Succeeded as usize],
                failed: self.totals[TargetState::Failed as usize]
                    + self.totals[TargetState::TimedOut as usize],
                targets: self.target_count,
            },
        });
    }

    /// Rolls back every touched target, latest wave first; cancels the rest.
    fn start_rollback(&mut self, trigger: Trigger, cause: Cause, out: &mut Vec<Command>) {
        let auto_rollback = self.spec.auto_rollback;
        self.pause = None;
        self.status = ExecutionStatus::RollingBack;
        self.phase = Phase::RollingBack;
        self.retry_queue.clear();
        self.deadlines.clear();
        let notice = out.len();
        out.push(Command::Notify {
            decision: Decision::Paused,
        });
        let mut rolling_back = 0u32;
        let at = self.now.saturating_add(self.spec.rollback_timeout_ms);
        for t in (0..self.target_count).rev() {
            let slot = self.slots[t as usize];
            match TargetState::from_u8(slot.state) {
                TargetState::Pending => self.set_state(t, TargetState::Canceled),
                TargetState::Canceled
                | TargetState::RollingBack
                | TargetState::RolledBack
                | TargetState::RollbackFailed => {}
                _ => {
                    let attempt = slot.attempt.saturating_add(1);
                    self.slots[t as usize].attempt = attempt;
                    self.set_state(t, TargetState::RollingBack);
                    self.rollback_deadlines.push_back(Deadline {
                        at,
                        target: t,
                        attempt,
                    });
                    out.push(Command::Rollback {
                        target: t,
                        attempt,
                        cause,
                    });
                    rolling_back += 1;
                }
            }
        }
        out[notice] = Command::Notify {
            decision: Decision::Aborted {
                trigger,
                rolling_back,
                auto_rollback,
            },
        };
    }

    fn finish_rollback(&mut self, out: &mut Vec<Command>) {
        self.phase = Phase::Done;
        let rolled_back = self.totals[TargetState::RolledBack as usize];
        let failed = self.totals[TargetState::RollbackFailed as usize];
        if failed == 0 {
            self.status = ExecutionStatus::RolledBack;
            out.push(Command::Notify {
                decision: Decision::RolledBack {
                    rolled_back,
                    failed,
                },
            });
        } else {
            self.status = ExecutionStatus::Failed;
            out.push(Command::Notify {
                decision: Decision::RollbackIncomplete {
                    rolled_back,
                    failed,
                },
            });
        }
    }

    fn cancel(&mut self, out: &mut Vec<Command>) {
        let mut canceled = 0u32;
        for t in 0..self.target_count {
            let slot = self.slots[t as usize];
            let state = TargetState::from_u8(slot.state);
            if state.is_in_flight() {
                out.push(Command::CancelAction {
                    target: t,
                    attempt: slot.attempt,
                    cause: Cause::OperatorCancel,
                });
            }
            if state.is_in_flight()
                || matches!(state, TargetState::Pending | TargetState::AwaitingRetry)
            {
                self.set_state(t, TargetState::Canceled);
                canceled += 1;
            }
        }
        self.retry_queue.clear();
        self.deadlines.clear();
        self.pause = None;
        self.phase = Phase::Done;
        self.status = ExecutionStatus::Canceled;
        out.push(Command::Notify {
            decision: Decision::Canceled {
                canceled,
                succeeded: self.totals[TargetState::Succeeded as usize],
            },
        });
    }

    fn set_state(&mut self, target: TargetIndex, new: TargetState) {
        let slot = &mut self.slots[target as usize];
        let old = slot.state as usize;
        slot.state = new as u8;
        // A target leaving the new version no longer counts as unhealthy.
        if slot.health == HEALTH_BAD
            && matches!(new, TargetState::RollingBack | TargetState::Canceled)
        {
            slot.health = HEALTH_UNKNOWN;
            self.unhealthy -= 1;
        }
        let wave = self.wave_of(target) as usize;
        self.wave_counts[wave][old] -= 1;
        self.wave_counts[wave][new as usize] += 1;
        self.totals[old] -= 1;
        self.totals[new as usize] += 1;
    }
}
