//! What the engine asks for: dispatches, switches, rollbacks, cancellations,
//! gates, and decisions with their human reasons.
//!
//! Per-target commands carry a small [`Cause`] (a million dispatches must not
//! carry a million strings); every decision that explains them is a
//! [`Decision`], emitted once as [`Command::Notify`], whose `Display` is the
//! sentence for the audit log and the reports.

use super::Millis;
use super::event::{Attempt, OperatorCommand, TargetIndex, WaveIndex};
use super::percent::{Percent, Round, Threshold, format_rate};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing the caller must carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Send the action to the target; its reports carry `attempt`.
    Dispatch {
        target: TargetIndex,
        wave: WaveIndex,
        attempt: Attempt,
        mode: DispatchMode,
        cause: Cause,
    },
    /// Blue-green: switch the target to the staged version now.
    Activate { target: TargetIndex },
    /// Restore the previous version (supersedes any action in progress on the
    /// target); the target answers with `attempt`.
    Rollback {
        target: TargetIndex,
        attempt: Attempt,
        cause: Cause,
    },
    /// Stop the action in progress; later reports for it are ignored.
    CancelAction {
        target: TargetIndex,
        attempt: Attempt,
        cause: Cause,
    },
    /// Run the gates after `wave` and answer with `Event::GateResult`.
    RunGate { wave: WaveIndex },
    /// A decision, for the audit log, notifications and the reports.
    Notify { decision: Decision },
}

/// How a dispatched action installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchMode {
    /// Install and activate.
    Install,
    /// Blue-green: install beside the running version, do not activate.
    Stage,
}

/// Why a per-target command was issued; the matching [`Decision`] says more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The target's wave started.
    Wave,
    /// A transient failure, dispatched again.
    Retry,
    /// A person asked to retry failed targets.
    OperatorRetry,
    /// The action stayed in progress past its timeout.
    Timeout,
    /// The execution aborted on a trigger.
    Abort,
    /// A person asked for a rollback.
    OperatorRollback,
    /// A person canceled the execution.
    OperatorCancel,
    /// Blue-green: every staged target switches at once.
    Switch,
}

/// Why an execution aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    /// A wave's failures went above its error threshold.
    ErrorThreshold {
        wave: WaveIndex,
        failed: u32,
        finished: u32,
        threshold: Threshold,
        minimum: u32,
    },
    /// A wave finished with fewer successes than its success threshold.
    SuccessThreshold {
        wave: WaveIndex,
        succeeded: u32,
        size: u32,
        threshold: Threshold,
    },
    /// The gate after a wave failed.
    GateFailed { wave: WaveIndex, reason: String },
    /// The gate after a wave waits for a person (a manual gate, or one
    /// nothing can run automatically); a resume passes it.
    GateHeld { wave: WaveIndex, reason: String },
    /// `max_failure_rate` over the whole execution.
    FailureRate {
        failed: u32,
        finished: u32,
        max: Percent,
        minimum: u32,
    },
    /// Targets reported unhealthy (for at least the window).
    HealthFailing {
        unhealthy: u32,
        since: Millis,
        window_ms: Millis,
    },
    /// The mean reported error rate stayed above the limit.
    ErrorRate {
        rate_sum_bp: u64,
        reporting: u32,
        max: Percent,
        since: Millis,
        window_ms: Millis,
    },
    /// The mean response time stayed worse than the baseline allows.
    Performance {
        response_sum_ms: u64,
        reporting: u32,
        baseline_ms: u32,
        max: Percent,
        since: Millis,
        window_ms: Millis,
    },
    /// Enough people reported problems.
    UserReports { count: u32, limit: u32 },
    /// A person asked for it.
    Operator,
}

impl Trigger {
    /// Which criterion this is, for the latch that a person's resume sets.
    pub(crate) fn latch_bit(&self) -> u8 {
        match self {
            Trigger::FailureRate { .. } => 1,
            Trigger::HealthFailing { .. } => 2,
            Trigger::ErrorRate { .. } => 4,
            Trigger::Performance { .. } => 8,
            Trigger::UserReports { .. } => 16,
            _ => 0,
        }
    }

    /// The wave the trigger belongs to, if it is a wave's.
    pub fn wave(&self) -> Option<WaveIndex> {
        match self {
            Trigger::ErrorThreshold { wave, .. }
            | Trigger::SuccessThreshold { wave, .. }
            | Trigger::GateFailed { wave, .. }
            | Trigger::GateHeld { wave, .. } => Some(*wave),
            _ => None,
        }
    }
}

