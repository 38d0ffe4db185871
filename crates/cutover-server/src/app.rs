//! The router, the guard every request passes, and `serve`.
//!
//! Order of checks for each request: client address (peer, or `X-Forwarded-For` from a
//! trusted proxy) → IP allow-list (403) → per-address rate limit (429) → credentials
//! (401) → per-caller rate limit (429) → the handler, which checks the role (403). A change
//! that fails (any status but 2xx) is written to the audit log here; handlers audit their
//! own successes with the subject they changed. Agent endpoints (`/api/agent/…`) carry
//! their own per-target credentials and skip this guard.

use crate::auth::Principal;
use crate::fleet::{FleetPlane, ProgressEvent};
use crate::problem::ApiError;
use crate::ratelimit::Decision;
use crate::routes;
use crate::settings::ServerSettings;
use crate::state::{AppState, ClientAddr, ExecutionWaker};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cutover_store::Store;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Paths anyone may read without credentials.
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/api/openapi.json", "/", "/ui/app.js"];

fn is_public(path: &str) -> bool {
    PUBLIC_PATHS.contains(&path)
}

fn is_agent(path: &str) -> bool {
    path.starts_with("/api/agent/")
}

/// Marks a response whose change the handler already audited.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The API router with its guard, for `oneshot` tests and for `serve`.
pub fn build_router(state: AppState) -> Router {
    build_router_with(state, None)
}

/// [`build_router`] with extra routes (the fleet plane's) merged in behind the same guard.
pub fn build_router_with(state: AppState, extra: Option<Router>) -> Router {
    let mut router = routes::router().with_state(state.clone());
    if let Some(extra) = extra {
        router = router.merge(extra);
    }
    let body_limit = state.settings.security.max_body_bytes;
    router
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state, observe))
}

/// Counts and times every request by its route pattern.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".to_string());
    let response = next.run(req).await;
    let m = &state.metrics;
    m.requests
        .get_or_create(&crate::metrics::RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&crate::metrics::RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_agent(path) {
        return next.run(req).await;
    }
    let public = is_public(path);
    let healthz = path == "/healthz";
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let security = &state.settings.security;
    let client = crate::net::client_ip(peer, req.headers(), &security.trusted_proxies);
    req.extensions_mut().insert(ClientAddr(client));

    if !crate::net::allowed(client, &security.ip_allowlist) {
        state.metrics.refuse("not_allowed");
        return ApiError::forbidden(format!("address {client} is not in the allow-list"))
            .into_response();
    }
    if !healthz
        && let Some(limiter) = &state.ip_limiter
        && let Decision::Deny { retry_after_secs } = limiter.check(&format!("ip:{client}"))
    {
        state.metrics.refuse("rate_limited");
        return ApiError::too_many(
            retry_after_secs,
            format!("too many requests from {client}; retry in {retry_after_secs} s"),
        )
        .into_response();
    }
    // What a change is audited as; reads are not audited, so they skip building it.
    let change = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let (path, action) = if change {
        let path = req.uri().path().to_string();
        let action = format!(
            "{} {}",
            req.method(),
            req.extensions()
                .get::<MatchedPath>()
                .map(|m| m.as_str())
                .unwrap_or(&path)
        );
        (path, action)
    } else {
        (String::new(), String::new())
    };

    let principal = if public {
        authenticate(&state, req.headers()).await.ok().flatten()
    } else {
        match authenticate(&state, req.headers()).await {
            Ok(Some(p)) => Some(p),
            Ok(None) => {
                state.metrics.refuse("unauthenticated");
                let e = ApiError::unauthorized(
                    "credentials required: send X-API-Key or Authorization: Bearer",
                );
                if change {
                    state
                        .audit(
                            "anonymous",
                            Some(client),
                            &action,
                            &path,
                            "denied",
                            serde_json::json!({"status": 401}),
                        )
                        .await;
                }
                return e.into_response();
            }
            Err(e) => {
                state.metrics.refuse("unauthenticated");
                if change {
                    state
                        .audit(
                            "anonymous",
                            Some(client),
                            &action,
                            &path,
                            "denied",
                            serde_json::json!({"status": 401, "detail": e.detail}),
                        )
                        .await;
                }
                return e.into_response();
            }
        }
    };
    if let Some(p) = &principal {
        if let Some(limiter) = &state.caller_limiter
            && let Decision::Deny { retry_after_secs } = limiter.check(&p.bucket)
        {
            state.metrics.refuse("rate_limited");
            return ApiError::too_many(
                retry_after_secs,
                format!(
                    "too many requests for {}; retry in {retry_after_secs} s",
                    p.name
                ),
            )
            .into_response();
        }
        req.extensions_mut().insert(p.clone());
    }

    let response = next.run(req).await;
    if change && response.extensions().get::<Audited>().is_none() {
        let status = response.status();
        let result = match status {
            s if s.is_success() => "success",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "denied",
            s if s.is_client_error() => "refused",
            _ => "failed",
        };
        let detail = response
            .extensions()
            .get::<ApiError>()
            .map(|e| e.detail.clone());
        let actor = principal
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_else(|| "anonymous".into());
        if status == StatusCode::FORBIDDEN {
            state.metrics.refuse("forbidden");
        }
        state
            .audit(
                &actor,
                Some(client),
                &action,
                &path,
                result,
                serde_json::json!({"status": status.as_u16(), "detail": detail}),
            )
            .await;
    }
    response
}

