//! What a rollout is asked to do: the strategy, the thresholds, the rollback
//! criteria, and how a strategy compiles to waves.
//!
//! A [`RolloutSpec`] is plain data (serde), built by the server from a plan and
//! its target environment's policy. [`RolloutSpec::validate`] refuses specs the
//! engine could not honour, with a message naming the field.

use super::Millis;
use super::percent::{Percent, Threshold};
use serde::{Deserialize, Serialize};

/// How targets are grouped into waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Strategy {
    /// Every target in one wave.
    Immediate,
    /// Waves of `batch_size` targets (a count or a percentage of the fleet).
    Rolling {
        #[serde(default = "default_batch_size")]
        batch_size: Threshold,
    },
    /// Cumulative steps, each a percentage of the fleet (the first is the
    /// canary), with a bake time after every wave but the last during which
    /// the criteria are watched. A person can promote past a bake.
    Canary {
        /// Cumulative percentages, strictly increasing, ending at 100. Empty
        /// means `canary_percentage` then 25, 50, 100 (default 10, 25, 50, 100).
        #[serde(default)]
        steps: Vec<Percent>,
        /// The first step, as the seed's plan calls it.
        #[serde(default)]
        canary_percentage: Option<Percent>,
        #[serde(default = "default_bake_ms")]
        bake_ms: Millis,
    },
    /// Stage on every target without activating, verify (the gate after the
    /// staging wave), switch every staged target at once, then watch the
    /// criteria for `monitor_ms`. A rollback switches back.
    BlueGreen,
}

impl Strategy {
    /// A canary whose first wave is `canary_percentage`, then 25, 50, 100 %.
    pub fn canary(canary_percentage: Percent, bake_ms: Millis) -> Self {
        Strategy::Canary {
            steps: Vec::new(),
            canary_percentage: Some(canary_percentage),
            bake_ms,
        }
    }

    /// The strategy's name as configuration spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Immediate => "immediate",
            Strategy::Rolling { .. } => "rolling",
            Strategy::Canary { .. } => "canary",
            Strategy::BlueGreen => "blue_green",
        }
    }

    /// The canary steps after defaults are applied.
    fn canary_steps(steps: &[Percent], canary_percentage: Option<Percent>) -> Vec<Percent> {
        if !steps.is_empty() {
            return steps.to_vec();
        }
        let first = canary_percentage.unwrap_or(Percent::whole(10).unwrap_or(Percent::HUNDRED));
        let mut out = vec![first];
        for p in [25, 50, 100] {
            let p = Percent::whole(p).unwrap_or(Percent::HUNDRED);
            if p > first {
                out.push(p);
            }
        }
        out
    }
}

fn default_batch_size() -> Threshold {
    Threshold::percent(10)
}
fn default_bake_ms() -> Millis {
    10 * 60 * 1000
}
fn default_success_threshold() -> Threshold {
    Threshold::percent(95)
}
fn default_error_threshold() -> Threshold {
    Threshold::percent(10)
}
fn default_min_finished() -> u32 {
    10
}
fn default_action_timeout_ms() -> Millis {
    60 * 60 * 1000
}
fn default_rollback_timeout_ms() -> Millis {
    5 * 60 * 1000
}
fn default_true() -> bool {
    true
}

/// Everything the engine needs to run one execution.
///
/// Thresholds are judged per wave; criteria over the whole execution.
/// Comparisons: a wave passes when `succeeded >= success_threshold` (not
/// strict); it aborts when `failed > error_threshold` (strict), and only once
/// `min_finished_for_error_rate` of its targets have finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub strategy: Strategy,
    /// Succeeded targets a wave needs, of its size, before the next wave may
    /// start. A count larger than a wave is capped at the wave's size.
    #[serde(default = "default_success_threshold")]
    pub success_threshold: Threshold,
    /// Failed (or timed out) targets of a wave above which it aborts. A
    /// percentage is of the wave's finished targets.
    #[serde(default = "default_error_threshold")]
    pub error_threshold: Threshold,
    /// Finished targets a wave needs before its error threshold is judged, so
    /// one early failure does not abort a large wave.
    #[serde(default = "default_min_finished")]
    pub min_finished_for_error_rate: u32,
    /// At most this many actions in progress at once; none means no limit.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// An action still in progress this long after its dispatch has timed out
    /// and counts as failed. Timeouts are not retried: the device may still
    /// be working, and a second install would race the first.
    #[serde(default = "default_action_timeout_ms")]
    pub action_timeout_ms: Millis,
    /// How many times a transient failure is dispatched again.
    #[serde(default)]
    pub max_retries: u8,
    /// Whether an abort rolls back every touched target; without it the
    /// execution pauses for a person.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// A rollback not confirmed this long after it was sent has failed.
    #[serde(default = "default_rollback_timeout_ms")]
    pub rollback_timeout_ms: Millis,
    /// Whether a gate (`Command::RunGate`) must pass after each wave before
    /// the next starts (and, for blue-green, before the switch).
    #[serde(default)]
    pub gate_after_each_wave: bool,
    /// How long the criteria are watched after the last wave (blue-green:
    /// after the switch) before the execution succeeds.
    #[serde(default)]
    pub monitor_ms: Millis,
    #[serde(default)]
    pub criteria: RollbackCriteria,
    /// Figures of the version being replaced, for the degradation criterion.
    #[serde(default)]
    pub baseline: Baseline,
}

