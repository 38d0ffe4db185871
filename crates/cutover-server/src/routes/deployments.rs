//! Deployments (executions): execute a plan, list, status, operator commands, and a
//! server-sent-events stream of progress.
//!
//! The API never runs an execution itself: it writes it to the store as `pending`, with its
//! waves compiled, and the orchestrator claims it. Operator commands are appended to the
//! execution's event log as `{"type":"operator","command":…}`, which the orchestrator feeds
//! to the engine. Both then wake the orchestrator.

use crate::app::Audited;
use crate::auth::{Principal, Role};
use crate::dto::{CommandAccepted, ExecuteRequest, ExecutionList, ExecutionView};
use crate::problem::{ApiError, ApiJson, Problem, not_found_as};
use crate::quality_gates::{
    Before, GateDef, GateOutcome, Phase, RunContext, decide_before, waits_for_person,
};
use crate::routes::{execution_status, head_summary, terminal};
use crate::state::{AppState, Caller};
use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use cutover_store::{
    ExecutionFilter, NewExecution, NewExecutionEvent, NewGateResult, StepBatch, StoreError,
};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

/// Execute an approved plan: its targets are selected, its pre-deployment quality gates
/// decided, its waves compiled, and the execution is queued for the orchestrator (with its
/// post-deployment gates, run after each wave).
#[utoipa::path(post, path = "/api/deployments/execute", tag = "deployments",
    request_body = ExecuteRequest,
    responses((status = 202, body = ExecutionView), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "not approved, already executed, no targets, too many deployments running, or a pre-deployment quality gate did not pass (rule pre_deployment_gate, naming the gate and why)"),
        (status = 422, body = Problem, description = "passed_gates names a gate that is not a pre-deployment gate waiting for a person")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    caller.principal.require(Role::Operator)?;
    let plan = state
        .store
        .get_plan(&req.plan_id)
        .await
        .map_err(not_found_as("plan", &req.plan_id))?;
    match plan.status.as_str() {
        "approved" => {}
        "pending_approval" => {
            let approvals = state.store.list_approvals(&plan.id).await?;
            let counted = super::plans::counted_approvals(&plan, &approvals);
            let needed = state
                .environment(&plan.target_environment)
                .map(|e| e.approvals_needed())
                .unwrap_or(1);
            return Err(ApiError::conflict(format!(
                "plan {} needs {} more approval(s) before it can run",
                plan.id,
                (needed - counted).max(1)
            )));
        }
        other => {
            return Err(ApiError::conflict(format!(
                "plan {} is {other}; only an approved plan can be executed",
                plan.id
            )));
        }
    }
    let request = super::plans::request_of(&plan)?;
    // The fleet may have changed since the plan was made: check again.
    let checked = crate::validate::check_plan(&state, &request)
        .await
        .map_err(|e| e.with_status(StatusCode::CONFLICT))?;
    if let Some(max) = checked.environment.max_concurrent_deployments {
        let active = state
            .store
            .list_executions(&ExecutionFilter {
                status: vec!["pending".into(), "running".into(), "paused".into()],
                environment: Some(plan.target_environment.clone()),
                limit: Some(max + 1),
                ..Default::default()
            })
            .await?;
        if active.len() as i64 >= max {
            return Err(ApiError::conflict(format!(
                "{} already runs {} deployment(s), its max_concurrent_deployments",
                plan.target_environment,
                active.len()
            )));
        }
    }
    let share = request
        .rollout_percentage
        .unwrap_or(cutover_core::engine::Percent::HUNDRED);
    let n = u32::try_from(checked.targets.len()).unwrap_or(u32::MAX);
    let take = share.of_ceil(n).min(n) as usize;
    let targets: Vec<String> = checked
        .targets
        .iter()
        .take(take)
        .map(|t| t.id.clone())
        .collect();
    if targets.is_empty() {
        let mut e = ApiError::rule(
            "targets_selected",
            format!(
                "no target in {} matches the plan's selector",
                plan.target_environment
            ),
        );
        e.status = StatusCode::CONFLICT;
        return Err(e);
    }
    // The rule of quality gates (crate::quality_gates): pre-deployment gates now,
    // before any target is touched; post-deployment gates after each wave.
    let gates = state.settings.gates_for(&plan.target_environment);
    let mut pre: Vec<GateDef> = gates
        .pre_deployment
        .iter()
        .map(GateDef::from_config)
        .collect();
    let mut post: Vec<GateDef> = gates
        .post_deployment
        .iter()
        .map(GateDef::from_config)
        .collect();
    // Health checks: before a deployment the built-in health_check gate runs
    // the environment's; a gate named after a check runs that one, before a
    // deployment or after each wave (after a wave the built-in one reads the
    // devices' own health reports).
    let mut checks = state.settings.environment_checks(&plan.target_environment);
    for g in &mut pre {
        if (g.kind(), g.name.as_str()) == ("builtin", "health_check") {
            g.checks = checks.iter().map(|c| c.name.clone()).collect();
        }
    }
    for g in pre.iter_mut().chain(post.iter_mut()) {
        if g.kind() == "health_check" {
            g.checks = vec![g.name.clone()];
        }
    }
    for g in &pre {
        for name in &g.checks {
            if !checks.iter().any(|c| &c.name == name)
                && let Some(c) = state.settings.health_check(&plan.target_environment, name)
            {
                checks.push(c);
            }
        }
    }
    if let Some(stray) = req.passed_gates.iter().find(|name| {
        !pre.iter()
            .any(|g| &g.name == *name && waits_for_person(g, Phase::Before).is_some())
    }) {
        let mut e = ApiError::bad_field(
            "passed_gates",
            format!(
                "{stray} is not a pre-deployment gate of {} that waits for a person",
                plan.target_environment
            ),
        );
        e.status = StatusCode::UNPROCESSABLE_ENTITY;
        return Err(e);
    }
    let before = if pre.is_empty() {
        Vec::new()
    } else {
        let selected = &checked.targets[..take];
        let ctx = RunContext {
            execution_id: None,
            plan_id: plan.id.clone(),
            environment: plan.target_environment.clone(),
            version: checked.version.clone(),
            wave: None,
            checks,
        };
        let outcomes = decide_before(
            &pre,
            &Before {
                artifact: &checked.artifact,
                targets: selected,
                public_keys: &state.settings.artifact_public_keys,
                passed_by_person: &req.passed_gates,
                principal: &caller.principal.id,
            },
            &ctx,
            &state.http,
        )
        .await;
        let failed: Vec<&GateOutcome> = outcomes.iter().filter(|o| !o.passed).collect();
        if !failed.is_empty() {
            let reasons: Vec<&str> = failed.iter().map(|o| o.reason.as_str()).collect();
            state
                .audit(
                    &caller.principal.id,
                    Some(caller.addr),
                    "deployment.execute",
                    &plan.id,
                    "refused",
                    json!({
                        "plan_id": plan.id,
                        "environment": plan.target_environment,
                        "pre_deployment_gates": outcomes.iter().map(|o| json!({
                            "gate": o.gate, "kind": o.kind, "passed": o.passed,
                            "waits_for_person": o.hold, "reason": o.reason, "measured": o.measured,
                        })).collect::<Vec<_>>(),
                    }),
                )
                .await;
            let mut e = ApiError::rule(
                "pre_deployment_gate",
                format!("plan {} was not started: {}", plan.id, reasons.join("; ")),
            );
            e.status = StatusCode::CONFLICT;
            let mut response = e.into_response();
            response.extensions_mut().insert(Audited);
            return Ok(response);
        }
        outcomes
    };
    let mut rollout = checked.rollout.clone();
    if !post.is_empty() {
        rollout.gate_after_each_wave = true;
    }
    let ends = rollout.wave_ends(targets.len() as u32);
    let mut waves = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for end in ends {
        waves.push(targets[start..end as usize].to_vec());
        start = end as usize;
    }
    state
        .store
        .transition_plan(&plan.id, &["approved"], "executing")
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::conflict(format!("plan {} is already being executed", plan.id))
            }
            other => other.into(),
        })?;
    let spec = json!({
        "plan_id": plan.id,
        "version": checked.version,
        "artifact_kind": checked.kind,
        "artifact_id": checked.artifact.id,
        "artifact_sha256": checked.artifact.sha256,
        "strategy": plan.strategy,
        "target_environment": plan.target_environment,
        "rollout": rollout,
        "targets": targets,
        "gates": post,
    });
    let inserted = state
        .store
        .insert_execution(&NewExecution {
            id: None,
            plan_id: plan.id.clone(),
            environment: plan.target_environment.clone(),
            status: "pending".into(),
            spec,
            state: serde_json::Value::Null,
            waves,
            created_by: caller.principal.id.clone(),
        })
        .await;
    let execution = match inserted {
        Ok(e) => e,
        Err(e) => {
            let _ = state
                .store
                .transition_plan(&plan.id, &["executing"], "approved")
                .await;
            return Err(e.into());
        }
    };
    for o in &before {
        let stored = state
            .store
            .insert_gate_result(&NewGateResult {
                execution_id: execution.id.clone(),
                wave_index: None,
                gate: o.gate.clone(),
                kind: o.kind.clone(),
                phase: "before".into(),
                passed: o.passed,
                detail: json!({ "reason": o.reason, "measured": o.measured }),
                at: Utc::now(),
            })
            .await;
        if let Err(e) = stored {
            tracing::warn!(execution = execution.id, error = %e, "cannot store a gate result");
        }
    }
    state.metrics.change("execution_started");
    state
        .audit(
            &caller.principal.id,
            Some(caller.addr),
            "deployment.execute",
            &execution.id,
            "success",
            json!({"plan_id": plan.id, "targets": execution.target_count, "environment": execution.environment}),
        )
        .await;
    state.changed(&execution.id);
    let view = execution_status(&state, &execution.id).await?;
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only these statuses, comma-separated (e.g. `running,paused`).
    pub status: Option<String>,
    pub environment: Option<String>,
    pub plan_id: Option<String>,
    /// Newest first; default 100.
    pub limit: Option<i64>,
}