fn window(f: &mut fmt::Formatter<'_>, window_ms: Millis) -> fmt::Result {
    if window_ms > 0 {
        write!(f, " for {}", Duration(window_ms))
    } else {
        Ok(())
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::ErrorThreshold {
                failed,
                finished,
                threshold,
                minimum,
                ..
            } => match threshold {
                Threshold::Percent(p) => write!(
                    f,
                    "error rate {} > {p} over {finished} finished targets (minimum {minimum})",
                    format_rate(u64::from(*failed), u64::from(*finished), Round::Up)
                ),
                Threshold::Count(c) => write!(
                    f,
                    "{failed} failed targets > {c} allowed over {finished} finished targets (minimum {minimum})"
                ),
            },
            Trigger::SuccessThreshold {
                succeeded,
                size,
                threshold,
                ..
            } => write!(
                f,
                "only {succeeded} of {size} targets succeeded ({}), below the success threshold of {threshold}",
                format_rate(u64::from(*succeeded), u64::from(*size), Round::Down)
            ),
            Trigger::GateFailed { reason, .. } => {
                if reason.is_empty() {
                    write!(f, "gate failed")
                } else {
                    write!(f, "gate failed: {reason}")
                }
            }
            Trigger::GateHeld { reason, .. } => {
                if reason.is_empty() {
                    write!(
                        f,
                        "gate waits for a person: resume the deployment to pass it"
                    )
                } else {
                    write!(f, "{reason}")
                }
            }
            Trigger::FailureRate {
                failed,
                finished,
                max,
                minimum,
            } => write!(
                f,
                "failure rate {} > {max} over {finished} finished targets of the execution (minimum {minimum})",
                format_rate(u64::from(*failed), u64::from(*finished), Round::Up)
            ),
            Trigger::HealthFailing {
                unhealthy,
                window_ms,
                ..
            } => {
                write!(f, "health checks failing on {unhealthy} targets")?;
                window(f, *window_ms)
            }
            Trigger::ErrorRate {
                rate_sum_bp,
                reporting,
                max,
                window_ms,
                ..
            } => {
                // The mean of basis points, as a rate of (sum / reporting) / 10_000.
                write!(
                    f,
                    "mean error rate {} > {max} over {reporting} reporting targets",
                    format_rate(
                        *rate_sum_bp,
                        u64::from(*reporting) * super::percent::WHOLE,
                        Round::Up
                    )
                )?;
                window(f, *window_ms)
            }
            Trigger::Performance {
                response_sum_ms,
                reporting,
                baseline_ms,
                max,
                window_ms,
                ..
            } => {
                let mean = response_sum_ms.div_ceil(u64::from((*reporting).max(1)));
                write!(
                    f,
                    "mean response time {mean} ms is {} worse than the baseline {baseline_ms} ms (limit {max}) over {reporting} reporting targets",
                    format_rate(
                        response_sum_ms
                            .saturating_sub(u64::from(*baseline_ms) * u64::from(*reporting)),
                        u64::from(*baseline_ms) * u64::from(*reporting),
                        Round::Up
                    )
                )?;
                window(f, *window_ms)
            }
            Trigger::UserReports { count, limit } => {
                write!(f, "{count} user-reported issues (limit {limit})")
            }
            Trigger::Operator => write!(f, "rollback requested by an operator"),
        }
    }
}

/// A duration in milliseconds, printed for people.
struct Duration(Millis);

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms % 60_000 == 0 {
            write!(f, "{} min", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{} s", ms / 1000)
        } else {
            write!(f, "{ms} ms")
        }
    }
}