impl RolloutSpec {
    /// A spec with the defaults above for `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            success_threshold: default_success_threshold(),
            error_threshold: default_error_threshold(),
            min_finished_for_error_rate: default_min_finished(),
            max_in_flight: None,
            action_timeout_ms: default_action_timeout_ms(),
            max_retries: 0,
            auto_rollback: true,
            rollback_timeout_ms: default_rollback_timeout_ms(),
            gate_after_each_wave: false,
            monitor_ms: 0,
            criteria: RollbackCriteria::default(),
            baseline: Baseline::default(),
        }
    }

    /// Refuses a spec the engine could not honour.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &'static str, why: String| Err(SpecError::Invalid { field, why });
        match &self.strategy {
            Strategy::Rolling { batch_size } => {
                if batch_size.of_ceil(u32::MAX) == 0 {
                    return bad(
                        "strategy.batch_size",
                        "must be at least 1 target or above 0 %".into(),
                    );
                }
            }
            Strategy::Canary {
                steps,
                canary_percentage,
                bake_ms,
            } => {
                if *bake_ms < 0 {
                    return bad(
                        "strategy.bake_ms",
                        format!("must not be negative, got {bake_ms}"),
                    );
                }
                let effective = Strategy::canary_steps(steps, *canary_percentage);
                if let (Some(c), Some(first)) = (canary_percentage, steps.first())
                    && c != first
                {
                    return bad(
                        "strategy.canary_percentage",
                        format!(
                            "is {c} but the first step is {first}; give one or make them equal"
                        ),
                    );
                }
                if effective.first() == Some(&Percent::ZERO) {
                    return bad("strategy.steps", "the first step must be above 0 %".into());
                }
                if effective.windows(2).any(|w| w[0] >= w[1]) {
                    return bad("strategy.steps", "must be strictly increasing".into());
                }
                if effective.last() != Some(&Percent::HUNDRED) {
                    return bad("strategy.steps", "must end at 100 %".into());
                }
            }
            Strategy::Immediate | Strategy::BlueGreen => {}
        }
        if self.max_in_flight == Some(0) {
            return bad(
                "max_in_flight",
                "must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if self.action_timeout_ms <= 0 {
            return bad(
                "action_timeout_ms",
                format!("must be positive, got {}", self.action_timeout_ms),
            );
        }
        if self.rollback_timeout_ms <= 0 {
            return bad(
                "rollback_timeout_ms",
                format!("must be positive, got {}", self.rollback_timeout_ms),
            );
        }
        if self.max_retries > 100 {
            return bad(
                "max_retries",
                format!("must be at most 100, got {}", self.max_retries),
            );
        }
        if self.monitor_ms < 0 {
            return bad(
                "monitor_ms",
                format!("must not be negative, got {}", self.monitor_ms),
            );
        }
        let c = &self.criteria;
        for (field, v) in [
            ("criteria.health_failing_for_ms", c.health_failing_for_ms),
            ("criteria.error_rate_for_ms", c.error_rate_for_ms),
            ("criteria.degradation_for_ms", c.degradation_for_ms),
        ] {
            if v < 0 {
                return bad(field, format!("must not be negative, got {v}"));
            }
        }
        if c.performance_degradation.is_some() && self.baseline.response_ms.unwrap_or(0) == 0 {
            return bad(
                "criteria.performance_degradation",
                "needs baseline.response_ms, the response time of the version being replaced"
                    .into(),
            );
        }
        Ok(())
    }

    /// The waves for `target_count` targets, as exclusive end indices:
    /// wave `w` holds targets `ends[w-1]..ends[w]` (wave 0 starts at 0).
    /// Strictly increasing, the last is `target_count`; empty for no targets.
    pub fn wave_ends(&self, target_count: u32) -> Vec<u32> {
        let n = target_count;
        if n == 0 {
            return Vec::new();
        }
        match &self.strategy {
            Strategy::Immediate | Strategy::BlueGreen => vec![n],
            Strategy::Rolling { batch_size } => {
                let batch = batch_size.of_ceil(n).max(1);
                let mut ends = Vec::with_capacity(n.div_ceil(batch) as usize);
                let mut end = 0u32;
                while end < n {
                    end = end.saturating_add(batch).min(n);
                    ends.push(end);
                }
                ends
            }
            Strategy::Canary {
                steps,
                canary_percentage,
                ..
            } => {
                let mut ends: Vec<u32> = Vec::new();
                for step in Strategy::canary_steps(steps, *canary_percentage) {
                    let end = step.of_ceil(n).min(n);
                    if end > 0 && ends.last().is_none_or(|&last| end > last) {
                        ends.push(end);
                    }
                }
                if ends.last() != Some(&n) {
                    ends.push(n);
                }
                ends
            }
        }
    }

    /// The bake time after each non-final wave.
    pub fn bake_ms(&self) -> Millis {
        match self.strategy {
            Strategy::Canary { bake_ms, .. } => bake_ms,
            _ => 0,
        }
    }
}

