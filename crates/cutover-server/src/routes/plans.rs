//! Deployment plans: create (validated), list, show, approve.
//!
//! A plan to an environment that requires approval starts as `pending_approval` and becomes
//! `approved` once enough distinct approvers said so; the plan's creator never counts as one.

use crate::app::Audited;
use crate::auth::{Principal, Role};
use crate::dto::{ApprovalView, ApproveRequest, ApproveResponse, CreatePlan, PlanList, PlanView};
use crate::problem::{ApiError, ApiJson, Problem, not_found_as, parse_json};
use crate::state::{AppState, Caller};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cutover_store::{ApprovalRow, NewApproval, NewPlan, PlanRow};
use serde::Deserialize;
use serde_json::json;

/// The request a plan was created from, as stored in its spec.
pub fn request_of(plan: &PlanRow) -> Result<CreatePlan, ApiError> {
    serde_json::from_value(plan.spec.get("request").cloned().unwrap_or_default()).map_err(|e| {
        ApiError::internal(format!("plan {}: stored request unreadable: {e}", plan.id))
    })
}

/// Distinct approvers that count: approvals, not from the creator.
pub fn counted_approvals(plan: &PlanRow, approvals: &[ApprovalRow]) -> i64 {
    let mut seen: Vec<&str> = approvals
        .iter()
        .filter(|a| a.decision == "approve" && a.approver != plan.created_by)
        .map(|a| a.approver.as_str())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() as i64
}

pub fn plan_view(state: &AppState, plan: &PlanRow, approvals: &[ApprovalRow]) -> PlanView {
    let required = state
        .environment(&plan.target_environment)
        .map(|e| e.approvals_needed())
        .unwrap_or(0);
    PlanView {
        id: plan.id.clone(),
        plan_id: plan.id.clone(),
        name: plan.name.clone(),
        firmware_version: plan.version.clone(),
        artifact_kind: plan
            .spec
            .get("artifact_kind")
            .and_then(|v| v.as_str())
            .unwrap_or("firmware")
            .to_string(),
        artifact_id: plan.artifact_id.clone(),
        source_environment: plan.source_environment.clone(),
        target_environment: plan.target_environment.clone(),
        strategy: plan.strategy.clone(),
        status: plan.status.clone(),
        required_approvals: required,
        approvals: approvals
            .iter()
            .map(|a| ApprovalView {
                approver: a.approver.clone(),
                decision: a.decision.clone(),
                comment: a.comment.clone(),
                created_at: a.created_at,
            })
            .collect(),
        created_by: plan.created_by.clone(),
        created_at: plan.created_at,
        updated_at: plan.updated_at,
        spec: plan.spec.clone(),
    }
}

