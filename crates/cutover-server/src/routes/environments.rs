//! `GET /api/environments` and `GET /api/environments/{name}`.

use crate::auth::{Principal, Role};
use crate::dto::{EnvironmentDetail, EnvironmentList, EnvironmentView};
use crate::problem::{ApiError, Problem, not_found_as};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use cutover_store::{EnvironmentRow, ExecutionFilter, TargetFilter};
use std::collections::BTreeMap;

pub fn view(row: &EnvironmentRow) -> EnvironmentView {
    let text = |k: &str| {
        row.config
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    EnvironmentView {
        name: row.name.clone(),
        display_name: text("name"),
        stage: text("stage"),
        description: text("description"),
        position: row.position,
        approval_required: row.approval_required,
        required_approvals: if row.approval_required {
            row.required_approvals.max(1)
        } else {
            0
        },
        auto_rollback: row.auto_rollback,
        max_concurrent_deployments: row.max_concurrent_deployments,
        config: row.config.clone(),
    }
}

/// List environments in promotion order.
#[utoipa::path(get, path = "/api/environments", tag = "environments",
    responses((status = 200, body = EnvironmentList), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<EnvironmentList>, ApiError> {
    principal.require(Role::Viewer)?;
    let mut rows = state.store.list_environments().await?;
    rows.sort_by_key(|r| r.position);
    Ok(Json(EnvironmentList {
        environments: rows.iter().map(view).collect(),
    }))
}

/// One environment with its targets' versions and active deployments.
#[utoipa::path(get, path = "/api/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "environment name, e.g. production")),
    responses((status = 200, body = EnvironmentDetail), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<EnvironmentDetail>, ApiError> {
    principal.require(Role::Viewer)?;
    let row = state
        .store
        .get_environment(&name)
        .await
        .map_err(not_found_as("environment", &name))?;
    let targets = state
        .store
        .list_targets(&TargetFilter {
            environment: Some(name.clone()),
            ..Default::default()
        })
        .await?;
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    for t in &targets {
        *versions
            .entry(
                t.current_version
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
            )
            .or_default() += 1;
    }
    let active = state
        .store
        .list_executions(&ExecutionFilter {
            status: vec!["pending".into(), "running".into(), "paused".into()],
            environment: Some(name.clone()),
            limit: Some(100),
            ..Default::default()
        })
        .await?;
    Ok(Json(EnvironmentDetail {
        environment: view(&row),
        target_count: targets.len() as i64,
        versions,
        active_deployments: active.iter().map(super::summary).collect(),
    }))
}