/// List deployments, newest first.
#[utoipa::path(get, path = "/api/deployments", tag = "deployments", params(ListQuery),
    responses((status = 200, body = ExecutionList), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    let key = raw.unwrap_or_default();
    if let Some(body) = state.reads.list(&key) {
        return Ok(json_body(body));
    }
    let start = state.reads.begin();
    let rows = state
        .store
        .list_execution_heads(&ExecutionFilter {
            status: q
                .status
                .map(|s| {
                    s.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            environment: q.environment,
            plan_id: q.plan_id,
            limit: Some(q.limit.unwrap_or(100).clamp(1, 10_000)),
            ..Default::default()
        })
        .await?;
    let body = to_body(&ExecutionList {
        deployments: rows.into_iter().map(head_summary).collect(),
    })?;
    state.reads.put_list(&key, start, body.clone());
    Ok(json_body(body))
}

/// A JSON body as bytes, kept by the read cache and sent as is.
fn to_body<T: serde::Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))
}

fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A deployment's status with progress per wave.
#[utoipa::path(get, path = "/api/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, body = ExecutionView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Role::Viewer)?;
    if let Some(body) = state.reads.status(&id) {
        return Ok(json_body(body));
    }
    let start = state.reads.begin();
    let body = to_body(&execution_status(&state, &id).await?)?;
    state.reads.put_status(&id, start, body.clone());
    Ok(json_body(body))
}

