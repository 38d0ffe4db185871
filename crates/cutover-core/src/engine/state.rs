//! The observable state: each target's action state, counts per state, the
//! execution's status and its progress.

use super::Millis;
use super::event::WaveIndex;
use serde::{Deserialize, Serialize};

/// Where one target's action stands in this execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum TargetState {
    /// Not dispatched yet.
    Pending = 0,
    Dispatched,
    Downloading,
    Installing,
    Verifying,
    /// Failed transiently; will be dispatched again.
    AwaitingRetry,
    Succeeded,
    Failed,
    /// Stayed in progress past the action timeout; counts as failed.
    TimedOut,
    Canceled,
    RollingBack,
    RolledBack,
    /// The rollback failed or was not confirmed in time.
    RollbackFailed,
}

/// How many states there are, for count arrays.
pub(crate) const STATE_COUNT: usize = 13;

impl TargetState {
    pub(crate) const ALL: [TargetState; STATE_COUNT] = [
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
    ];

    pub(crate) fn from_u8(v: u8) -> Self {
        Self::ALL[usize::from(v).min(STATE_COUNT - 1)]
    }

    /// An install action is in progress on the target.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            TargetState::Dispatched
                | TargetState::Downloading
                | TargetState::Installing
                | TargetState::Verifying
        )
    }

    /// Nothing more will happen to the target in this execution (unless a
    /// person retries a failure or asks for a rollback).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TargetState::Succeeded
                | TargetState::Failed
                | TargetState::TimedOut
                | TargetState::Canceled
                | TargetState::RolledBack
                | TargetState::RollbackFailed
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Dispatched => "dispatched",
            TargetState::Downloading => "downloading",
            TargetState::Installing => "installing",
            TargetState::Verifying => "verifying",
            TargetState::AwaitingRetry => "awaiting_retry",
            TargetState::Succeeded => "succeeded",
            TargetState::Failed => "failed",
            TargetState::TimedOut => "timed_out",
            TargetState::Canceled => "canceled",
            TargetState::RollingBack => "rolling_back",
            TargetState::RolledBack => "rolled_back",
            TargetState::RollbackFailed => "rollback_failed",
        }
    }
}

/// Targets per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub pending: u32,
    pub dispatched: u32,
    pub downloading: u32,
    pub installing: u32,
    pub verifying: u32,
    pub awaiting_retry: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub timed_out: u32,
    pub canceled: u32,
    pub rolling_back: u32,
    pub rolled_back: u32,
    pub rollback_failed: u32,
}

impl StateCounts {
    pub(crate) fn from_array(a: &[u32; STATE_COUNT]) -> Self {
        Self {
            pending: a[0],
            dispatched: a[1],
            downloading: a[2],
            installing: a[3],
            verifying: a[4],
            awaiting_retry: a[5],
            succeeded: a[6],
            failed: a[7],
            timed_out: a[8],
            canceled: a[9],
            rolling_back: a[10],
            rolled_back: a[11],
            rollback_failed: a[12],
        }
    }

    /// The count for one state.
    pub fn get(&self, state: TargetState) -> u32 {
        self.as_array()[state as usize]
    }

    fn as_array(&self) -> [u32; STATE_COUNT] {
        [
            self.pending,
            self.dispatched,
            self.downloading,
            self.installing,
            self.verifying,
            self.awaiting_retry,
            self.succeeded,
            self.failed,
            self.timed_out,
            self.canceled,
            self.rolling_back,
            self.rolled_back,
            self.rollback_failed,
        ]
    }

    /// Every target counted once.
    pub fn total(&self) -> u64 {
        self.as_array().iter().map(|&c| u64::from(c)).sum()
    }

    /// Install actions in progress.
    pub fn in_flight(&self) -> u32 {
        self.dispatched + self.downloading + self.installing + self.verifying
    }
}

/// The execution's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Pending,
    Running,
    /// By a person, or by a trigger when auto_rollback is off.
    Paused,
    RollingBack,
    Succeeded,
    /// A rollback could not restore every target.
    Failed,
    RolledBack,
    Canceled,
}

impl ExecutionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded
                | ExecutionStatus::Failed
                | ExecutionStatus::RolledBack
                | ExecutionStatus::Canceled
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Paused => "paused",
            ExecutionStatus::RollingBack => "rolling_back",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::RolledBack => "rolled_back",
            ExecutionStatus::Canceled => "canceled",
        }
    }
}

/// Where the execution is between waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    NotStarted,
    /// Dispatching the wave and waiting for its targets to finish.
    Wave {
        wave: WaveIndex,
    },
    /// The wave passed; criteria are watched until `until`.
    Bake {
        wave: WaveIndex,
        until: Millis,
    },
    /// Waiting for `Event::GateResult` for the wave.
    Gate {
        wave: WaveIndex,
    },
    /// Every wave passed; criteria are watched until `until` and until the
    /// last actions finish.
    Monitor {
        until: Millis,
    },
    RollingBack,
    Done,
}

/// One wave's share of the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveProgress {
    pub wave: WaveIndex,
    /// Targets `first..first + size`.
    pub first: u32,
    pub size: u32,
    pub counts: StateCounts,
}

/// A snapshot for the API, the CLI and the reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub status: ExecutionStatus,
    pub phase: Phase,
    pub targets: u32,
    pub waves: Vec<WaveProgress>,
    pub totals: StateCounts,
    /// Reports ignored as duplicated, late, for another attempt or going
    /// backwards.
    pub ignored_reports: u64,
    pub user_reports: u32,
}
