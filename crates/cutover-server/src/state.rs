//! The state every handler shares: the store, the settings, the verifiers, the limiters,
//! the metrics and the hook that wakes the orchestrator.

use crate::auth::{JwtVerifier, KeyVerifier, Principal};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::ratelimit::RateLimiter;
use crate::settings::{EnvironmentSettings, ServerSettings};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use cutover_store::{NewAuditEntry, Store};
use std::net::IpAddr;
use std::sync::Arc;

/// Tells the orchestrator that an execution has something new (created, or an operator
/// command appended) so it need not wait for its next poll.
pub trait ExecutionWaker: Send + Sync + 'static {
    fn wake(&self, execution_id: &str);
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub settings: ServerSettings,
    pub keys: KeyVerifier,
    pub jwt: JwtVerifier,
    /// Per client address.
    pub ip_limiter: Option<RateLimiter>,
    /// Per authenticated caller.
    pub caller_limiter: Option<RateLimiter>,
    pub metrics: Metrics,
    pub waker: Option<Arc<dyn ExecutionWaker>>,
    /// Execution ids this server changed, so open event streams look at once.
    pub changes: tokio::sync::broadcast::Sender<String>,
    pub http: reqwest::Client,
    /// Deployment status and list bodies, dropped when an execution changes.
    pub reads: crate::read_cache::ReadCache,
    /// Set when the server is shutting down, so event streams end.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        store: Store,
        settings: ServerSettings,
        waker: Option<Arc<dyn ExecutionWaker>>,
    ) -> Self {
        let limiter = |s: &ServerSettings| {
            s.security
                .rate_limit
                .map(|r| RateLimiter::new(r.max_requests, r.window))
        };
        let (changes, _) = tokio::sync::broadcast::channel(256);
        // One TLS backend for the process (a no-op when already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(settings.health_check_timeout)
            .build()
            .unwrap_or_default();
        AppState(Arc::new(Inner {
            keys: KeyVerifier::new(settings.key_secret.clone()),
            jwt: JwtVerifier::new(settings.security.jwt.clone()),
            ip_limiter: limiter(&settings),
            caller_limiter: limiter(&settings),
            metrics: Metrics::new(),
            waker,
            changes,
            http,
            closing: tokio::sync::watch::Sender::new(false),
            reads: crate::read_cache::ReadCache::new(settings.read_cache_ttl),
            store,
            settings,
        }))
    }

    pub fn environment(&self, name: &str) -> Option<&EnvironmentSettings> {
        self.settings.environments.iter().find(|e| e.name == name)
    }

    /// An API command changed `execution_id`: nudges the orchestrator, then [`Self::noted`].
    pub fn changed(&self, execution_id: &str) {
        if let Some(w) = &self.waker {
            w.wake(execution_id);
        }
        self.noted(execution_id);
    }

    /// `execution_id` changed in the store: cached reads of it are dropped before open
    /// event streams look again.
    pub fn noted(&self, execution_id: &str) {
        self.reads.changed(execution_id);
        let _ = self.changes.send(execution_id.to_string());
    }

    /// Writes one audit row; a failure to write is logged (the change itself already
    /// happened and is not undone).
    pub async fn audit(
        &self,
        actor: &str,
        source: Option<IpAddr>,
        action: &str,
        subject: &str,
        result: &str,
        details: serde_json::Value,
    ) {
        let entry = NewAuditEntry {
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            source_ip: source.map(|ip| ip.to_string()),
            result: result.to_string(),
            details,
            at: None,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(error = %e, action, subject, "cannot write the audit log");
        }
    }
}

/// The client's address as the guard resolved it (peer, or X-Forwarded-For from a
/// trusted proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .ok_or_else(|| ApiError::internal("client address missing: guard not installed"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::unauthorized("credentials required: X-API-Key or Authorization: Bearer")
        })
    }
}

/// Who did a change and from where, for handlers that audit.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub addr: IpAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, s).await?;
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, s).await?;
        Ok(Caller { principal, addr })
    }
}