/// Live progress as server-sent events: a `progress` event (the same body as
/// `GET /api/deployments/{id}`) whenever it changes, and `end` once the deployment is final.
#[utoipa::path(get, path = "/api/deployments/{id}/events", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 200, content_type = "text/event-stream", description = "progress events"),
        (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    principal.require(Role::Viewer)?;
    let first = execution_status(&state, &id).await?;
    let poll = state.settings.event_poll;
    struct Cursor {
        state: AppState,
        id: String,
        last: Option<ExecutionView>,
        pending: Option<ExecutionView>,
        done: bool,
        changes: tokio::sync::broadcast::Receiver<String>,
        closing: tokio::sync::watch::Receiver<bool>,
    }
    let cursor = Cursor {
        changes: state.changes.subscribe(),
        closing: state.closing.subscribe(),
        state,
        id,
        last: None,
        pending: Some(first),
        done: false,
    };
    let stream = futures::stream::unfold(cursor, move |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            if let Some(view) = c.pending.take()
                && c.last.as_ref() != Some(&view)
            {
                let event = Event::default()
                    .event("progress")
                    .json_data(&view)
                    .unwrap_or_else(|_| Event::default().event("progress"));
                c.last = Some(view);
                return Some((Ok(event), c));
            }
            if c.last.as_ref().is_some_and(|v| terminal(&v.summary.status)) {
                c.done = true;
                return Some((Ok(Event::default().event("end").data(c.id.clone())), c));
            }
            if *c.closing.borrow() {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = c.changes.recv() => {}
                _ = c.closing.changed() => { return None; }
            }
            match execution_status(&c.state, &c.id).await {
                Ok(view) => c.pending = Some(view),
                Err(_) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The statuses from which each command makes sense.
fn allowed_from(command: &str) -> &'static [&'static str] {
    match command {
        "pause" => &["pending", "running"],
        "resume" => &["paused"],
        "cancel" => &["pending", "running", "paused"],
        "rollback" => &["pending", "running", "paused", "succeeded"],
        "promote" => &["running", "paused"],
        _ => &[],
    }
}

/// Appends an operator command to the execution's event log (retrying when another
/// writer took the next sequence number) and wakes the orchestrator.
async fn command(
    state: AppState,
    caller: Caller,
    id: String,
    command: &'static str,
) -> Result<Response, ApiError> {
    caller.principal.require(Role::Operator)?;
    let execution = state
        .store
        .get_execution(&id)
        .await
        .map_err(not_found_as("deployment", &id))?;
    if !allowed_from(command).contains(&execution.status.as_str()) {
        return Err(ApiError::conflict(format!(
            "deployment {id} is {}; {command} applies to {} deployments",
            execution.status,
            allowed_from(command).join(", ")
        )));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let events = state.store.load_execution_events(&id, 0).await?;
        let seq = events.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
        let batch = StepBatch {
            execution_events: vec![NewExecutionEvent {
                execution_id: id.clone(),
                seq,
                kind: "operator".into(),
                payload: json!({"type": "operator", "command": command, "by": caller.principal.id}),
                at: Utc::now(),
            }],
            ..Default::default()
        };
        match state.store.commit_step(&batch).await {
            Ok(()) => break,
            Err(StoreError::Conflict(_)) if attempt < 8 => {
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    state.metrics.change(&format!("command_{command}"));
    state
        .audit(
            &caller.principal.id,
            Some(caller.addr),
            &format!("deployment.{command}"),
            &id,
            "success",
            json!({"status_before": execution.status}),
        )
        .await;
    state.changed(&id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(CommandAccepted {
            execution_id: id,
            command: command.to_string(),
            status: "accepted".into(),
        }),
    )
        .into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}

/// Cancel a deployment: pending targets are skipped, actions in progress canceled.
#[utoipa::path(post, path = "/api/deployments/{id}/cancel", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 202, body = CommandAccepted), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the deployment's status does not allow it")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    command(state, caller, id, "cancel").await
}

/// Roll back every target the deployment touched (also after it succeeded).
#[utoipa::path(post, path = "/api/deployments/{id}/rollback", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 202, body = CommandAccepted), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the deployment's status does not allow it")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    command(state, caller, id, "rollback").await
}

/// Stop dispatching; actions in progress go on.
#[utoipa::path(post, path = "/api/deployments/{id}/pause", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 202, body = CommandAccepted), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the deployment's status does not allow it")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    command(state, caller, id, "pause").await
}

/// Go on after a pause.
#[utoipa::path(post, path = "/api/deployments/{id}/resume", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 202, body = CommandAccepted), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the deployment's status does not allow it")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    command(state, caller, id, "resume").await
}

/// End the current canary bake now and go on to the next wave.
#[utoipa::path(post, path = "/api/deployments/{id}/promote", tag = "deployments",
    params(("id" = String, Path, description = "execution id")),
    responses((status = 202, body = CommandAccepted), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "the deployment's status does not allow it")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    command(state, caller, id, "promote").await
}
