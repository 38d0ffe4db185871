//! Targets (read), API keys and the audit log (admin).

use crate::app::Audited;
use crate::auth::{Principal, Role};
use crate::dto::{
    AuditEntryView, AuditList, AuditVerifyView, CreateKey, KeyCreated, KeyList, KeyView,
    TargetList, TargetView,
};
use crate::problem::{ApiError, ApiJson, Problem, not_found_as};
use crate::state::{AppState, Caller};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use cutover_store::{ApiKeyRow, AuditFilter, AuditVerification, TargetFilter};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TargetQuery {
    pub environment: Option<String>,
    pub group: Option<String>,
    pub hardware_model: Option<String>,
    /// device or host.
    pub kind: Option<String>,
    pub limit: Option<i64>,
}

/// List targets (devices and hosts).
#[utoipa::path(get, path = "/api/targets", tag = "targets", params(TargetQuery),
    responses((status = 200, body = TargetList), (status = 401, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_targets(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<TargetQuery>,
) -> Result<Json<TargetList>, ApiError> {
    principal.require(Role::Viewer)?;
    let rows = state
        .store
        .list_targets(&TargetFilter {
            environment: q.environment,
            group: q.group,
            hardware_model: q.hardware_model,
            kind: q.kind,
            limit: Some(q.limit.unwrap_or(1000).clamp(1, 100_000)),
            ..Default::default()
        })
        .await?;
    Ok(Json(TargetList {
        targets: rows
            .into_iter()
            .map(|t| TargetView {
                id: t.id,
                name: t.name,
                environment: t.environment,
                kind: t.kind,
                hardware_model: t.hardware_model,
                current_version: t.current_version,
                groups: t.groups,
                labels: t.labels,
                last_seen_at: t.last_seen_at,
            })
            .collect(),
    }))
}

pub fn key_view(k: &ApiKeyRow) -> KeyView {
    KeyView {
        id: k.id.clone(),
        prefix: k.prefix.clone(),
        name: k.name.clone(),
        role: k.role.clone(),
        created_by: k.created_by.clone(),
        created_at: k.created_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
    }
}

/// Create an API key; the key is in this answer and never again.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    caller.principal.require(Role::Admin)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::bad_field("name", "field name: must not be empty"));
    }
    let expires_at = req
        .expires_in_days
        .map(|d| Utc::now() + TimeDelta::days(i64::from(d)));
    let (row, key) = crate::auth::create_key(
        &state.store,
        state.keys.secret(),
        req.name.trim(),
        req.role,
        Some(&caller.principal.id),
        expires_at,
    )
    .await?;
    state.metrics.change("key_created");
    state
        .audit(
            &caller.principal.id,
            Some(caller.addr),
            "key.create",
            &row.id,
            "success",
            json!({"name": row.name, "role": row.role, "prefix": row.prefix}),
        )
        .await;
    let mut response = (
        StatusCode::CREATED,
        Json(KeyCreated {
            key,
            info: key_view(&row),
        }),
    )
        .into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}

/// List API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    responses((status = 200, body = KeyList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<KeyList>, ApiError> {
    principal.require(Role::Admin)?;
    let keys = state.store.list_api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(key_view).collect(),
    }))
}

/// Revoke an API key at once.
#[utoipa::path(post, path = "/api/keys/{id}/revoke", tag = "keys",
    params(("id" = String, Path, description = "key id (key_…)")),
    responses((status = 200, body = KeyView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.principal.require(Role::Admin)?;
    let key = state
        .store
        .get_api_key(&id)
        .await
        .map_err(not_found_as("key", &id))?;
    state.store.revoke_api_key(&id, Utc::now()).await?;
    state.keys.forget(&key.prefix);
    let key = state.store.get_api_key(&id).await?;
    state.metrics.change("key_revoked");
    state
        .audit(
            &caller.principal.id,
            Some(caller.addr),
            "key.revoke",
            &id,
            "success",
            json!({"name": key.name, "prefix": key.prefix}),
        )
        .await;
    let mut response = Json(key_view(&key)).into_response();
    response.extensions_mut().insert(Audited);
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339.
    pub since: Option<DateTime<Utc>>,
    /// Only rows after this sequence number (paging).
    pub after_seq: Option<i64>,
    /// Oldest first; default 1000.
    pub limit: Option<i64>,
}

/// Read the audit log.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    principal.require(Role::Admin)?;
    let rows = state
        .store
        .list_audit(&AuditFilter {
            actor: q.actor,
            action: q.action,
            subject: q.subject,
            since: q.since,
            until: None,
            after_seq: q.after_seq,
            limit: Some(q.limit.unwrap_or(1000).clamp(1, 100_000)),
        })
        .await?;
    Ok(Json(AuditList {
        entries: rows
            .into_iter()
            .map(|r| AuditEntryView {
                seq: r.seq,
                at: r.at,
                actor: r.actor,
                action: r.action,
                subject: r.subject,
                source_ip: r.source_ip,
                result: r.result,
                details: r.details,
                hash: r.hash,
            })
            .collect(),
    }))
}

/// Recompute the audit log's hash chain: a changed or deleted row shows.
#[utoipa::path(get, path = "/api/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerifyView), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = []), ("bearer" = [])))]
pub async fn verify_audit(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<AuditVerifyView>, ApiError> {
    principal.require(Role::Admin)?;
    Ok(Json(verification_view(state.store.verify_audit().await?)))
}

pub fn verification_view(v: AuditVerification) -> AuditVerifyView {
    match v {
        AuditVerification::Ok { rows } => AuditVerifyView {
            status: "ok".into(),
            rows: Some(rows),
            seq: None,
            reason: None,
        },
        AuditVerification::Broken { seq, reason } => AuditVerifyView {
            status: "broken".into(),
            rows: None,
            seq: Some(seq),
            reason: Some(reason),
        },
    }
}
