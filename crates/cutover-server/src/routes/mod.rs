//! The API's routes at the seed's paths, and conversions from store rows to wire types.

pub mod admin;
pub mod deployments;
pub mod environments;
pub mod monitoring;
pub mod plans;

use crate::app::need;
use crate::auth::Role;
use crate::dto::{ExecutionSummary, ExecutionView, ProgressView, WaveView};
use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};
use cutover_store::{ActionRow, ExecutionRow, WaveRow};

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

/// The status group an action's status falls in.
fn bucket(status: &str) -> &'static str {
    match status {
        "pending" => "pending",
        "succeeded" => "succeeded",
        "failed" | "timed_out" => "failed",
        "rolled_back" => "rolled_back",
        "canceled" => "canceled",
        _ => "in_progress",
    }
}

fn add(p: &mut ProgressView, status: &str) {
    p.total += 1;
    match bucket(status) {
        "pending" => p.pending += 1,
        "succeeded" => p.succeeded += 1,
        "failed" => p.failed += 1,
        "rolled_back" => p.rolled_back += 1,
        "canceled" => p.canceled += 1,
        _ => p.in_progress += 1,
    }
}

fn finish(p: &mut ProgressView) {
    let done = p.succeeded + p.failed + p.rolled_back + p.canceled;
    p.percent_complete = if p.total == 0 {
        0.0
    } else {
        ((done as f64) * 1000.0 / (p.total as f64)).round() / 10.0
    };
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

/// The execution with its progress overall and per wave.
pub fn execution_view(e: &ExecutionRow, waves: &[WaveRow], actions: &[ActionRow]) -> ExecutionView {
    let mut total = ProgressView::default();
    let mut per_wave: Vec<WaveView> = waves
        .iter()
        .map(|w| WaveView {
            index: w.wave_index,
            status: w.status.clone(),
            target_count: w.target_count,
            progress: ProgressView::default(),
            started_at: w.started_at,
            finished_at: w.finished_at,
        })
        .collect();
    for a in actions {
        add(&mut total, &a.status);
        if let Some(w) = per_wave.iter_mut().find(|w| w.index == a.wave_index) {
            add(&mut w.progress, &a.status);
        }
    }
    finish(&mut total);
    for w in &mut per_wave {
        finish(&mut w.progress);
    }
    ExecutionView {
        summary: summary(e),
        progress: total,
        waves: per_wave,
    }
}

/// Loads an execution with its waves and actions.
pub async fn load_execution(
    state: &AppState,
    id: &str,
) -> Result<(ExecutionRow, ExecutionView), crate::problem::ApiError> {
    let e = state
        .store
        .get_execution(id)
        .await
        .map_err(crate::problem::not_found_as("deployment", id))?;
    let (waves, actions) =
        tokio::try_join!(state.store.list_waves(id), state.store.list_actions(id))?;
    let view = execution_view(&e, &waves, &actions);
    Ok((e, view))
}
