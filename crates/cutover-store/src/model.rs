//! Rows read from the store and the values written to it.
//!
//! Ids are prefixed strings (`plan_…`, `exec_…`) built from UUID v7 so they sort by creation
//! time; timestamps are UTC with microsecond precision (what PostgreSQL keeps), so a value
//! written and read back compares equal on both backends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Which database a [`crate::Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        })
    }
}

/// An environment and its policy, as synced from the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct EnvironmentRow {
    pub name: String,
    /// Order in the promotion chain (development 0, testing 1, ...).
    pub position: i64,
    pub approval_required: bool,
    pub required_approvals: i64,
    pub auto_rollback: bool,
    pub max_concurrent_deployments: Option<i64>,
    /// The environment's full configuration section, kept as written.
    #[sqlx(json)]
    pub config: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A target to create or update (matched by `id`, which the operator or agent chooses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewTarget {
    pub id: String,
    pub name: String,
    pub environment: String,
    /// `device` or `host`.
    pub kind: String,
    pub hardware_model: Option<String>,
    pub current_version: Option<String>,
    /// Replaces the target's groups.
    pub groups: Vec<String>,
    /// Replaces the target's labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TargetRow {
    pub id: String,
    pub name: String,
    pub environment: String,
    pub kind: String,
    pub hardware_model: Option<String>,
    pub current_version: Option<String>,
    #[sqlx(json)]
    pub inventory: Value,
    /// Hash of the target's own credential; never the credential itself.
    #[serde(skip_serializing)]
    pub credential_hash: Option<String>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(skip)]
    pub groups: Vec<String>,
    #[sqlx(skip)]
    pub labels: BTreeMap<String, String>,
}

