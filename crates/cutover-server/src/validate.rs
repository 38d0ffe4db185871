//! The rules a plan must pass when it is created and again when it is executed. Each
//! refusal names its rule:
//!
//! - `target_environment_exists`, `source_environment_exists`
//! - `promotion_order`: the source comes before the target in the promotion chain
//! - `version_required`
//! - `artifact_exists`: an artifact of that version and kind was uploaded
//! - `artifact_fits_hardware`: every selected target's hardware model is one the artifact
//!   is built for
//! - `artifact_min_version`: every selected target runs at least the artifact's minimum
//! - `strategy_parameters`: the strategy's parameters make sense together
//! - `promotion_from_staging`: a plan whose source is staging carries a version that
//!   succeeded in staging
//! - `targets_selected` (at execution): at least one target is selected

use crate::dto::{CreatePlan, StrategyName};
use crate::problem::ApiError;
use crate::settings::EnvironmentSettings;
use crate::state::AppState;
use cutover_core::engine::{Percent, RollbackCriteria, RolloutSpec, Strategy, Threshold};
use cutover_store::{ArtifactRow, ExecutionFilter, TargetFilter, TargetRow};
use std::cmp::Ordering;

/// A plan that passed the rules.
#[derive(Debug, Clone)]
pub struct CheckedPlan {
    pub version: String,
    pub kind: String,
    pub artifact: ArtifactRow,
    pub environment: EnvironmentSettings,
    pub rollout: RolloutSpec,
    /// The selected targets, ordered by id, before `rollout_percentage` is applied.
    pub targets: Vec<TargetRow>,
}