/// Create a deployment plan; it is checked against every rule first.
#[utoipa::path(post, path = "/api/deployment-plans", tag = "plans",
    request_body = CreatePlan,
    responses((status = 201, body = PlanView),
        (status = 400, body = Problem, description = "bad JSON (naming the field) or a rule refused the plan (naming the rule)"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreatePlan>,
) -> Result<Response, ApiError> {
    caller.principal.require(Role::Operator)?;
    let checked = crate::validate::check_plan(&state, &req).await?;
    let needed = checked.environment.approvals_needed();
    let status = if needed > 0 {
        "pending_approval"
    } else {
        "approved"
    };
    let spec = json!({
        "request": req,
        "artifact_kind": checked.kind,
        "rollout": checked.rollout,
        "selected_targets": checked.targets.len(),
    });
    let plan = state
        .store
        .insert_plan(&NewPlan {
            id: None,
            name: req.name.clone(),
            artifact_id: Some(checked.artifact.id.clone()),
            version: checked.version.clone(),
            source_environment: req.source_environment.clone(),
            target_environment: req.target_environment.clone(),
            strategy: req.strategy.as_str().to_string(),
            spec,
            status: status.to_string(),
            created_by: caller.principal.id.clone(),
        })
        .await?;
    state.metrics.change("plan_created");
    state
        .audit(
            &caller.principal.id,
            Some(caller.addr),
            "plan.create",
            &plan.id,
            "success",
            json!({"name": plan.name, "version": plan.version, "target_environment": plan.target_environment, "strategy": plan.strategy, "status": plan.status}),
        )
        .await;
    let view = plan_view(&state, &plan, &[]);
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Most recent first; default 100.
    pub limit: Option<i64>,
    /// Only plans with this status.
    pub status: Option<String>,
}

/// List deployment plans, newest first.
#[utoipa::path(get, path = "/api/deployment-plans", tag = "plans", params(ListQuery),
    responses((status = 200, body = PlanList), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ListQuery>,
) -> Result<Json<PlanList>, ApiError> {
    principal.require(Role::Viewer)?;
    let mut plans = state
        .store
        .list_plans(q.limit.unwrap_or(100).clamp(1, 10_000))
        .await?;
    if let Some(s) = &q.status {
        plans.retain(|p| &p.status == s);
    }
    let mut out = Vec::with_capacity(plans.len());
    for p in &plans {
        let approvals = state.store.list_approvals(&p.id).await?;
        out.push(plan_view(&state, p, &approvals));
    }
    Ok(Json(PlanList { plans: out }))
}

/// One deployment plan with its approvals.
#[utoipa::path(get, path = "/api/deployment-plans/{id}", tag = "plans",
    params(("id" = String, Path, description = "plan id")),
    responses((status = 200, body = PlanView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    principal.require(Role::Viewer)?;
    let plan = state
        .store
        .get_plan(&id)
        .await
        .map_err(not_found_as("plan", &id))?;
    let approvals = state.store.list_approvals(&id).await?;
    Ok(Json(plan_view(&state, &plan, &approvals)))
}

/// Approve a plan. Needs the approver role; the plan's creator cannot approve it; a plan
/// already executed cannot be approved (409).
#[utoipa::path(post, path = "/api/deployment-plans/{id}/approve", tag = "plans",
    params(("id" = String, Path, description = "plan id")),
    request_body(content = Option<ApproveRequest>, description = "optional comment"),
    responses((status = 200, body = ApproveResponse), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "not an approver, or the plan's creator"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "already approved by this caller, or already executed")),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    caller.principal.require(Role::Approver)?;
    let req: ApproveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveRequest::default()
    } else {
        parse_json(&body)?
    };
    let plan = state
        .store
        .get_plan(&id)
        .await
        .map_err(not_found_as("plan", &id))?;
    match plan.status.as_str() {
        "executing" | "completed" | "failed" => {
            return Err(ApiError::conflict(format!(
                "plan {id} was already executed (status {}); approvals no longer apply",
                plan.status
            )));
        }
        "canceled" | "rejected" => {
            return Err(ApiError::conflict(format!(
                "plan {id} is {}; it cannot be approved",
                plan.status
            )));
        }
        _ => {}
    }
    if plan.created_by == caller.principal.id {
        let mut e = ApiError::forbidden(format!(
            "rule creator_cannot_approve: {} created plan {id} and cannot approve it",
            caller.principal.name
        ));
        e.rule = Some("creator_cannot_approve".into());
        return Err(e);
    }
    state
        .store
        .insert_approval(&NewApproval {
            plan_id: id.clone(),
            approver: caller.principal.id.clone(),
            decision: "approve".into(),
            comment: req.comment.clone(),
        })
        .await
        .map_err(|e| match e {
            cutover_store::StoreError::Conflict(_) => ApiError::conflict(format!(
                "{} already approved plan {id}",
                caller.principal.name
            )),
            other => other.into(),
        })?;
    let approvals = state.store.list_approvals(&id).await?;
    let counted = counted_approvals(&plan, &approvals);
    let needed = state
        .environment(&plan.target_environment)
        .map(|e| e.approvals_needed())
        .unwrap_or(0);
    let mut plan = plan;
    if plan.status == "pending_approval" && counted >= needed {
        plan = match state
            .store
            .transition_plan(&id, &["pending_approval"], "approved")
            .await
        {
            Ok(p) => p,
            // Someone else's approval got there first.
            Err(cutover_store::StoreError::Conflict(_)) => state.store.get_plan(&id).await?,
            Err(e) => return Err(e.into()),
        };
    }
    state.metrics.change("plan_approved");
    state
        .audit(
            &caller.principal.id,
            Some(caller.addr),
            "plan.approve",
            &id,
            "success",
            json!({"counted": counted, "needed": needed, "status": plan.status, "comment": req.comment}),
        )
        .await;
    let approved = matches!(plan.status.as_str(), "approved" | "executing" | "completed");
    let body = ApproveResponse {
        plan: plan_view(&state, &plan, &approvals),
        approvals_counted: counted,
        approvals_needed: needed,
        approved,
    };
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}
