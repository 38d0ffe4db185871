//! What the engine is told: target reports, metrics, user reports, timer
//! ticks, operator commands and gate results.
//!
//! Events are persisted by the orchestrator and replayed after a restart, so
//! they are serde values and carry everything the engine needs; the time is
//! passed beside each event, never read.

use super::percent::Percent;
use serde::{Deserialize, Serialize};

/// A target's index in the execution, `0..target_count`. The caller maps its
/// own ids to indices (and orders targets so that wave 0 is the canary).
pub type TargetIndex = u32;
/// A wave's index, from 0. Messages for people count from 1.
pub type WaveIndex = u32;
/// Which dispatch of a target a report answers; the first is 1, each retry
/// and each rollback takes the next number.
pub type Attempt = u16;

/// One input to [`super::Rollout::step`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Begin the execution: the first wave is dispatched.
    Start,
    /// A target's progress on one attempt. Duplicated, late and reordered
    /// reports are harmless: a report for another attempt, or one that
    /// goes backwards (installing after succeeded), is ignored.
    Report {
        target: TargetIndex,
        attempt: Attempt,
        stage: ActionStage,
    },
    /// A target's health and performance after it received the version.
    Metrics {
        target: TargetIndex,
        sample: MetricSample,
    },
    /// A person reported a problem with the new version.
    UserReport {
        #[serde(default)]
        target: Option<TargetIndex>,
        #[serde(default)]
        summary: String,
    },
    /// Time passed; sent at [`super::Rollout::next_deadline`].
    Tick,
    /// A person acted on the execution.
    Operator { command: OperatorCommand },
    /// The gate the engine asked for after a wave has an answer.
    GateResult {
        wave: WaveIndex,
        passed: bool,
        #[serde(default)]
        reason: String,
        /// Not passed because a person must decide it: the execution waits
        /// at the gate (paused, never rolled back) until a resume passes it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hold: bool,
    },
}

/// Where an action stands, as its target reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum ActionStage {
    Downloading,
    Installing,
    Verifying,
    /// Installed and verified (blue-green: staged, ready to switch).
    Succeeded,
    /// The attempt failed; a transient failure may be retried.
    Failed {
        #[serde(default)]
        transient: bool,
        #[serde(default)]
        reason: String,
    },
    /// A rollback attempt restored the previous version.
    RolledBack,
}

/// A metrics sample; absent fields are not measured by this target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricSample {
    pub healthy: Option<bool>,
    /// Share of the target's requests that failed.
    pub error_rate: Option<Percent>,
    /// Mean response time in milliseconds.
    pub response_ms: Option<u32>,
}

/// What a person may do to a running execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Stop dispatching; actions in progress go on.
    Pause,
    /// Go on after a pause. After an abort without auto_rollback this
    /// overrides the trigger: it is not judged again in this execution.
    Resume,
    /// Stop: pending targets are canceled, actions in progress are canceled.
    Cancel,
    /// Roll back every touched target, latest wave first.
    Rollback,
    /// End the current bake now.
    Promote,
    /// Dispatch every failed or timed-out target of the started waves again.
    RetryFailed,
}

impl OperatorCommand {
    pub fn name(self) -> &'static str {
        match self {
            OperatorCommand::Pause => "pause",
            OperatorCommand::Resume => "resume",
            OperatorCommand::Cancel => "cancel",
            OperatorCommand::Rollback => "rollback",
            OperatorCommand::Promote => "promote",
            OperatorCommand::RetryFailed => "retry failed",
        }
    }
}