/// What the engine decided and why; `Display` gives the sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Started {
        targets: u32,
        waves: u32,
        strategy: String,
    },
    WaveStarted {
        wave: WaveIndex,
        waves: u32,
        targets: u32,
    },
    WavePassed {
        wave: WaveIndex,
        succeeded: u32,
        size: u32,
        threshold: Threshold,
        overridden: bool,
    },
    BakeStarted {
        wave: WaveIndex,
        until: Millis,
    },
    BakeEnded {
        wave: WaveIndex,
        promoted: bool,
    },
    GateRequested {
        wave: WaveIndex,
    },
    GatePassed {
        wave: WaveIndex,
        reason: String,
    },
    /// The gate after a wave waits for a person; the execution is paused.
    GateHeld {
        wave: WaveIndex,
        reason: String,
    },
    /// Blue-green: every staged target switches now.
    Switched {
        targets: u32,
    },
    MonitorStarted {
        until: Millis,
    },
    /// A trigger fired: roll back, or pause for a person.
    Aborted {
        trigger: Trigger,
        rolling_back: u32,
        auto_rollback: bool,
    },
    Paused,
    Resumed {
        overriding: Option<Trigger>,
    },
    RetryRequested {
        targets: u32,
    },
    TimedOut {
        targets: u32,
        timeout_ms: Millis,
    },
    Succeeded {
        succeeded: u32,
        failed: u32,
        targets: u32,
    },
    RolledBack {
        rolled_back: u32,
        failed: u32,
    },
    RollbackIncomplete {
        rolled_back: u32,
        failed: u32,
    },
    Canceled {
        canceled: u32,
        succeeded: u32,
    },
    /// A command that makes no sense now, with the reason.
    Ignored {
        command: OperatorCommand,
        why: String,
    },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Started {
                targets,
                waves,
                strategy,
            } => {
                write!(
                    f,
                    "execution started: {strategy} over {targets} targets in {waves} waves"
                )
            }
            Decision::WaveStarted {
                wave,
                waves,
                targets,
            } => {
                write!(f, "wave {} of {waves} started: {targets} targets", wave + 1)
            }
            Decision::WavePassed {
                wave,
                succeeded,
                size,
                threshold,
                overridden,
            } => {
                write!(
                    f,
                    "wave {} passed: {succeeded} of {size} targets succeeded ({}, threshold {threshold})",
                    wave + 1,
                    format_rate(u64::from(*succeeded), u64::from(*size), Round::Down)
                )?;
                if *overridden {
                    write!(f, ", overridden by an operator")
                } else {
                    Ok(())
                }
            }
            Decision::BakeStarted { wave, until } => {
                write!(
                    f,
                    "wave {} baking until {until} while the criteria are watched",
                    wave + 1
                )
            }
            Decision::BakeEnded { wave, promoted } => {
                if *promoted {
                    write!(
                        f,
                        "wave {} promoted by an operator before its bake ended",
                        wave + 1
                    )
                } else {
                    write!(f, "wave {} bake ended with the criteria met", wave + 1)
                }
            }
            Decision::GateRequested { wave } => write!(f, "gate after wave {} requested", wave + 1),
            Decision::GatePassed { wave, reason } => {
                write!(f, "gate after wave {} passed", wave + 1)?;
                if reason.is_empty() {
                    Ok(())
                } else {
                    write!(f, ": {reason}")
                }
            }
            Decision::GateHeld { wave, reason } => {
                write!(f, "gate after wave {} holds the execution", wave + 1)?;
                if reason.is_empty() {
                    Ok(())
                } else {
                    write!(f, ": {reason}")
                }
            }
            Decision::Switched { targets } => {
                write!(f, "switching {targets} staged targets to the new version")
            }
            Decision::MonitorStarted { until } => {
                write!(f, "all waves done; watching the criteria until {until}")
            }
            Decision::Aborted {
                trigger,
                rolling_back,
                auto_rollback,
            } => {
                match trigger.wave() {
                    Some(w) => write!(f, "wave {} aborted: {trigger}", w + 1)?,
                    None => write!(f, "execution aborted: {trigger}")?,
                }
                if *auto_rollback || matches!(trigger, Trigger::Operator) {
                    write!(
                        f,
                        "; rolling back {rolling_back} touched targets, latest wave first"
                    )
                } else {
                    write!(f, "; paused for a decision because auto_rollback is off")
                }
            }
            Decision::Paused => write!(f, "paused by an operator"),
            Decision::Resumed { overriding: None } => write!(f, "resumed by an operator"),
            Decision::Resumed {
                overriding: Some(t),
            } => {
                write!(f, "resumed by an operator, overriding: {t}")
            }
            Decision::RetryRequested { targets } => {
                write!(
                    f,
                    "retry of {targets} failed targets requested by an operator"
                )
            }
            Decision::TimedOut {
                targets,
                timeout_ms,
            } => {
                write!(
                    f,
                    "{targets} actions timed out after {} and count as failed",
                    Duration(*timeout_ms)
                )
            }
            Decision::Succeeded {
                succeeded,
                failed,
                targets,
            } => {
                write!(
                    f,
                    "execution succeeded: {succeeded} of {targets} targets updated, {failed} failed"
                )
            }
            Decision::RolledBack {
                rolled_back,
                failed,
            } => {
                write!(f, "execution rolled back: {rolled_back} targets restored")?;
                if *failed > 0 {
                    write!(f, ", {failed} failed")
                } else {
                    Ok(())
                }
            }
            Decision::RollbackIncomplete {
                rolled_back,
                failed,
            } => write!(
                f,
                "rollback incomplete: {rolled_back} targets restored, {failed} did not confirm; they need a person"
            ),
            Decision::Canceled {
                canceled,
                succeeded,
            } => write!(
                f,
                "execution canceled: {canceled} targets canceled, {succeeded} already updated keep the new version"
            ),
            Decision::Ignored { command, why } => write!(f, "{} ignored: {why}", command.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_message_reads_like_the_issue() {
        let d = Decision::Aborted {
            trigger: Trigger::ErrorThreshold {
                wave: 2,
                failed: 5,
                finished: 40,
                threshold: Threshold::percent(10),
                minimum: 20,
            },
            rolling_back: 120,
            auto_rollback: true,
        };
        assert_eq!(
            d.to_string(),
            "wave 3 aborted: error rate 12.5 % > 10 % over 40 finished targets (minimum 20); \
             rolling back 120 touched targets, latest wave first"
        );
    }

    #[test]
    fn windowed_triggers_name_their_window() {
        let t = Trigger::ErrorRate {
            rate_sum_bp: 3 * 700,
            reporting: 3,
            max: Percent::whole(5).unwrap(),
            since: 0,
            window_ms: 180_000,
        };
        assert_eq!(
            t.to_string(),
            "mean error rate 7 % > 5 % over 3 reporting targets for 3 min"
        );
        let t = Trigger::Performance {
            response_sum_ms: 300,
            reporting: 2,
            baseline_ms: 100,
            max: Percent::whole(20).unwrap(),
            since: 0,
            window_ms: 0,
        };
        assert_eq!(
            t.to_string(),
            "mean response time 150 ms is 50 % worse than the baseline 100 ms (limit 20 %) over 2 reporting targets"
        );
    }
}