/// Compares dotted versions numerically where both parts are numbers ("1.10" > "1.9").
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<String> {
        s.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(str::to_string)
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map(String::as_str).unwrap_or("0");
        let y = pb.get(i).map(String::as_str).unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn strategy_rule(field: &str, why: impl std::fmt::Display) -> ApiError {
    let mut e = ApiError::rule("strategy_parameters", format!("{field} {why}"));
    e.field = Some(field.to_string());
    e
}

/// Builds the engine's spec from the request, refusing parameters that do not fit.
pub fn rollout_spec(req: &CreatePlan, env: &EnvironmentSettings) -> Result<RolloutSpec, ApiError> {
    let canary = req.strategy == StrategyName::Canary;
    if !canary && req.canary_steps.is_some() {
        return Err(strategy_rule(
            "canary_steps",
            "applies to the canary strategy only",
        ));
    }
    if !canary && req.bake_seconds.is_some() {
        return Err(strategy_rule(
            "bake_seconds",
            "applies to the canary strategy only",
        ));
    }
    if req.strategy != StrategyName::Rolling && req.batch_size.is_some() {
        return Err(strategy_rule(
            "batch_size",
            "applies to the rolling strategy only",
        ));
    }
    if let Some(p) = req.rollout_percentage
        && p == Percent::ZERO
    {
        return Err(strategy_rule("rollout_percentage", "must be above 0"));
    }
    if canary
        && let Some(p) = req.canary_percentage
        && (p == Percent::ZERO || p == Percent::HUNDRED)
    {
        return Err(strategy_rule(
            "canary_percentage",
            format!("must be between 0 and 100 (exclusive), got {p}"),
        ));
    }
    let bake_ms = i64::try_from(req.bake_seconds.unwrap_or(600))
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    let strategy = match req.strategy {
        StrategyName::Immediate => Strategy::Immediate,
        StrategyName::BlueGreen => Strategy::BlueGreen,
        StrategyName::Rolling => Strategy::Rolling {
            batch_size: req.batch_size.unwrap_or(Threshold::percent(10)),
        },
        StrategyName::Canary => Strategy::Canary {
            steps: req.canary_steps.clone().unwrap_or_default(),
            canary_percentage: req.canary_percentage,
            bake_ms,
        },
    };
    let mut spec = RolloutSpec::new(strategy);
    if let Some(t) = req.success_threshold {
        spec.success_threshold = t;
    }
    if let Some(t) = req.error_threshold {
        spec.error_threshold = t;
    }
    spec.max_in_flight = req.max_in_flight;
    spec.monitor_ms = i64::try_from(req.monitor_seconds.unwrap_or(0))
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    spec.auto_rollback = env.auto_rollback;
    if let Some(c) = &req.rollback_criteria {
        let de = serde_json::from_value::<RollbackCriteria>(c.clone());
        spec.criteria = de.map_err(|e| strategy_rule("rollback_criteria", e))?;
    }
    spec.validate().map_err(|e| {
        let cutover_core::engine::SpecError::Invalid { field, why } = e;
        strategy_rule(field, why)
    })?;
    Ok(spec)
}

/// Checks every rule against the store as it is now.
pub async fn check_plan(state: &AppState, req: &CreatePlan) -> Result<CheckedPlan, ApiError> {
    let env = state
        .environment(&req.target_environment)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = state
                .settings
                .environments
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            ApiError::rule(
                "target_environment_exists",
                format!(
                    "no environment {:?}; known: {}",
                    req.target_environment,
                    names.join(", ")
                ),
            )
        })?;
    if let Some(source) = &req.source_environment {
        let src = state.environment(source).ok_or_else(|| {
            ApiError::rule(
                "source_environment_exists",
                format!("no environment {source:?}"),
            )
        })?;
        if src.position >= env.position {
            return Err(ApiError::rule(
                "promotion_order",
                format!(
                    "{source} does not come before {} in the promotion chain",
                    env.name
                ),
            ));
        }
    }
    let version = req
        .firmware_version
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            let mut e = ApiError::rule("version_required", "firmware_version is required");
            e.field = Some("firmware_version".into());
            e
        })?
        .to_string();
    let kind = req
        .artifact_kind
        .clone()
        .unwrap_or_else(|| "firmware".into());
    if kind != "firmware" && kind != "release" {
        let mut e = ApiError::bad_field(
            "artifact_kind",
            format!("field artifact_kind: expected firmware or release, got {kind:?}"),
        );
        e.rule = Some("artifact_exists".into());
        return Err(e);
    }
    let rollout = rollout_spec(req, &env)?;
    let artifact = state
        .store
        .find_artifact(&version, &kind)
        .await?
        .ok_or_else(|| {
            ApiError::rule(
                "artifact_exists",
                format!("no {kind} artifact with version {version} has been uploaded"),
            )
        })?;
    let targets = select_targets(state, req).await?;
    if !artifact.compatible_hardware.is_empty() {
        let misfits: Vec<String> = hardware_misfits(&targets, &artifact.compatible_hardware)
            .take(5)
            .collect();
        if !misfits.is_empty() {
            return Err(ApiError::rule(
                "artifact_fits_hardware",
                format!(
                    "{kind} {version} is built for {}; it does not fit {}",
                    artifact.compatible_hardware.join(", "),
                    misfits.join(", ")
                ),
            ));
        }
    }
    if let Some(min) = &artifact.min_current_version {
        let old: Vec<String> = targets
            .iter()
            .filter(|t| {
                t.current_version
                    .as_deref()
                    .is_some_and(|v| compare_versions(v, min) == Ordering::Less)
            })
            .take(5)
            .map(|t| format!("{} ({})", t.id, t.current_version.as_deref().unwrap_or("")))
            .collect();
        if !old.is_empty() {
            return Err(ApiError::rule(
                "artifact_min_version",
                format!(
                    "{kind} {version} needs at least {min} installed; these run older: {}",
                    old.join(", ")
                ),
            ));
        }
    }
    if req.source_environment.as_deref() == Some("staging") {
        let succeeded = state
            .store
            .list_executions(&ExecutionFilter {
                status: vec!["succeeded".into()],
                environment: Some("staging".into()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let found = succeeded.iter().any(|e| {
            e.spec.get("version").and_then(|v| v.as_str()) == Some(version.as_str())
                && e.spec.get("artifact_kind").and_then(|v| v.as_str()) == Some(kind.as_str())
        });
        if !found {
            return Err(ApiError::rule(
                "promotion_from_staging",
                format!("{kind} {version} has no succeeded deployment in staging"),
            ));
        }
    }
    Ok(CheckedPlan {
        version,
        kind,
        artifact,
        environment: env,
        rollout,
        targets,
    })
}

/// The targets the plan's selector picks in its target environment, ordered by id.
pub async fn select_targets(
    state: &AppState,
    req: &CreatePlan,
) -> Result<Vec<TargetRow>, ApiError> {
    let mut filter = TargetFilter {
        environment: Some(req.target_environment.clone()),
        hardware_model: req.hardware_model.clone(),
        labels: req
            .target_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ids: req.target_ids.clone(),
        ..Default::default()
    };
    if let Some(first) = req.target_groups.first() {
        filter.group = Some(first.clone());
    }
    let mut targets = state.store.list_targets(&filter).await?;
    if req.target_groups.len() > 1 {
        targets.retain(|t| req.target_groups.iter().all(|g| t.groups.contains(g)));
    }
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(targets)
}

/// The targets whose hardware is not in `hardware`, as `id (model)`.
pub(crate) fn hardware_misfits<'a>(
    targets: &'a [cutover_store::TargetRow],
    hardware: &'a [String],
) -> impl Iterator<Item = String> + 'a {
    targets
        .iter()
        .filter(|t| {
            !t.hardware_model
                .as_ref()
                .is_some_and(|m| hardware.contains(m))
        })
        .map(|t| {
            format!(
                "{} ({})",
                t.id,
                t.hardware_model.as_deref().unwrap_or("unknown hardware")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("v1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.1.0", "1.2.0"), Ordering::Less);
    }

    fn plan(json: serde_json::Value) -> CreatePlan {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn strategy_parameters_are_checked() {
        let env = EnvironmentSettings::new("production", 3);
        let ok = plan(serde_json::json!({
            "name": "x", "firmware_version": "1.2.0", "source_environment": "staging",
            "target_environment": "production", "strategy": "rolling",
            "rollout_percentage": 100, "canary_percentage": 10
        }));
        assert!(rollout_spec(&ok, &env).is_ok());
        let bad = plan(serde_json::json!({
            "name": "x", "target_environment": "production", "strategy": "canary",
            "canary_steps": [50, 20, 100]
        }));
        let e = rollout_spec(&bad, &env).unwrap_err();
        assert_eq!(e.rule.as_deref(), Some("strategy_parameters"));
        assert!(e.detail.contains("strategy.steps"), "{}", e.detail);
        let bad = plan(serde_json::json!({
            "name": "x", "target_environment": "production", "strategy": "immediate",
            "batch_size": 5
        }));
        assert!(
            rollout_spec(&bad, &env)
                .unwrap_err()
                .detail
                .contains("batch_size")
        );
        let bad = plan(serde_json::json!({
            "name": "x", "target_environment": "production", "strategy": "canary",
            "canary_percentage": 100
        }));
        assert!(
            rollout_spec(&bad, &env)
                .unwrap_err()
                .detail
                .contains("canary_percentage")
        );
    }
}