/// Which targets to list; every field set narrows the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetFilter {
    pub environment: Option<String>,
    pub group: Option<String>,
    /// Every `(key, value)` must match.
    pub labels: Vec<(String, String)>,
    pub hardware_model: Option<String>,
    pub kind: Option<String>,
    /// Only these ids (an explicit selector).
    pub ids: Option<Vec<String>>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewArtifact {
    /// Left empty, the store assigns `art_…`.
    pub id: Option<String>,
    pub version: String,
    /// `firmware` or `release`.
    pub kind: String,
    /// Lowercase hex sha256 of the payload.
    pub sha256: String,
    pub size_bytes: i64,
    pub signature: Option<String>,
    pub signing_key_id: Option<String>,
    pub storage_path: Option<String>,
    pub compatible_hardware: Vec<String>,
    pub min_current_version: Option<String>,
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: String,
    pub version: String,
    pub kind: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub signature: Option<String>,
    pub signing_key_id: Option<String>,
    pub storage_path: Option<String>,
    #[sqlx(json)]
    pub compatible_hardware: Vec<String>,
    pub min_current_version: Option<String>,
    #[sqlx(json)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewPlan {
    /// Left empty, the store assigns `plan_…`.
    pub id: Option<String>,
    pub name: String,
    pub artifact_id: Option<String>,
    pub version: String,
    pub source_environment: Option<String>,
    pub target_environment: String,
    pub strategy: String,
    /// Strategy parameters, selector, gates, rollback criteria, schedule: as the API received them.
    pub spec: Value,
    /// Initial status; empty means `draft`.
    pub status: String,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PlanRow {
    pub id: String,
    pub name: String,
    pub artifact_id: Option<String>,
    pub version: String,
    pub source_environment: Option<String>,
    pub target_environment: String,
    pub strategy: String,
    #[sqlx(json)]
    pub spec: Value,
    pub status: String,
    /// Bumped by every transition.
    pub revision: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewApproval {
    pub plan_id: String,
    pub approver: String,
    /// `approve` or `reject`.
    pub decision: String,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApprovalRow {
    pub id: String,
    pub plan_id: String,
    pub approver: String,
    pub decision: String,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An execution to create, with its waves already compiled (the engine's work).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewExecution {
    /// Left empty, the store assigns `exec_…`.
    pub id: Option<String>,
    pub plan_id: String,
    pub environment: String,
    /// Empty means `pending`.
    pub status: String,
    /// The compiled plan the engine runs.
    pub spec: Value,
    /// The engine's initial state snapshot.
    pub state: Value,
    /// Target ids of each wave, in order; one pending action is created per target.
    pub waves: Vec<Vec<String>>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ExecutionRow {
    pub id: String,
    pub plan_id: String,
    pub environment: String,
    pub status: String,
    #[sqlx(json)]
    pub spec: Value,
    #[sqlx(json)]
    pub state: Value,
    pub target_count: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Any of these statuses; empty means all.
    pub status: Vec<String>,
    pub plan_id: Option<String>,
    pub environment: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Newest first; `None` means 100.
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct WaveRow {
    pub execution_id: String,
    pub wave_index: i64,
    pub status: String,
    pub target_count: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ActionRow {
    pub id: String,
    pub execution_id: String,
    pub target_id: String,
    pub wave_index: i64,
    pub status: String,
    pub attempt: i64,
    /// Highest report sequence applied (reports at or below it are repeats).
    pub last_seq: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One input of the rollout engine, appended to the execution's replay log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewExecutionEvent {
    pub execution_id: String,
    /// Chosen by the writer, 1, 2, 3, ... per execution; a repeat is a [`crate::StoreError::Conflict`].
    pub seq: i64,
    pub kind: String,
    pub payload: Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ExecutionEventRow {
    pub execution_id: String,
    pub seq: i64,
    pub kind: String,
    #[sqlx(json)]
    pub payload: Value,
    pub at: DateTime<Utc>,
}

/// A reported transition of one action (append-only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewActionEvent {
    pub execution_id: String,
    pub action_id: String,
    pub target_id: String,
    /// The agent's report sequence.
    pub seq: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ActionEventRow {
    pub id: i64,
    pub execution_id: String,
    pub action_id: String,
    pub target_id: String,
    pub seq: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    #[sqlx(json)]
    pub detail: Value,
}

/// A change of one action's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionUpdate {
    pub action_id: String,
    pub status: String,
    /// Raised to this value if higher.
    pub last_seq: Option<i64>,
    /// Replaces the action's error (`None` clears it).
    pub error: Option<String>,
    /// Add one to the attempt counter (a retry dispatch).
    pub bump_attempt: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveUpdate {
    pub execution_id: String,
    pub wave_index: i64,
    pub status: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionUpdate {
    pub execution_id: String,
    pub status: Option<String>,
    /// The engine's new state snapshot.
    pub state: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// Proof that the writer still owns the execution: `commit_step` refuses the batch (Conflict)
/// when the lease is held by someone else or has a different epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseFence {
    pub resource: String,
    pub owner: String,
}

/// Everything one engine step (or a batch of steps) writes, committed in one transaction.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepBatch {
    pub fence: Option<LeaseFence>,
    pub execution_events: Vec<NewExecutionEvent>,
    pub action_updates: Vec<ActionUpdate>,
    pub wave_updates: Vec<WaveUpdate>,
    pub execution_update: Option<ExecutionUpdate>,
    pub action_events: Vec<NewActionEvent>,
    pub outbox: Vec<NewOutboxMessage>,
    pub gate_results: Vec<NewGateResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewGateResult {
    pub execution_id: String,
    pub wave_index: Option<i64>,
    pub gate: String,
    /// builtin, command, http, manual.
    pub kind: String,
    /// `before` or `after`.
    pub phase: String,
    pub passed: bool,
    pub detail: Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct GateResultRow {
    pub id: i64,
    pub execution_id: String,
    pub wave_index: Option<i64>,
    pub gate: String,
    pub kind: String,
    pub phase: String,
    pub passed: bool,
    #[sqlx(json)]
    pub detail: Value,
    pub at: DateTime<Utc>,
}

/// A notification to deliver at least once; a repeated idempotency key is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOutboxMessage {
    pub idempotency_key: String,
    /// email, slack, webhook, ...
    pub channel: String,
    pub payload: Value,
    pub available_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub channel: String,
    #[sqlx(json)]
    pub payload: Value,
    /// pending, claimed or done.
    pub status: String,
    /// Failed deliveries so far.
    pub attempts: i64,
    pub available_at: DateTime<Utc>,
    pub claimed_by: Option<String>,
    pub claimed_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub source_ip: Option<String>,
    /// success, denied, failed, ...
    pub result: String,
    pub details: Value,
    /// `None` means now.
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// 1, 2, 3, ... without gaps.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub source_ip: Option<String>,
    pub result: String,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub subject: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only rows with a larger `seq` (paging).
    pub after_seq: Option<i64>,
    /// Oldest first; `None` means 1000.
    pub limit: Option<i64>,
}

/// The result of recomputing the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum AuditVerification {
    Ok {
        rows: i64,
    },
    /// `seq` is the first row that was changed, or the first that is missing.
    Broken {
        seq: i64,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewApiKey {
    /// Left empty, the store assigns `key_…`.
    pub id: Option<String>,
    /// The key's public prefix, used to find it.
    pub prefix: String,
    /// HMAC of the whole key; the key itself is never stored.
    pub hash: String,
    pub name: String,
    pub role: String,
    pub created_by: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub prefix: String,
    #[serde(skip_serializing)]
    pub hash: String,
    pub name: String,
    pub role: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NewUser {
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub role: String,
    /// argon2 PHC string; `None` keeps the stored one.
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub role: String,
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct LeaseRow {
    pub resource: String,
    pub owner: String,
    /// Incremented each time the lease changes owner (a fencing token).
    pub epoch: i64,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSchedule {
    pub plan_id: String,
    pub run_at: DateTime<Utc>,
    /// After this the schedule is missed rather than run late.
    pub window_end: Option<DateTime<Utc>>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: String,
    pub plan_id: String,
    pub run_at: DateTime<Utc>,
    pub window_end: Option<DateTime<Utc>>,
    /// pending, fired, canceled, missed.
    pub status: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
}

/// A secret as stored: ciphertext only, with the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSecret {
    pub name: String,
    pub key_id: String,
    /// Nonce and sealed bytes, as the server's cipher lays them out.
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SecretRow {
    pub name: String,
    pub key_id: String,
    #[serde(skip_serializing)]
    pub ciphertext: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