/// The caller behind the request's credentials: `Ok(None)` when it sent none.
async fn authenticate(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if let Some(value) = headers.get("x-api-key") {
        if !state.settings.security.api_key_auth {
            return Err(ApiError::unauthorized(
                "API keys are turned off on this server (security.api_key_auth)",
            ));
        }
        let key = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("X-API-Key is not text"))?;
        return state.keys.verify(&state.store, key).await.map(Some);
    }
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Authorization is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be \"Bearer <token>\""))?;
        return state.jwt.verify(token.trim()).map(Some);
    }
    Ok(None)
}

/// Writes the configured environments into the store (created or updated).
pub async fn sync_environments(store: &Store, settings: &ServerSettings) -> anyhow::Result<()> {
    use anyhow::Context;
    let now = chrono::Utc::now();
    for env in &settings.environments {
        let row = cutover_store::EnvironmentRow {
            name: env.name.clone(),
            position: env.position,
            approval_required: env.approval_required,
            required_approvals: env.required_approvals,
            auto_rollback: env.auto_rollback,
            max_concurrent_deployments: env.max_concurrent_deployments,
            config: env.config.clone(),
            created_at: now,
            updated_at: now,
        };
        store
            .upsert_environment(&row)
            .await
            .with_context(|| format!("cannot save environment {}", env.name))?;
    }
    Ok(())
}

/// The API server: its store, settings, and what the fleet plane adds.
pub struct Server {
    pub settings: ServerSettings,
    pub store: Store,
    /// Routes merged into the app (the fleet plane's artifacts and agent endpoints).
    pub extra_routes: Option<Router>,
    pub waker: Option<Arc<dyn ExecutionWaker>>,
    /// What the orchestrator committed, so cached reads and event streams follow at once.
    pub execution_changes: Option<tokio::sync::broadcast::Receiver<ProgressEvent>>,
}

impl Server {
    pub fn new(settings: ServerSettings, store: Store) -> Self {
        Server {
            settings,
            store,
            extra_routes: None,
            waker: None,
            execution_changes: None,
        }
    }

    /// Serves the fleet plane's routes beside the API; the API wakes its orchestrator, and
    /// hears of every step it commits.
    pub fn with_fleet(mut self, plane: &FleetPlane) -> Self {
        self.extra_routes = Some(plane.router());
        self.waker = Some(Arc::new(plane.clone()));
        self.execution_changes = Some(plane.progress());
        self
    }

    /// Syncs environments, then serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        sync_environments(&self.store, &self.settings).await?;
        let state = AppState::new(self.store, self.settings, self.waker);
        if let Some(changes) = self.execution_changes {
            tokio::spawn(follow_commits(changes, state.clone()));
        }
        let closing = state.closing.clone();
        let shutdown = async move {
            shutdown.await;
            closing.send_replace(true);
        };
        let app = build_router_with(state, self.extra_routes);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        Ok(())
    }
}

/// Notes every execution the orchestrator committed a step of; after missing some (a
/// lagging receiver), drops every cached read.
async fn follow_commits(
    mut changes: tokio::sync::broadcast::Receiver<ProgressEvent>,
    state: AppState,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match changes.recv().await {
            Ok(ProgressEvent::Execution { execution_id, .. })
            | Ok(ProgressEvent::Decision { execution_id, .. }) => state.noted(&execution_id),
            Err(RecvError::Lagged(_)) => state.reads.clear(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Serves the API with `settings` over `store` on `listener` until `shutdown` completes.
pub async fn serve(
    settings: ServerSettings,
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::new(settings, store).serve(listener, shutdown).await
}

/// The future a role check returns.
type Checked = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;

/// A layer refusing (403) callers below `role` before the handler reads the body, so a
/// viewer sending a malformed plan learns that it may not, not what is wrong with it.
pub fn need(
    role: crate::auth::Role,
) -> axum::middleware::FromFnLayer<impl Fn(Request, Next) -> Checked + Clone, (), (Request,)> {
    middleware::from_fn(move |req: Request, next: Next| -> Checked {
        let allowed = req.extensions().get::<Principal>().map(|p| p.require(role));
        Box::pin(async move {
            match allowed {
                Some(Ok(())) => next.run(req).await,
                Some(Err(e)) => e.into_response(),
                None => ApiError::unauthorized(
                    "credentials required: X-API-Key or Authorization: Bearer",
                )
                .into_response(),
            }
        })
    })
}
