//! The rollout engine: a deterministic state machine,
//! `step(state, event, now) -> commands`.
//!
//! **Architecture invariant:** no IO, no clock, no async, no randomness from
//! outside. Time is an argument; decisions are values with a human reason.
//! That is what lets the server persist and replay every execution, and lets
//! the simulator in [`sim`] push a million targets through in one process.
//!
//! Strategies compile to waves (contiguous ranges of target indices). A wave
//! passes when `succeeded >= success_threshold` once all its targets finished
//! (not strict); it aborts as soon as `failed > error_threshold` (strict) with
//! at least `min_finished_for_error_rate` finished. Timeouts count as failed.
//! An abort rolls back every touched target, latest wave first, when
//! auto_rollback is on, and pauses for a person otherwise.

mod command;
mod event;
mod percent;
mod prng;
mod rollout;
pub mod sim;
mod spec;
mod state;

pub use command::{Cause, Command, Decision, DispatchMode, Trigger};
pub use event::{
    ActionStage, Attempt, Event, MetricSample, OperatorCommand, TargetIndex, WaveIndex,
};
pub use percent::{Percent, PercentError, Threshold};
pub use prng::SplitMix64;
pub use rollout::Rollout;
pub use spec::{Baseline, RollbackCriteria, RolloutSpec, SpecError, Strategy};
pub use state::{ExecutionStatus, Phase, Progress, StateCounts, TargetState, WaveProgress};

/// Milliseconds since the Unix epoch; the caller's clock, passed in.
pub type Millis = i64;
