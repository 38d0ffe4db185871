//! The API's routes at the seed's paths, and conversions from store rows to wire types.

pub mod admin;
pub mod deployments;
pub mod environments;
pub mod monitoring;
pub mod plans;

use crate::app::need;
use crate::auth::Role;
use crate::dto::{ExecutionSummary, ExecutionView, ProgressView, WaveView};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};
use cutover_store::{ExecutionHead, ExecutionProgress, ExecutionRow, StatusCounts, StoreError};

/// Every route of the API (without the guard; see [`crate::app::build_router`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(monitoring::healthz))
        .route("/metrics", get(monitoring::prometheus))
        .route("/api/openapi.json", get(crate::openapi::serve_spec))
        .route("/", get(crate::web::index))
        .route("/ui/app.js", get(crate::web::script))
        .route("/api/environments", get(environments::list))
        .route("/api/environments/{name}", get(environments::detail))
        .route(
            "/api/deployment-plans",
            post(plans::create)
                .layer(need(Role::Operator))
                .get(plans::list),
        )
        .route("/api/deployment-plans/{id}", get(plans::show))
        .route(
            "/api/deployment-plans/{id}/approve",
            post(plans::approve).layer(need(Role::Approver)),
        )
        .route(
            "/api/deployments/execute",
            post(deployments::execute).layer(need(Role::Operator)),
        )
        .route("/api/deployments", get(deployments::list))
        .route("/api/deployments/{id}", get(deployments::show))
        .route("/api/deployments/{id}/events", get(deployments::events))
        .route("/api/deployments/{id}/cancel", post(deployments::cancel))
        .route(
            "/api/deployments/{id}/rollback",
            post(deployments::rollback),
        )
        .route("/api/deployments/{id}/pause", post(deployments::pause))
        .route("/api/deployments/{id}/resume", post(deployments::resume))
        .route("/api/deployments/{id}/promote", post(deployments::promote))
        .route("/api/health-checks", get(monitoring::health_checks))
        .route("/api/metrics", get(monitoring::system_metrics))
        .route(
            "/api/reports/deployment/{id}",
            get(monitoring::deployment_report),
        )
        .route("/api/reports/summary", get(monitoring::summary_report))
        .route("/api/targets", get(admin::list_targets))
        .route(
            "/api/keys",
            post(admin::create_key)
                .layer(need(Role::Admin))
                .get(admin::list_keys),
        )
        .route("/api/keys/{id}/revoke", post(admin::revoke_key))
        .route("/api/audit", get(admin::list_audit))
        .route("/api/audit/verify", get(admin::verify_audit))
}

/// Progress as the API shows it, with the share of finished targets.
pub fn progress_view(c: &StatusCounts) -> ProgressView {
    let done = c.succeeded + c.failed + c.rolled_back + c.canceled;
    ProgressView {
        total: c.total,
        pending: c.pending,
        in_progress: c.in_progress,
        succeeded: c.succeeded,
        failed: c.failed,
        rolled_back: c.rolled_back,
        canceled: c.canceled,
        percent_complete: if c.total == 0 {
            0.0
        } else {
            ((done as f64) * 1000.0 / (c.total as f64)).round() / 10.0
        },
    }
}

/// Is this execution status final?
pub fn terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "rolled_back" | "canceled")
}

pub fn summary(e: &ExecutionRow) -> ExecutionSummary {
    let text = |k: &str| e.spec.get(k).and_then(|v| v.as_str()).map(str::to_string);
    ExecutionSummary {
        id: e.id.clone(),
        execution_id: e.id.clone(),
        plan_id: e.plan_id.clone(),
        environment: e.environment.clone(),
        version: text("version"),
        strategy: text("strategy"),
        status: e.status.clone(),
        target_count: e.target_count,
        created_by: e.created_by.clone(),
        created_at: e.created_at,
        started_at: e.started_at,
        finished_at: e.finished_at,
    }
}

/// A listed execution as the API shows it.
pub fn head_summary(h: ExecutionHead) -> ExecutionSummary {
    ExecutionSummary {
        execution_id: h.id.clone(),
        id: h.id,
        plan_id: h.plan_id,
        environment: h.environment,
        version: h.version,
        strategy: h.strategy,
        status: h.status,
        target_count: h.target_count,
        created_by: h.created_by,
        created_at: h.created_at,
        started_at: h.started_at,
        finished_at: h.finished_at,
    }
}

/// The execution with its progress overall and per wave.
pub fn execution_view(p: ExecutionProgress) -> ExecutionView {
    ExecutionView {
        progress: progress_view(&p.counts),
        waves: p
            .waves
            .into_iter()
            .map(|w| WaveView {
                index: w.wave_index,
                progress: progress_view(&w.counts),
                status: w.status,
                target_count: w.target_count,
                started_at: w.started_at,
                finished_at: w.finished_at,
            })
            .collect(),
        summary: head_summary(p.head),
        held: None,
    }
}

fn deployment_not_found(id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("deployment {id} not found")),
        other => other.into(),
    }
}

/// An execution's status with its progress per wave (one query).
pub async fn execution_status(state: &AppState, id: &str) -> Result<ExecutionView, ApiError> {
    let progress = state
        .store
        .execution_progress(id)
        .await
        .map_err(deployment_not_found(id))?;
    let mut view = execution_view(progress);
    // Only a paused execution reads its state row: the reason it is held.
    if view.summary.status == "paused" {
        let row = state
            .store
            .get_execution(id)
            .await
            .map_err(deployment_not_found(id))?;
        view.held = held_reason(&row);
    }
    Ok(view)
}

/// Why a paused execution is held, as the orchestrator wrote it.
pub fn held_reason(row: &ExecutionRow) -> Option<String> {
    (row.status == "paused")
        .then(|| row.state.get("held")?.as_str().map(str::to_string))
        .flatten()
}

/// Loads an execution's row and its status view.
pub async fn load_execution(
    state: &AppState,
    id: &str,
) -> Result<(ExecutionRow, ExecutionView), ApiError> {
    let (e, progress) = tokio::try_join!(
        state.store.get_execution(id),
        state.store.execution_progress(id)
    )
    .map_err(deployment_not_found(id))?;
    let mut view = execution_view(progress);
    view.held = held_reason(&e);
    Ok((e, view))
}
