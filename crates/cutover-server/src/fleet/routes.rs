//! HTTP routes of the fleet plane: artifact upload, list and range-served
//! download under `/api/artifacts`, and the polling exchange of agents under
//! `/api/agent/v1`.

use super::{Inbound, Shared};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cutover_core::protocol::{AgentMessage, ServerMessage};
use cutover_store::NewArtifact;
use serde::Deserialize;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/api/artifacts", get(list))
        .route("/api/artifacts/upload", post(upload))
        .route("/api/artifacts/{id}/download", get(download))
        .route("/api/agent/v1/targets/{id}/exchange", post(exchange))
        .route("/api/agent/v1/artifacts/{id}/download", get(agent_download))
        .with_state(shared)
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({ "type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// Every artifact, newest first as the store returns them.
async fn list(State(s): State<Arc<Shared>>) -> Response {
    match s.store.list_artifacts().await {
        Ok(rows) => Json(serde_json::json!({ "artifacts": rows })).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    pub version: String,
    #[serde(default = "firmware")]
    pub kind: String,
    /// Comma-separated hardware models.
    #[serde(default)]
    pub hardware: Option<String>,
    pub signature: String,
    #[serde(default)]
    pub key_id: Option<String>,
}

fn firmware() -> String {
    "firmware".into()
}

/// Stores the body content-addressed and records the artifact; the signature
/// must be over the manifest of this content and version.
async fn upload(
    State(s): State<Arc<Shared>>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Response {
    if q.version.trim().is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "version must not be empty",
        );
    }
    let (sha, size) = match s.blobs.put(&body) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store the artifact: {e}"),
            );
        }
    };
    let hardware: Vec<String> = q
        .hardware
        .as_deref()
        .map(|h| {
            h.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let new = NewArtifact {
        id: None,
        version: q.version.clone(),
        kind: q.kind.clone(),
        sha256: sha.clone(),
        size_bytes: size as i64,
        signature: Some(q.signature.clone()),
        signing_key_id: q.key_id.clone(),
        storage_path: s.blobs.path(&sha).map(|p| p.display().to_string()),
        compatible_hardware: hardware,
        min_current_version: None,
        metadata: serde_json::json!({}),
    };
    match s.store.insert_artifact(&new).await {
        Ok(row) => (StatusCode::CREATED, Json(row)).into_response(),
        Err(e) if e.is_conflict() => problem(StatusCode::CONFLICT, e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The agents' download: authenticated by the target's own credential
/// (`X-Cutover-Target` and `Authorization: Bearer`), not by an API key.
async fn agent_download(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let target = headers
        .get("x-cutover-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Err(resp) = check_target(&s, &target, &headers).await {
        return resp;
    }
    download(State(s), Path(id), headers).await
}

/// Checks `Authorization: Bearer CREDENTIAL` against the target's stored key.
async fn check_target(s: &Shared, target: &str, headers: &HeaderMap) -> Result<(), Response> {
    let Some(credential) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "a target credential is needed (Authorization: Bearer)",
        ));
    };
    let expected = match s.store.get_target(target).await {
        Ok(row) => row.credential_hash,
        Err(_) => None,
    };
    let given = cutover_agent::device::mac::target_key_hex(credential);
    let ok = expected.is_some_and(|e| {
        use subtle::ConstantTimeEq;
        e.as_bytes().ct_eq(given.as_bytes()).into()
    });
    if ok {
        Ok(())
    } else {
        Err(problem(
            StatusCode::UNAUTHORIZED,
            format!("bad credential for target {target:?}"),
        ))
    }
}

/// Serves an artifact's bytes, honouring a single `Range: bytes=N-[M]`.
async fn download(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let row = match s.store.get_artifact(&id).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            return problem(StatusCode::NOT_FOUND, format!("artifact {id} not found"));
        }
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(path) = s.blobs.path(&row.sha256) else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "artifact has no valid digest",
        );
    };
    let size = row.size_bytes.max(0) as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        None => (0, size.saturating_sub(1)),
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let start: u64 = match a.trim().parse() {
                Ok(v) => v,
                Err(_) => {
                    return problem(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        format!("unsupported range {spec:?}"),
                    );
                }
            };
            let end = b
                .trim()
                .parse::<u64>()
                .unwrap_or(size.saturating_sub(1))
                .min(size.saturating_sub(1));
            if start >= size || start > end {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response();
            }
            (start, end)
        }
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    })
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read artifact {id}: {e}"),
            );
        }
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, len.to_string())
        .header("x-sha256", row.sha256.as_str());
    resp = if range.is_some() {
        resp.status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
    } else {
        resp.status(StatusCode::OK)
    };
    resp.body(Body::from(bytes))
        .unwrap_or_else(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The polling exchange: the agent's messages in, what waits for it out.
async fn exchange(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(messages): Json<Vec<AgentMessage>>,
) -> Response {
    if let Err(resp) = check_target(&s, &id, &headers).await {
        return resp;
    }
    s.http_targets
        .lock()
        .expect("http targets")
        .insert(id.clone());
    for message in messages {
        if s.inbound
            .send(Inbound {
                topic_target: id.clone(),
                message,
            })
            .await
            .is_err()
        {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the orchestrator is stopping",
            );
        }
    }
    let out: Vec<ServerMessage> = s
        .http_outbox
        .lock()
        .expect("http outbox")
        .remove(&id)
        .unwrap_or_default();
    Json(out).into_response()
}
