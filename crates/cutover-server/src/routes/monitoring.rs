//! Health, metrics and reports: `/healthz`, `/metrics` (Prometheus), `/api/health-checks`,
//! `/api/metrics`, `/api/reports/deployment/{id}` and `/api/reports/summary?days=N`.

use crate::auth::{Principal, Role};
use crate::dto::{
    DeploymentReport, FailureView, GateView, HealthCheckResult, HealthReport, SummaryReport,
    SystemMetrics, TimelineEntry,
};
use crate::problem::{ApiError, Problem, not_found_as};
use crate::routes::load_execution;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{TimeDelta, Utc};
use cutover_store::{ExecutionFilter, ExecutionRow, TargetFilter};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Liveness: answers without credentials.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Prometheus metrics in the text format.
pub async fn prometheus(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Role::Viewer)?;
    let active = state
        .store
        .list_executions(&ExecutionFilter {
            status: vec!["pending".into(), "running".into(), "paused".into()],
            limit: Some(100_000),
            ..Default::default()
        })
        .await?;
    state.metrics.active_executions.set(active.len() as i64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    ))
}

/// Run health checks: the database, and each environment's `health_checks` and `health_check_url`.
#[utoipa::path(get, path = "/api/health-checks", tag = "monitoring",
    responses((status = 200, body = HealthReport), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn health_checks(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<HealthReport>, ApiError> {
    principal.require(Role::Viewer)?;
    let mut checks = Vec::new();
    let started = Instant::now();
    let db = state.store.list_environments().await;
    checks.push(HealthCheckResult {
        name: "database".into(),
        kind: "database".into(),
        status: if db.is_ok() { "healthy" } else { "unhealthy" }.into(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        detail: match &db {
            Ok(_) => format!("{} store answers", state.store.backend()),
            Err(e) => e.to_string(),
        },
    });
    let mut probes = Vec::new();
    for env in &state.settings.environments {
        for check in state.settings.environment_checks(&env.name) {
            let (http, env) = (state.http.clone(), env.name.clone());
            probes.push(async move {
                let r = crate::health_checks::run(&check, &http).await;
                HealthCheckResult {
                    name: format!("{env}: {}", r.name),
                    kind: r.kind,
                    status: if r.healthy { "healthy" } else { "unhealthy" }.into(),
                    latency_ms: r.latency_ms,
                    detail: r.detail,
                }
            });
        }
    }
    checks.extend(futures::future::join_all(probes).await);
    let status = if checks.iter().all(|c| c.status == "healthy") {
        "healthy"
    } else {
        "unhealthy"
    };
    Ok(Json(HealthReport {
        status: status.into(),
        checks,
    }))
}

fn duration_secs(e: &ExecutionRow) -> Option<f64> {
    let (s, f) = (e.started_at?, e.finished_at?);
    Some((f - s).num_milliseconds() as f64 / 1000.0)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u32);
    for v in values {
        sum += v;
        n += 1;
    }
    (n > 0).then(|| sum / f64::from(n))
}

fn success_rate(by_status: &BTreeMap<String, i64>) -> Option<f64> {
    let ok = by_status.get("succeeded").copied().unwrap_or(0);
    let finished: i64 = ["succeeded", "failed", "rolled_back", "canceled"]
        .iter()
        .map(|s| by_status.get(*s).copied().unwrap_or(0))
        .sum();
    (finished > 0).then(|| (ok as f64) * 100.0 / (finished as f64))
}

/// System metrics: deployments by status, success rate, targets per environment.
#[utoipa::path(get, path = "/api/metrics", tag = "monitoring",
    responses((status = 200, body = SystemMetrics), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn system_metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SystemMetrics>, ApiError> {
    principal.require(Role::Viewer)?;
    let executions = state
        .store
        .list_executions(&ExecutionFilter {
            limit: Some(100_000),
            ..Default::default()
        })
        .await?;
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    for e in &executions {
        *by_status.entry(e.status.clone()).or_default() += 1;
    }
    let active = ["pending", "running", "paused"]
        .iter()
        .map(|s| by_status.get(*s).copied().unwrap_or(0))
        .sum();
    let plans = state.store.list_plans(10_000).await?;
    let targets = state.store.list_targets(&TargetFilter::default()).await?;
    let mut by_env: BTreeMap<String, i64> = BTreeMap::new();
    for t in &targets {
        *by_env.entry(t.environment.clone()).or_default() += 1;
    }
    Ok(Json(SystemMetrics {
        deployments_total: executions.len() as i64,
        success_rate: success_rate(&by_status),
        deployments_by_status: by_status,
        active_deployments: active,
        plans_pending_approval: plans
            .iter()
            .filter(|p| p.status == "pending_approval")
            .count() as i64,
        targets_total: targets.len() as i64,
        targets_by_environment: by_env,
        mean_duration_seconds: mean(executions.iter().filter_map(duration_secs)),
    }))
}

/// A deployment's report: its plan, progress, failures, gates and timeline.
#[utoipa::path(get, path = "/api/reports/deployment/{id}", tag = "reports",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, body = DeploymentReport), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn deployment_report(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeploymentReport>, ApiError> {
    principal.require(Role::Viewer)?;
    let (execution, view) = load_execution(&state, &id).await?;
    let plan = state
        .store
        .get_plan(&execution.plan_id)
        .await
        .map_err(not_found_as("plan", &execution.plan_id))?;
    let approvals = state.store.list_approvals(&plan.id).await?;
    let actions = state.store.list_actions(&id).await?;
    let failures = actions
        .iter()
        .filter(|a| matches!(a.status.as_str(), "failed" | "timed_out" | "rolled_back"))
        .map(|a| FailureView {
            target_id: a.target_id.clone(),
            wave_index: a.wave_index,
            status: a.status.clone(),
            error: a.error.clone(),
        })
        .collect();
    let gates = state
        .store
        .list_gate_results(&id)
        .await?
        .into_iter()
        .map(|g| GateView {
            gate: g.gate,
            kind: g.kind,
            phase: g.phase,
            wave_index: g.wave_index,
            passed: g.passed,
            at: g.at,
        })
        .collect();
    let timeline = state
        .store
        .load_execution_events(&id, 0)
        .await?
        .into_iter()
        .map(|e| TimelineEntry {
            seq: e.seq,
            kind: e.kind,
            payload: e.payload,
            at: e.at,
        })
        .collect();
    Ok(Json(DeploymentReport {
        duration_seconds: duration_secs(&execution),
        execution: view,
        plan: super::plans::plan_view(&state, &plan, &approvals),
        failures,
        gates,
        timeline,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SummaryQuery {
    /// How many days back (default 30, at most 3650).
    pub days: Option<u32>,
}

/// Deployments of the last N days, by status and environment.
#[utoipa::path(get, path = "/api/reports/summary", tag = "reports", params(SummaryQuery),
    responses((status = 200, body = SummaryReport), (status = 400, body = Problem), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn summary_report(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<SummaryReport>, ApiError> {
    principal.require(Role::Viewer)?;
    let days = q.days.unwrap_or(30);
    if days == 0 || days > 3650 {
        return Err(ApiError::bad_field(
            "days",
            format!("days must be between 1 and 3650, got {days}"),
        ));
    }
    let since = Utc::now() - TimeDelta::days(i64::from(days));
    let executions = state
        .store
        .list_executions(&ExecutionFilter {
            since: Some(since),
            limit: Some(100_000),
            ..Default::default()
        })
        .await?;
    let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_env: BTreeMap<String, i64> = BTreeMap::new();
    let mut targets_updated = 0;
    for e in &executions {
        *by_status.entry(e.status.clone()).or_default() += 1;
        *by_env.entry(e.environment.clone()).or_default() += 1;
        if e.status == "succeeded" {
            targets_updated += e.target_count;
        }
    }
    Ok(Json(SummaryReport {
        days,
        since,
        deployments_total: executions.len() as i64,
        success_rate: success_rate(&by_status),
        by_status,
        by_environment: by_env,
        targets_updated,
        mean_duration_seconds: mean(executions.iter().filter_map(duration_secs)),
    }))
}
