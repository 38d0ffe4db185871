//! The API's wire types: request and response bodies, one place, with their OpenAPI schemas.
//! Store rows convert into these at the edge, so the database layout can change without
//! changing the contract.

use chrono::{DateTime, Utc};
use cutover_core::engine::{Percent, Threshold};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The strategies of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    Immediate,
    Rolling,
    Canary,
    #[serde(alias = "blue-green", alias = "bluegreen")]
    BlueGreen,
}

impl StrategyName {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Immediate => "immediate",
            StrategyName::Rolling => "rolling",
            StrategyName::Canary => "canary",
            StrategyName::BlueGreen => "blue_green",
        }
    }
}

/// `POST /api/deployment-plans`: the seed's plan, plus optional strategy parameters and a
/// target selector. Unknown fields are refused so a misspelt parameter is not silently lost.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    /// E.g. "Production Rollout v1.2.0".
    pub name: String,
    /// The version to roll out (firmware); `version` is accepted too.
    #[serde(default, alias = "version")]
    pub firmware_version: Option<String>,
    /// `firmware` (default) or `release`.
    #[serde(default)]
    pub artifact_kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Where the version comes from; a plan from staging needs a version that succeeded there.
    #[serde(default)]
    pub source_environment: Option<String>,
    pub target_environment: String,
    pub strategy: StrategyName,
    /// Share of the selected targets this plan updates (default 100).
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub rollout_percentage: Option<Percent>,
    /// Canary: the first wave's share (default 10).
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub canary_percentage: Option<Percent>,
    /// Canary: cumulative steps ending at 100 (default canary_percentage, 25, 50, 100).
    #[serde(default)]
    #[schema(value_type = Option<Vec<f64>>)]
    pub canary_steps: Option<Vec<Percent>>,
    /// Canary: seconds to watch each wave before the next (default 600).
    #[serde(default)]
    pub bake_seconds: Option<u64>,
    /// Rolling: targets per wave, a count (`5`) or a share (`"10%"`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub batch_size: Option<Threshold>,
    /// Succeeded targets a wave needs before the next (default "95%").
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub success_threshold: Option<Threshold>,
    /// Failed targets of a wave above which it aborts (default "10%").
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub error_threshold: Option<Threshold>,
    /// At most this many targets updating at once.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Seconds after the last wave during which criteria are still watched.
    #[serde(default)]
    pub monitor_seconds: Option<u64>,
    /// The seed's rollback_criteria (max_failure_rate, health_check_failure, ...).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub rollback_criteria: Option<Value>,
    /// Only targets in all these groups.
    #[serde(default)]
    pub target_groups: Vec<String>,
    /// Only targets with all these labels.
    #[serde(default)]
    pub target_labels: BTreeMap<String, String>,
    /// Only targets of this hardware model.
    #[serde(default)]
    pub hardware_model: Option<String>,
    /// Exactly these targets.
    #[serde(default)]
    pub target_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub approver: String,
    pub decision: String,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanView {
    pub id: String,
    /// The same as `id`, as the seed's clients read it.
    pub plan_id: String,
    pub name: String,
    pub firmware_version: String,
    pub artifact_kind: String,
    pub artifact_id: Option<String>,
    pub source_environment: Option<String>,
    pub target_environment: String,
    pub strategy: String,
    /// draft, pending_approval, approved, executing, completed, failed, canceled, rejected.
    pub status: String,
    pub required_approvals: i64,
    pub approvals: Vec<ApprovalView>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The request as accepted, with defaults filled in.
    #[schema(value_type = Object)]
    pub spec: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<PlanView>,
}

/// `POST /api/deployment-plans/{id}/approve`; the body may be empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApproveResponse {
    pub plan: PlanView,
    /// Approvals that count (the creator's never does).
    pub approvals_counted: i64,
    pub approvals_needed: i64,
    pub approved: bool,
}