/// Rollback triggers watched over the whole execution: the seed's
/// `rollback_criteria` and the guidelines' windowed triggers.
///
/// Metric criteria judge the latest sample of each target that received the
/// new version. A window of 0 fires at once; otherwise the condition must
/// hold without a break for at least the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RollbackCriteria {
    /// Failed (or timed out) targets over finished targets of the whole
    /// execution, above which it aborts (strict), once the minimum finished.
    pub max_failure_rate: Option<Percent>,
    /// Abort when a target running the new version reports unhealthy
    /// (for at least `health_failing_for_ms`).
    pub health_check_failure: bool,
    pub health_failing_for_ms: Millis,
    /// Abort when the mean error rate reported by targets is above this
    /// (strict) for at least `error_rate_for_ms`.
    pub max_error_rate: Option<Percent>,
    pub error_rate_for_ms: Millis,
    /// Abort when the mean response time is more than this percentage worse
    /// than `baseline.response_ms` (strict) for at least `degradation_for_ms`.
    pub performance_degradation: Option<Percent>,
    pub degradation_for_ms: Millis,
    /// Abort once this many user reports arrived ("5+ reports": at least).
    pub user_reported_issues: Option<u32>,
}

/// Figures of the version being replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Baseline {
    /// Mean response time in milliseconds.
    pub response_ms: Option<u32>,
}

/// A spec the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("rollout spec field {field} {why}")]
    Invalid { field: &'static str, why: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: u32) -> Percent {
        Percent::whole(x).unwrap()
    }

    #[test]
    fn canary_compiles_to_cumulative_waves() {
        let spec = RolloutSpec::new(Strategy::Canary {
            steps: vec![p(1), p(10), p(50), p(100)],
            canary_percentage: None,
            bake_ms: 0,
        });
        assert_eq!(
            spec.wave_ends(1_000_000),
            vec![10_000, 100_000, 500_000, 1_000_000]
        );
        // Small fleets: empty steps collapse, the first wave is never empty.
        assert_eq!(spec.wave_ends(3), vec![1, 2, 3]);
        assert_eq!(spec.wave_ends(1), vec![1]);
        assert_eq!(spec.wave_ends(0), Vec::<u32>::new());
    }

    #[test]
    fn canary_percentage_gives_the_default_steps() {
        let spec = RolloutSpec::new(Strategy::canary(p(10), 0));
        assert_eq!(spec.wave_ends(100), vec![10, 25, 50, 100]);
        let spec = RolloutSpec::new(Strategy::canary(p(30), 0));
        assert_eq!(spec.wave_ends(100), vec![30, 50, 100]);
        let yaml = r#"{"strategy": {"type": "canary", "canary_percentage": 10}}"#;
        let spec: RolloutSpec = serde_json::from_str(yaml).unwrap();
        assert_eq!(spec.wave_ends(100), vec![10, 25, 50, 100]);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn rolling_batches_by_count_or_percentage() {
        let spec = RolloutSpec::new(Strategy::Rolling {
            batch_size: Threshold::Count(4),
        });
        assert_eq!(spec.wave_ends(10), vec![4, 8, 10]);
        let spec = RolloutSpec::new(Strategy::Rolling {
            batch_size: Threshold::percent(30),
        });
        assert_eq!(spec.wave_ends(10), vec![3, 6, 9, 10]);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let spec = RolloutSpec::new(Strategy::Canary {
            steps: vec![p(50), p(20), p(100)],
            canary_percentage: None,
            bake_ms: 0,
        });
        let err = spec.validate().unwrap_err().to_string();
        assert!(
            err.contains("strategy.steps") && err.contains("increasing"),
            "{err}"
        );
        let spec = RolloutSpec::new(Strategy::Canary {
            steps: vec![p(50)],
            canary_percentage: None,
            bake_ms: 0,
        });
        assert!(spec.validate().unwrap_err().to_string().contains("100"));
        let mut spec = RolloutSpec::new(Strategy::Immediate);
        spec.criteria.performance_degradation = Some(p(20));
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("baseline.response_ms")
        );
        let mut spec = RolloutSpec::new(Strategy::Immediate);
        spec.max_in_flight = Some(0);
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("max_in_flight")
        );
        let spec = RolloutSpec::new(Strategy::Rolling {
            batch_size: Threshold::Count(0),
        });
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("batch_size")
        );
    }

    #[test]
    fn seed_rollback_criteria_read_as_written() {
        let json = r#"{"max_failure_rate": 10, "health_check_failure": true, "performance_degradation": 20, "user_reported_issues": 5}"#;
        let c: RollbackCriteria = serde_json::from_str(json).unwrap();
        assert_eq!(c.max_failure_rate, Some(p(10)));
        assert!(c.health_check_failure);
        assert_eq!(c.performance_degradation, Some(p(20)));
        assert_eq!(c.user_reported_issues, Some(5));
    }
}