/// `POST /api/deployments/execute`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub plan_id: String,
    /// Pre-deployment gates that wait for a person (`manual`, or a check the server
    /// cannot run), which the caller says were passed; recorded with the caller's id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed_gates: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ProgressView {
    pub total: i64,
    pub pending: i64,
    pub in_progress: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rolled_back: i64,
    pub canceled: i64,
    /// Finished targets (any outcome) over all, 0 to 100.
    pub percent_complete: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WaveView {
    /// From 0.
    pub index: i64,
    pub status: String,
    pub target_count: i64,
    pub progress: ProgressView,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One execution, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ExecutionSummary {
    pub id: String,
    /// The same as `id`, as the seed's clients read it.
    pub execution_id: String,
    pub plan_id: String,
    pub environment: String,
    pub version: Option<String>,
    pub strategy: Option<String>,
    /// pending, running, paused, succeeded, failed, rolled_back, canceled.
    pub status: String,
    pub target_count: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// `GET /api/deployments/{id}`: the execution with its progress per wave.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ExecutionView {
    #[serde(flatten)]
    pub summary: ExecutionSummary,
    pub progress: ProgressView,
    pub waves: Vec<WaveView>,
    /// Why a paused deployment is held (a gate waiting for a person, a failed gate, a
    /// tripped criterion, an operator's pause); absent unless paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutionList {
    pub deployments: Vec<ExecutionSummary>,
}

/// The answer to execute, cancel, rollback, pause, resume and promote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommandAccepted {
    pub execution_id: String,
    pub command: String,
    /// Commands are applied by the orchestrator; this says they were recorded.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentView {
    pub name: String,
    pub display_name: Option<String>,
    pub stage: Option<String>,
    pub description: Option<String>,
    pub position: i64,
    pub approval_required: bool,
    pub required_approvals: i64,
    pub auto_rollback: bool,
    pub max_concurrent_deployments: Option<i64>,
    /// The environment's section of the configuration as written.
    #[schema(value_type = Object)]
    pub config: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentDetail {
    #[serde(flatten)]
    pub environment: EnvironmentView,
    pub target_count: i64,
    /// Targets per current version.
    pub versions: BTreeMap<String, i64>,
    /// Executions pending, running or paused here.
    pub active_deployments: Vec<ExecutionSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    pub id: String,
    pub name: String,
    pub environment: String,
    /// device or host.
    pub kind: String,
    pub hardware_model: Option<String>,
    pub current_version: Option<String>,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetList {
    pub targets: Vec<TargetView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthCheckResult {
    pub name: String,
    /// database or http.
    pub kind: String,
    /// healthy or unhealthy.
    pub status: String,
    pub latency_ms: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    /// healthy when every check is.
    pub status: String,
    pub checks: Vec<HealthCheckResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemMetrics {
    pub deployments_total: i64,
    pub deployments_by_status: BTreeMap<String, i64>,
    /// Succeeded over finished deployments, 0 to 100; none before the first finishes.
    pub success_rate: Option<f64>,
    pub active_deployments: i64,
    pub plans_pending_approval: i64,
    pub targets_total: i64,
    pub targets_by_environment: BTreeMap<String, i64>,
    pub mean_duration_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailureView {
    pub target_id: String,
    pub wave_index: i64,
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GateView {
    pub gate: String,
    pub kind: String,
    pub phase: String,
    pub wave_index: Option<i64>,
    pub passed: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub seq: i64,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub at: DateTime<Utc>,
}

/// `GET /api/reports/deployment/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentReport {
    pub execution: ExecutionView,
    pub plan: PlanView,
    pub duration_seconds: Option<f64>,
    pub failures: Vec<FailureView>,
    pub gates: Vec<GateView>,
    pub timeline: Vec<TimelineEntry>,
}

/// `GET /api/reports/summary?days=N`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SummaryReport {
    pub days: u32,
    pub since: DateTime<Utc>,
    pub deployments_total: i64,
    pub by_status: BTreeMap<String, i64>,
    pub by_environment: BTreeMap<String, i64>,
    pub success_rate: Option<f64>,
    pub targets_updated: i64,
    pub mean_duration_seconds: Option<f64>,
}

/// `POST /api/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub role: crate::auth::Role,
    /// Days until the key expires; none means never.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub role: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    /// Shown once; only its HMAC is stored.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub source_ip: Option<String>,
    pub result: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntryView>,
}

/// The audit chain recomputed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyView {
    /// ok or broken.
    pub status: String,
    /// Rows checked (ok).
    pub rows: Option<i64>,
    /// The first changed or missing row (broken).
    pub seq: Option<i64>,
    pub reason: Option<String>,
}
