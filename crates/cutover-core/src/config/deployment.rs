//! The server's `deployment-config.yaml`: seed 000's schema as written there
//! (global, environments, health_checks, notifications, quality_gates,
//! rollback_criteria, security, logging, alerting, performance, cache,
//! database), the guidelines' windowed rollback triggers, and cutover's own
//! `server`, `mqtt` and `artifacts` sections. Every section is optional and
//! has defaults; `examples/deployment-config.yaml` documents each key.

use super::values::{
    Cidr, DatabaseUrl, Duration, EmailAddress, HttpUrl, ListenAddr, MqttUrl, Percentage, RedisUrl,
    TimeOfDay, TimeZone, name_enum,
};
use super::{Check, ConfigError, ConfigFile, Vars, Warning, loader_methods};
use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Top-level sections of `deployment-config.yaml`.
pub const SECTIONS: &[&str] = &[
    "global",
    "environments",
    "health_checks",
    "notifications",
    "quality_gates",
    "rollback_criteria",
    "security",
    "logging",
    "alerting",
    "performance",
    "cache",
    "database",
    "server",
    "mqtt",
    "artifacts",
];

/// Sections that are one mapping of settings: `CUTOVER_<SECTION>_<KEY>` sets
/// one of their keys.
const PLAIN_SECTIONS: &[&str] = &[
    "global",
    "rollback_criteria",
    "security",
    "logging",
    "performance",
    "cache",
    "database",
    "server",
    "mqtt",
    "artifacts",
];

/// Sections keyed by name or nested: only `CUTOVER_<SECTION>__<A>__<B>`.
const NESTED_SECTIONS: &[&str] = &[
    "environments",
    "health_checks",
    "notifications",
    "quality_gates",
    "alerting",
];

/// The gates cutover knows by name (DESIGN.md), before and after a deployment.
pub const BUILTIN_GATES: &[&str] = &[
    "firmware_validation",
    "device_compatibility_check",
    "security_scan",
    "performance_test",
    "health_check",
    "functionality_test",
    "performance_validation",
    "user_acceptance_test",
];

name_enum! {
    /// The stage an environment is in, in promotion order.
    pub enum Stage {
        Development = "development" | "dev",
        Testing = "testing" | "test",
        Staging = "staging" | "stage",
        Production = "production" | "prod",
    }
}

impl Stage {
    /// Position in the promotion order (development is 0).
    pub fn rank(self) -> u8 {
        match self {
            Stage::Development => 0,
            Stage::Testing => 1,
            Stage::Staging => 2,
            Stage::Production => 3,
        }
    }
}

name_enum! {
    /// How a rollout is cut into waves.
    pub enum Strategy {
        Immediate = "immediate",
        Rolling = "rolling",
        Canary = "canary",
        BlueGreen = "blue_green" | "bluegreen",
    }
}

name_enum! {
    /// A notification channel.
    pub enum Channel {
        Email = "email",
        Slack = "slack",
        Webhook = "webhook",
    }
}

name_enum! {
    /// What a health check probes.
    pub enum CheckType {
        /// An HTTP request; healthy on the expected status.
        Http = "http" | "https",
        /// Publish on a topic of the broker and see it come back.
        Mqtt = "mqtt",
        /// Run a query (default `SELECT 1`).
        Database = "database" | "db",
        /// Run a command; healthy on exit status 0.
        Command = "command" | "exec",
    }
}

name_enum! {
    /// An HTTP method (written in any case).
    pub enum HttpMethod {
        Get = "get",
        Head = "head",
        Post = "post",
        Put = "put",
        Patch = "patch",
        Delete = "delete",
    }
}

impl HttpMethod {
    /// The method as it goes on the wire: `GET`.
    pub fn as_http(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

name_enum! {
    /// How a quality gate is decided.
    pub enum GateKind {
        /// One of [`BUILTIN_GATES`], run by cutover.
        Builtin = "builtin",
        /// A command; passes on exit status 0.
        Command = "command",
        /// An HTTP request; passes on the expected status.
        Http = "http",
        /// A person passes or fails it.
        Manual = "manual",
        /// One of the `health_checks`, by name.
        HealthCheck = "health_check",
    }
}

name_enum! {
    /// Log verbosity (the seed's Python names are accepted).
    pub enum LogLevel {
        Trace = "trace",
        Debug = "debug",
        Info = "info",
        Warning = "warning" | "warn",
        Error = "error",
        Critical = "critical" | "fatal",
    }
}

name_enum! {
    /// Log line format.
    pub enum LogFormat {
        Text = "text",
        Json = "json",
    }
}

name_enum! {
    /// How serious an alert is.
    pub enum Severity {
        Info = "info",
        Warning = "warning" | "warn",
        Error = "error",
        Critical = "critical",
    }
}

name_enum! {
    /// Where cached values live.
    pub enum CacheType {
        Memory = "memory" | "in_memory",
        Redis = "redis",
    }
}

name_enum! {
    /// Encryption of secrets at rest.
    pub enum EncryptionAlgorithm {
        Aes256Gcm = "aes_256_gcm" | "aes256gcm" | "aes256_gcm",
    }
}

name_enum! {
    /// A day of the week (`mon` or `monday`).
    pub enum Weekday {
        Mon = "mon" | "monday",
        Tue = "tue" | "tuesday",
        Wed = "wed" | "wednesday",
        Thu = "thu" | "thursday",
        Fri = "fri" | "friday",
        Sat = "sat" | "saturday",
        Sun = "sun" | "sunday",
    }
}

impl Weekday {
    pub fn to_chrono(self) -> chrono::Weekday {
        match self {
            Weekday::Mon => chrono::Weekday::Mon,
            Weekday::Tue => chrono::Weekday::Tue,
            Weekday::Wed => chrono::Weekday::Wed,
            Weekday::Thu => chrono::Weekday::Thu,
            Weekday::Fri => chrono::Weekday::Fri,
            Weekday::Sat => chrono::Weekday::Sat,
            Weekday::Sun => chrono::Weekday::Sun,
        }
    }
}

/// The whole server configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeploymentConfig {
    pub global: GlobalSettings,
    /// Environments by key (`production`), in file order.
    pub environments: IndexMap<String, Environment>,
    /// Named health checks, referenced by environments and gates.
    pub health_checks: IndexMap<String, HealthCheck>,
    pub notifications: Notifications,
    pub quality_gates: QualityGates,
    pub rollback_criteria: RollbackCriteria,
    pub security: Security,
    pub logging: Logging,
    pub alerting: Alerting,
    pub performance: Performance,
    pub cache: Cache,
    pub database: Database,
    pub server: Server,
    pub mqtt: Mqtt,
    pub artifacts: Artifacts,
    /// Default strategy of plans that name none (the seed's `strategy:`).
    pub strategy: Option<Strategy>,
    /// Default first-wave size of canary plans (the seed's `canary_percentage:`).
    pub canary_percentage: Option<Percentage>,
}

/// `global:` organisation-wide settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GlobalSettings {
    pub organization: Option<String>,
    pub project: Option<String>,
    /// Channels used by environments that name none of their own.
    pub notification_channels: Vec<Channel>,
}

/// Whether a deployment into an environment needs approval, and from how
/// many people: `approval_required: true` (one) or a count (`2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub required: bool,
    /// Distinct approvers needed (0 when not required).
    pub approvers: u32,
}

impl<'de> Deserialize<'de> for Approval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Approval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or a number of approvers")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Approval, E> {
                Ok(Approval {
                    required: v,
                    approvers: u32::from(v),
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Approval, E> {
                let approvers = u32::try_from(v).ok().filter(|n| *n <= 100).ok_or_else(|| {
                    E::custom(format!(
                        "expected true, false, or a number of approvers up to 100, found {v}"
                    ))
                })?;
                Ok(Approval {
                    required: approvers > 0,
                    approvers,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Approval, E> {
                Err(E::custom(format!(
                    "expected true, false, or a number of approvers, found {v}"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Approval, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" => self.visit_bool(true),
                    "false" | "no" => self.visit_bool(false),
                    other => match other.parse::<u64>() {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format!(
                            "expected true, false, or a number of approvers, found \"{v}\""
                        ))),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// When deployments may start: `start_time`–`end_time` in `timezone`, on
/// `days` (every day when absent). A window whose end is before its start
/// runs past midnight (22:00–04:00); the hours after midnight belong to the
/// day it opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentWindow {
    pub start_time: TimeOfDay,
    pub end_time: TimeOfDay,
    #[serde(default)]
    pub timezone: TimeZone,
    #[serde(default)]
    pub days: Option<Vec<Weekday>>,
}

impl DeploymentWindow {
    /// Whether the window is open at `now` (the caller's clock).
    pub fn contains(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let local = now.with_timezone(&self.timezone.0);
        let minute = local.hour() * 60 + local.minute();
        let day_ok = |day: chrono::Weekday| {
            self.days
                .as_ref()
                .is_none_or(|days| days.iter().any(|d| d.to_chrono() == day))
        };
        let (start, end) = (self.start_time.minutes(), self.end_time.minutes());
        let today = local.weekday();
        if start < end {
            minute >= start && minute < end && day_ok(today)
        } else {
            (minute >= start && day_ok(today)) || (minute < end && day_ok(today.pred()))
        }
    }
}

impl fmt::Display for DeploymentWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} {}", self.start_time, self.end_time, self.timezone)?;
        if let Some(days) = &self.days {
            let names: Vec<&str> = days.iter().map(|d| d.as_str()).collect();
            write!(f, " ({})", names.join(","))?;
        }
        Ok(())
    }
}

/// One environment and its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Environment {
    /// Human-readable name ("Production"); the key when absent.
    pub name: Option<String>,
    /// The stage; when absent, the environment's key if it names a stage.
    pub stage: Option<Stage>,
    pub description: Option<String>,
    /// Service endpoints by name.
    pub api_endpoints: IndexMap<String, HttpUrl>,
    /// Target groups deployed to in this environment.
    pub device_groups: Vec<String>,
    pub approval_required: Approval,
    /// Roll back automatically when the rollback criteria trip.
    pub auto_rollback: bool,
    pub health_check_url: Option<HttpUrl>,
    /// Overrides `global.notification_channels` when given.
    pub notification_channels: Option<Vec<Channel>>,
    pub deployment_window: Option<DeploymentWindow>,
    pub max_concurrent_deployments: u32,
    /// How long a rollback may take before it is reported as failed
    /// (seconds, or a duration such as "5m").
    pub rollback_timeout: Duration,
    /// Names from `health_checks` run for this environment.
    pub health_checks: Vec<String>,
    /// Default strategy of plans into this environment.
    pub strategy: Option<Strategy>,
    /// Replaces the top-level `rollback_criteria` for this environment.
    pub rollback_criteria: Option<RollbackCriteria>,
    /// Replaces the top-level `quality_gates` for this environment, one
    /// phase at a time: a phase it does not list keeps the top-level gates.
    pub quality_gates: Option<EnvironmentGates>,
}

/// An environment's own `quality_gates:`; each phase given replaces the
/// top-level one (an empty list turns that phase's gates off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvironmentGates {
    pub pre_deployment: Option<Vec<Gate>>,
    pub post_deployment: Option<Vec<Gate>>,
}

impl QualityGates {
    /// These gates with an environment's own in place of each phase it lists.
    pub fn overridden_by(&self, own: Option<&EnvironmentGates>) -> QualityGates {
        QualityGates {
            pre_deployment: own
                .and_then(|g| g.pre_deployment.clone())
                .unwrap_or_else(|| self.pre_deployment.clone()),
            post_deployment: own
                .and_then(|g| g.post_deployment.clone())
                .unwrap_or_else(|| self.post_deployment.clone()),
        }
    }
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            name: None,
            stage: None,
            description: None,
            api_endpoints: IndexMap::new(),
            device_groups: Vec::new(),
            approval_required: Approval::default(),
            auto_rollback: true,
            health_check_url: None,
            notification_channels: None,
            deployment_window: None,
            max_concurrent_deployments: 1,
            rollback_timeout: Duration::from_secs(300),
            health_checks: Vec::new(),
            strategy: None,
            rollback_criteria: None,
            quality_gates: None,
        }
    }
}

impl Environment {
    /// The stage (always known once the configuration is loaded).
    pub fn stage(&self) -> Stage {
        self.stage.unwrap_or(Stage::Production)
    }
}

/// A named health check. Which keys apply depends on `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub check_type: CheckType,
    /// http: an absolute URL, or a path joined to the environment's
    /// `health_check_url` / first API endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// http: default GET.
    #[serde(default)]
    pub method: Option<HttpMethod>,
    /// http: default 200.
    #[serde(default)]
    pub expected_status: Option<u16>,
    /// http: extra request headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// mqtt: the broker.
    #[serde(default)]
    pub broker: Option<MqttUrl>,
    /// mqtt: the topic published to and read back.
    #[serde(default)]
    pub topic: Option<String>,
    /// database: the database URL.
    #[serde(default)]
    pub connection_string: Option<DatabaseUrl>,
    /// database: default `SELECT 1`.
    #[serde(default)]
    pub query: Option<String>,
    /// command: run through the shell; healthy on exit status 0.
    #[serde(default)]
    pub command: Option<String>,
    /// Per attempt (seconds or a duration); default 30 s.
    #[serde(default = "HealthCheck::default_timeout")]
    pub timeout: Duration,
    /// Extra attempts after a failure.
    #[serde(default)]
    pub retry_count: u32,
    /// Pause between attempts; default 1 s.
    #[serde(default = "HealthCheck::default_retry_delay")]
    pub retry_delay: Duration,
}

impl HealthCheck {
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_retry_delay() -> Duration {
        Duration::from_secs(1)
    }
    pub fn method(&self) -> HttpMethod {
        self.method.unwrap_or(HttpMethod::Get)
    }
    pub fn expected_status(&self) -> u16 {
        self.expected_status.unwrap_or(200)
    }
    pub fn query(&self) -> &str {
        self.query.as_deref().unwrap_or("SELECT 1")
    }
}

/// `notifications:` the channels and how to reach them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notifications {
    pub email: Option<EmailSettings>,
    pub slack: Option<SlackSettings>,
    pub webhook: Option<WebhookSettings>,
}

impl Notifications {
    /// The channels that are configured and enabled.
    pub fn enabled(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        if self.email.as_ref().is_some_and(|c| c.enabled) {
            out.push(Channel::Email);
        }
        if self.slack.as_ref().is_some_and(|c| c.enabled) {
            out.push(Channel::Slack);
        }
        if self.webhook.as_ref().is_some_and(|c| c.enabled) {
            out.push(Channel::Webhook);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailSettings {
    pub enabled: bool,
    /// SMTP host name.
    pub smtp_server: Option<String>,
    pub smtp_port: u16,
    /// STARTTLS on 587, TLS from the start on 465.
    pub use_tls: bool,
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<String>,
    pub from_email: Option<EmailAddress>,
    pub recipients: Vec<EmailAddress>,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            enabled: true,
            smtp_server: None,
            smtp_port: 587,
            use_tls: true,
            username: None,
            password: None,
            from_email: None,
            recipients: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlackSettings {
    pub enabled: bool,
    pub webhook_url: Option<HttpUrl>,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            enabled: true,
            webhook_url: None,
            channel: None,
            username: None,
            icon_emoji: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    pub enabled: bool,
    pub url: Option<HttpUrl>,
    pub method: HttpMethod,
    pub headers: IndexMap<String, String>,
    /// When set, each request carries an HMAC-SHA256 signature of its body.
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            enabled: true,
            url: None,
            method: HttpMethod::Post,
            headers: IndexMap::new(),
            secret: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// `quality_gates:` checks before and after a deployment (and between waves).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityGates {
    pub pre_deployment: Vec<Gate>,
    pub post_deployment: Vec<Gate>,
}

/// A gate: a name (`security_scan`, or a health check's name) or a mapping
/// `{name, type, command, url, expected_status, timeout}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    pub name: String,
    /// Decided from the name when not written; always known once loaded.
    pub kind: Option<GateKind>,
    pub command: Option<String>,
    pub url: Option<HttpUrl>,
    pub expected_status: Option<u16>,
    pub timeout: Duration,
}

impl Gate {
    const FIELDS: &'static [&'static str] = &[
        "name",
        "type",
        "command",
        "url",
        "expected_status",
        "timeout",
    ];

    pub fn kind(&self) -> GateKind {
        self.kind.unwrap_or(GateKind::Builtin)
    }
}

impl<'de> Deserialize<'de> for Gate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Full {
            name: String,
            #[serde(rename = "type", default)]
            kind: Option<GateKind>,
            #[serde(default)]
            command: Option<String>,
            #[serde(default)]
            url: Option<HttpUrl>,
            #[serde(default)]
            expected_status: Option<u16>,
            #[serde(default)]
            timeout: Option<Duration>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Gate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a gate name, or a mapping with name and type")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Gate, E> {
                Ok(Gate {
                    name: v.to_string(),
                    kind: None,
                    command: None,
                    url: None,
                    expected_status: None,
                    timeout: Duration::from_secs(600),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Gate, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Gate {
                    name: f.name,
                    kind: f.kind,
                    command: f.command,
                    url: f.url,
                    expected_status: f.expected_status,
                    timeout: f.timeout.unwrap_or(Duration::from_secs(600)),
                })
            }
        }
        d.deserialize_struct("Gate", Gate::FIELDS, V)
    }
}

/// `rollback_criteria:` when a running execution rolls back. The seed's
/// four triggers plus the guidelines' windows (health failing longer than
/// N minutes, error rate above N % for N minutes, response time N % worse
/// than the baseline) and critical checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RollbackCriteria {
    /// Failed targets, as a share of those finished.
    pub max_failure_rate: Option<Percentage>,
    /// Roll back when the environment's health checks fail.
    pub health_check_failure: bool,
    /// Performance drop against the baseline.
    pub performance_degradation: Option<Percentage>,
    /// Number of user reports that triggers a rollback.
    pub user_reported_issues: Option<u32>,
    /// Health must have been failing this long before it triggers (0: at once).
    pub health_check_failing_for: Option<Duration>,
    pub error_rate: Option<ErrorRateTrigger>,
    /// Response time worse than the baseline by this much.
    pub response_time_degradation: Option<Percentage>,
    /// Health checks (by name) whose failure rolls back at once.
    pub critical_checks: Vec<String>,
}

/// Error rate above `above` for `for` (the guidelines: 5 % for 3 minutes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRateTrigger {
    pub above: Percentage,
    #[serde(rename = "for", default = "ErrorRateTrigger::default_for")]
    pub for_duration: Duration,
}

impl ErrorRateTrigger {
    fn default_for() -> Duration {
        Duration::from_secs(180)
    }
}

/// `security:` API authentication and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Security {
    /// Accept `X-API-Key`.
    pub api_key_auth: bool,
    /// Accept `Authorization: Bearer` JWTs signed with this (32 bytes or more).
    /// Secrets are never serialized.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<String>,
    /// Lifetime of the JWTs the server issues.
    pub jwt_ttl: Duration,
    pub rate_limiting: RateLimiting,
    /// When not empty, only these networks may call the API.
    pub ip_whitelist: Vec<Cidr>,
    pub encryption: Encryption,
    /// Proxies whose `X-Forwarded-For` is believed; never anyone else's.
    pub trusted_proxies: Vec<Cidr>,
    /// Largest request body accepted, in bytes (artifact uploads excepted).
    pub max_body_bytes: u64,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            api_key_auth: true,
            jwt_secret: None,
            jwt_ttl: Duration::from_secs(3600),
            rate_limiting: RateLimiting::default(),
            ip_whitelist: Vec::new(),
            encryption: Encryption::default(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Requests per client address per window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimiting {
    pub enabled: bool,
    pub max_requests: u32,
    /// The window (seconds, or a duration such as "1m").
    pub window_seconds: Duration,
}

impl Default for RateLimiting {
    fn default() -> Self {
        RateLimiting {
            enabled: true,
            max_requests: 100,
            window_seconds: Duration::from_secs(60),
        }
    }
}

/// Secrets at rest (SMTP passwords, webhook tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Encryption {
    pub enabled: bool,
    pub algorithm: EncryptionAlgorithm,
    pub key_rotation_days: u32,
    /// Base64 of 32 random bytes; write `${CUTOVER_ENCRYPTION_KEY}` rather
    /// than the key itself.
    #[serde(skip_serializing)]
    pub key: Option<String>,
}

impl Default for Encryption {
    fn default() -> Self {
        Encryption {
            enabled: false,
            algorithm: EncryptionAlgorithm::Aes256Gcm,
            key_rotation_days: 90,
            key: None,
        }
    }
}

/// `logging:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Logging {
    /// Record every change in the audit log (always stored; this adds it to the log output too).
    pub audit_logging: bool,
    pub log_level: LogLevel,
    /// Also write logs to this file.
    pub log_file: Option<String>,
    /// Log request and action details.
    pub detailed_logging: bool,
    pub verbose_output: bool,
    pub format: LogFormat,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            audit_logging: true,
            log_level: LogLevel::Info,
            log_file: None,
            detailed_logging: false,
            verbose_output: false,
            format: LogFormat::Text,
        }
    }
}

/// `alerting:`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alerting {
    pub rules: Vec<AlertRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub name: String,
    pub condition: AlertCondition,
    #[serde(default = "AlertRule::default_severity")]
    pub severity: Severity,
    #[serde(default)]
    pub message: Option<String>,
    /// Where the alert goes; the global channels when absent.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    /// The condition must hold this long before the alert fires.
    #[serde(default, rename = "for")]
    pub for_duration: Option<Duration>,
}

impl AlertRule {
    fn default_severity() -> Severity {
        Severity::Warning
    }
}

name_enum! {
    /// A comparison in an alert condition.
    pub enum Comparison {
        Greater = ">",
        GreaterOrEqual = ">=",
        Less = "<",
        LessOrEqual = "<=",
        Equal = "==",
        NotEqual = "!=",
    }
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
            Comparison::Equal => value == threshold,
            Comparison::NotEqual => value != threshold,
        }
    }
}

/// `metric op number`, e.g. `deployment_failure_rate > 0.1`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertCondition {
    pub metric: String,
    pub op: Comparison,
    pub threshold: f64,
}

impl FromStr for AlertCondition {
    type Err = String;
    fn from_str(s: &str) -> Result<AlertCondition, String> {
        let bad = || {
            format!(
                "expected a condition \"metric op number\" such as \"deployment_failure_rate > 0.1\" (op: > >= < <= == !=), found \"{s}\""
            )
        };
        let t = s.trim();
        let op_start = t.find(['>', '<', '=', '!']).ok_or_else(bad)?;
        let metric = t[..op_start].trim();
        let rest = &t[op_start..];
        let op_len = if rest[1..].starts_with('=') { 2 } else { 1 };
        let op: Comparison = rest[..op_len].parse().map_err(|_| bad())?;
        let threshold: f64 = rest[op_len..].trim().parse().map_err(|_| bad())?;
        let metric_ok = !metric.is_empty()
            && metric.starts_with(|c: char| c.is_ascii_alphabetic())
            && metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !metric_ok || !threshold.is_finite() {
            return Err(bad());
        }
        Ok(AlertCondition {
            metric: metric.to_string(),
            op,
            threshold,
        })
    }
}

impl fmt::Display for AlertCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op, self.threshold)
    }
}

impl Serialize for AlertCondition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AlertCondition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::values::any_text(d, "a condition")?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// `performance:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Performance {
    /// Executions running at once across all environments.
    pub max_concurrent_deployments: u32,
    /// An execution still running after this is timed out.
    pub deployment_timeout: Duration,
    pub health_check_timeout: Duration,
    /// Worker threads of the server; the number of cores when absent.
    pub worker_threads: Option<u32>,
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            max_concurrent_deployments: 5,
            deployment_timeout: Duration::from_secs(3600),
            health_check_timeout: Duration::from_secs(300),
            worker_threads: None,
        }
    }
}

/// `cache:`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cache {
    pub enabled: bool,
    pub cache_type: CacheType,
    pub redis_url: Option<RedisUrl>,
    pub default_ttl: Duration,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: false,
            cache_type: CacheType::Memory,
            redis_url: None,
            default_ttl: Duration::from_secs(3600),
        }
    }
}

/// `database:` SQLite (the default) or PostgreSQL, by the URL's scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Database {
    pub connection_string: DatabaseUrl,
    pub pool_size: u32,
    /// Extra connections allowed above `pool_size` under load.
    pub max_overflow: u32,
    /// How long to wait for a free connection.
    pub pool_timeout: Duration,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            connection_string: DatabaseUrl::default(),
            pool_size: 10,
            max_overflow: 0,
            pool_timeout: Duration::from_secs(30),
        }
    }
}

impl Database {
    /// Connections the pool may open: `pool_size + max_overflow`.
    pub fn max_connections(&self) -> u32 {
        self.pool_size.saturating_add(self.max_overflow)
    }
}

/// `server:` the HTTP API and web UI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Server {
    pub listen: ListenAddr,
    /// The address agents and links use to reach the server, when it is
    /// behind a proxy.
    pub public_url: Option<HttpUrl>,
    pub request_timeout: Duration,
    /// How long a deployment's status or list may be answered from memory. The server's own
    /// changes drop it at once; with several replicas on one database, what another replica
    /// changed shows within this time. `0s` reads the store for every request.
    pub read_cache_ttl: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: ListenAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 5001))),
            public_url: None,
            request_timeout: Duration::from_secs(30),
            read_cache_ttl: Duration::from_secs(1),
        }
    }
}

/// `mqtt:` the broker agents talk through: embedded on `listen` unless `url`
/// names an external one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mqtt {
    /// Address of the embedded broker.
    pub listen: ListenAddr,
    /// An external broker (Mosquitto, EMQX); the embedded one is not started.
    pub url: Option<MqttUrl>,
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<String>,
    pub tls: Option<MqttTls>,
    pub client_id: String,
    /// Prefix of every topic (`cutover/v1/targets/{id}/…`).
    pub topic_prefix: String,
    pub keep_alive: Duration,
}

impl Default for Mqtt {
    fn default() -> Self {
        Mqtt {
            listen: ListenAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 1883))),
            url: None,
            username: None,
            password: None,
            tls: None,
            client_id: "cutover-server".into(),
            topic_prefix: "cutover/v1".into(),
            keep_alive: Duration::from_secs(30),
        }
    }
}

impl Mqtt {
    /// True when cutover runs its own broker.
    pub fn embedded(&self) -> bool {
        self.url.is_none()
    }
}

/// `mqtt.tls:` for an external broker (an mqtts:// url), how the server
/// trusts it (`ca_file`; the system roots otherwise) and the client
/// certificate it presents when the broker asks for one; for the embedded
/// broker, the certificate of its mqtts listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MqttTls {
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    /// Embedded broker: the mqtts listener (default: `mqtt.listen`'s address, port 8883).
    pub listen: Option<ListenAddr>,
    /// Embedded broker: the server certificate chain (PEM).
    pub cert_file: Option<String>,
    /// Embedded broker: the private key of `cert_file` (PEM).
    pub key_file: Option<String>,
}

impl Mqtt {
    /// The embedded broker's mqtts listener, when it has a certificate.
    pub fn tls_listen(&self) -> Option<std::net::SocketAddr> {
        let tls = self.tls.as_ref()?;
        tls.cert_file.as_ref()?;
        Some(
            tls.listen
                .as_ref()
                .map(|l| l.0)
                .unwrap_or_else(|| std::net::SocketAddr::new(self.listen.0.ip(), 8883)),
        )
    }
}

/// `artifacts:` where uploaded firmware images and bundles are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Artifacts {
    pub dir: String,
    /// Largest artifact accepted, in bytes.
    pub max_size_bytes: u64,
    /// Ed25519 public keys (hex) artifact signatures must verify with, the
    /// same keys the agents trust; the `firmware_validation` gate checks them.
    pub public_keys: Vec<String>,
}

impl Default for Artifacts {
    fn default() -> Self {
        Artifacts {
            dir: "artifacts".into(),
            max_size_bytes: 2 * 1024 * 1024 * 1024,
            public_keys: Vec::new(),
        }
    }
}

loader_methods!(DeploymentConfig, "deployment-config.yaml");

impl ConfigFile for DeploymentConfig {
    const OVERRIDES: Option<(&'static [&'static str], &'static [&'static str])> =
        Some((PLAIN_SECTIONS, NESTED_SECTIONS));

    fn check(&mut self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        self.validate(check)
    }
}

impl DeploymentConfig {
    /// The key path a `CUTOVER_…` variable overrides, if it names one
    /// (`CUTOVER_SERVER_LISTEN` → `server.listen`).
    pub fn override_path(variable: &str) -> Option<String> {
        super::tree::override_path(variable, PLAIN_SECTIONS, NESTED_SECTIONS)
            .map(|parts| parts.join("."))
    }

    /// The channels an environment notifies: its own, or the global ones.
    pub fn channels_for(&self, environment: &Environment) -> Vec<Channel> {
        environment
            .notification_channels
            .clone()
            .unwrap_or_else(|| self.global.notification_channels.clone())
    }

    /// The quality gates of an environment: per phase, its own when it lists
    /// that phase, else the top-level ones.
    pub fn quality_gates_for(&self, environment: &Environment) -> QualityGates {
        self.quality_gates
            .overridden_by(environment.quality_gates.as_ref())
    }

    /// The rollback criteria of an environment: its own, or the top-level ones.
    pub fn rollback_criteria_for<'a>(
        &'a self,
        environment: &'a Environment,
    ) -> &'a RollbackCriteria {
        environment
            .rollback_criteria
            .as_ref()
            .unwrap_or(&self.rollback_criteria)
    }

    fn validate(&mut self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        let check_names: Vec<String> = self.health_checks.keys().cloned().collect();
        for (name, hc) in &self.health_checks {
            validate_health_check(check, &format!("health_checks.{name}"), hc)?;
        }
        let configured = self.notifications.enabled();
        for (i, channel) in self.global.notification_channels.iter().enumerate() {
            warn_unconfigured(
                check,
                &format!("global.notification_channels[{i}]"),
                *channel,
                &configured,
            );
        }
        for (key, env) in self.environments.iter_mut() {
            let base = format!("environments.{key}");
            if env.stage.is_none() {
                match key.parse::<Stage>() {
                    Ok(stage) => env.stage = Some(stage),
                    Err(_) => {
                        return Err(check.error(
                            &base,
                            format!(
                                "the stage is missing: add stage: with one of {}",
                                Stage::NAMES.join(", ")
                            ),
                        ));
                    }
                }
            }
            if env.max_concurrent_deployments == 0 {
                return Err(check.error(
                    &format!("{base}.max_concurrent_deployments"),
                    "expected a whole number of at least 1, found 0",
                ));
            }
            if env.rollback_timeout.is_zero() {
                return Err(check.error(
                    &format!("{base}.rollback_timeout"),
                    "expected a duration above zero",
                ));
            }
            if let Some(window) = &env.deployment_window
                && window.start_time == window.end_time
            {
                return Err(check.error(
                    &format!("{base}.deployment_window.end_time"),
                    format!(
                        "the window is empty: end_time equals start_time ({})",
                        window.start_time
                    ),
                ));
            }
            if let Some(Some(days)) = env.deployment_window.as_ref().map(|w| w.days.as_ref())
                && days.is_empty()
            {
                return Err(check.error(
                    &format!("{base}.deployment_window.days"),
                    "expected at least one day (leave days out for every day)",
                ));
            }
            for (i, group) in env.device_groups.iter().enumerate() {
                if group.trim().is_empty() {
                    return Err(check.error(
                        &format!("{base}.device_groups[{i}]"),
                        "expected a group name, found an empty string",
                    ));
                }
            }
            for (i, name) in env.health_checks.iter().enumerate() {
                if !check_names.contains(name) {
                    return Err(unknown_name(
                        check,
                        &format!("{base}.health_checks[{i}]"),
                        "health check",
                        name,
                        &check_names,
                    ));
                }
            }
            if let Some(channels) = &env.notification_channels {
                for (i, channel) in channels.iter().enumerate() {
                    warn_unconfigured(
                        check,
                        &format!("{base}.notification_channels[{i}]"),
                        *channel,
                        &configured,
                    );
                }
            }
            if let Some(criteria) = &env.rollback_criteria {
                validate_criteria(
                    check,
                    &format!("{base}.rollback_criteria"),
                    criteria,
                    &check_names,
                )?;
            }
            if let Some(own) = env.quality_gates.as_mut() {
                for (phase, gates) in [
                    ("pre_deployment", own.pre_deployment.as_mut()),
                    ("post_deployment", own.post_deployment.as_mut()),
                ] {
                    for (i, gate) in gates.into_iter().flatten().enumerate() {
                        resolve_gate(
                            check,
                            &format!("{base}.quality_gates.{phase}[{i}]"),
                            gate,
                            &check_names,
                        )?;
                    }
                }
            }
        }
        for (phase, gates) in [
            ("pre_deployment", &mut self.quality_gates.pre_deployment),
            ("post_deployment", &mut self.quality_gates.post_deployment),
        ] {
            for (i, gate) in gates.iter_mut().enumerate() {
                resolve_gate(
                    check,
                    &format!("quality_gates.{phase}[{i}]"),
                    gate,
                    &check_names,
                )?;
            }
        }
        validate_criteria(
            check,
            "rollback_criteria",
            &self.rollback_criteria,
            &check_names,
        )?;
        for (i, key) in self.artifacts.public_keys.iter().enumerate() {
            let key = key.trim();
            let ok = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(check.error(
                    &format!("artifacts.public_keys[{i}]"),
                    "expected an ed25519 public key as 64 hex digits",
                ));
            }
        }
        self.validate_notifications(check)?;
        self.validate_security(check)?;
        let mut rule_names: Vec<&str> = Vec::new();
        for (i, rule) in self.alerting.rules.iter().enumerate() {
            let path = format!("alerting.rules[{i}]");
            if rule.name.trim().is_empty() {
                return Err(check.error(
                    &format!("{path}.name"),
                    "expected a rule name, found an empty string",
                ));
            }
            if rule_names.contains(&rule.name.as_str()) {
                return Err(check.error(
                    &format!("{path}.name"),
                    format!("the rule name \"{}\" is used twice", rule.name),
                ));
            }
            rule_names.push(&rule.name);
            if let Some(channels) = &rule.channels {
                for (j, channel) in channels.iter().enumerate() {
                    warn_unconfigured(
                        check,
                        &format!("{path}.channels[{j}]"),
                        *channel,
                        &configured,
                    );
                }
            }
        }
        let perf = &self.performance;
        if perf.max_concurrent_deployments == 0 {
            return Err(check.error(
                "performance.max_concurrent_deployments",
                "expected a whole number of at least 1, found 0",
            ));
        }
        for (key, value) in [
            ("performance.deployment_timeout", perf.deployment_timeout),
            (
                "performance.health_check_timeout",
                perf.health_check_timeout,
            ),
            ("database.pool_timeout", self.database.pool_timeout),
            ("server.request_timeout", self.server.request_timeout),
        ] {
            if value.is_zero() {
                return Err(check.error(key, "expected a duration above zero"));
            }
        }
        if perf.worker_threads == Some(0) {
            return Err(check.error(
                "performance.worker_threads",
                "expected a whole number of at least 1 (leave it out for one per core), found 0",
            ));
        }
        if self.cache.enabled
            && self.cache.cache_type == CacheType::Redis
            && self.cache.redis_url.is_none()
        {
            return Err(check.error(
                "cache.redis_url",
                "a redis cache needs redis_url (redis://host:6379/0)",
            ));
        }
        if self.database.pool_size == 0 {
            return Err(check.error(
                "database.pool_size",
                "expected a whole number of at least 1, found 0",
            ));
        }
        let prefix = &self.mqtt.topic_prefix;
        if prefix.is_empty()
            || prefix.contains(['#', '+'])
            || prefix.starts_with('/')
            || prefix.ends_with('/')
        {
            return Err(check.error(
                "mqtt.topic_prefix",
                format!("expected a topic prefix such as cutover/v1 (no wildcards, no leading or trailing /), found \"{prefix}\""),
            ));
        }
        if let Some(tls) = &self.mqtt.tls {
            check_mqtt_tls(check, &self.mqtt, tls)?;
        }
        if self.artifacts.dir.trim().is_empty() {
            return Err(check.error(
                "artifacts.dir",
                "expected a directory, found an empty string",
            ));
        }
        if self.artifacts.max_size_bytes == 0 {
            return Err(check.error(
                "artifacts.max_size_bytes",
                "expected a size in bytes above zero",
            ));
        }
        Ok(())
    }

    fn validate_notifications(&self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        if let Some(email) = self.notifications.email.as_ref().filter(|e| e.enabled) {
            let host = email.smtp_server.as_deref().unwrap_or("");
            if host.is_empty() {
                return Err(check.error(
                    "notifications.email.smtp_server",
                    "enabled e-mail needs smtp_server (a host name such as smtp.example.com)",
                ));
            }
            if host.contains("://") || host.contains(char::is_whitespace) || host.contains('/') {
                return Err(check.error(
                    "notifications.email.smtp_server",
                    format!("expected a host name such as smtp.example.com, found \"{host}\""),
                ));
            }
            if email.smtp_port == 0 {
                return Err(check.error(
                    "notifications.email.smtp_port",
                    "expected a port from 1 to 65535, found 0",
                ));
            }
            if email.from_email.is_none() {
                return Err(check.error(
                    "notifications.email.from_email",
                    "enabled e-mail needs from_email",
                ));
            }
            if email.recipients.is_empty() {
                return Err(check.error(
                    "notifications.email.recipients",
                    "enabled e-mail needs at least one recipient",
                ));
            }
        }
        if let Some(slack) = self.notifications.slack.as_ref().filter(|s| s.enabled)
            && slack.webhook_url.is_none()
        {
            return Err(check.error(
                "notifications.slack.webhook_url",
                "enabled Slack needs webhook_url (https://hooks.slack.com/services/…)",
            ));
        }
        if let Some(hook) = self.notifications.webhook.as_ref().filter(|w| w.enabled) {
            if hook.url.is_none() {
                return Err(
                    check.error("notifications.webhook.url", "an enabled webhook needs url")
                );
            }
            if hook.timeout.is_zero() {
                return Err(check.error(
                    "notifications.webhook.timeout",
                    "expected a duration above zero",
                ));
            }
        }
        Ok(())
    }

    fn validate_security(&self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        let s = &self.security;
        if let Some(secret) = &s.jwt_secret {
            if secret.is_empty() {
                return Err(check.error(
                    "security.jwt_secret",
                    "expected a secret, found an empty string (leave the key out to turn JWTs off)",
                ));
            }
            if secret.len() < 32 {
                check.warn(
                    "security.jwt_secret",
                    format!("weak secret: {} bytes, use 32 or more random bytes (e.g. ${{CUTOVER_JWT_SECRET}})", secret.len()),
                );
            }
        }
        if !s.api_key_auth && s.jwt_secret.is_none() {
            check.warn("security", "the API is open to anyone who can reach it: api_key_auth is false and no jwt_secret is set");
        }
        if s.rate_limiting.enabled {
            if s.rate_limiting.max_requests == 0 {
                return Err(check.error(
                    "security.rate_limiting.max_requests",
                    "expected a whole number of at least 1, found 0",
                ));
            }
            if s.rate_limiting.window_seconds.is_zero() {
                return Err(check.error(
                    "security.rate_limiting.window_seconds",
                    "expected a window above zero",
                ));
            }
        }
        if s.encryption.enabled {
            if s.encryption.key_rotation_days == 0 {
                return Err(check.error(
                    "security.encryption.key_rotation_days",
                    "expected a whole number of days, at least 1, found 0",
                ));
            }
            if let Some(key) = &s.encryption.key {
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
                if decoded.map(|k| k.len()) != Ok(32) {
                    return Err(check.error(
                        "security.encryption.key",
                        "expected the base64 of 32 random bytes (openssl rand -base64 32)",
                    ));
                }
            }
        }
        if s.max_body_bytes == 0 {
            return Err(check.error(
                "security.max_body_bytes",
                "expected a size in bytes above zero",
            ));
        }
        Ok(())
    }

    /// A short description of the configuration, for `cutover config check`.
    pub fn summary(&self) -> Summary {
        let environments = self
            .environments
            .iter()
            .map(|(key, env)| EnvironmentSummary {
                key: key.clone(),
                name: env.name.clone().unwrap_or_else(|| key.clone()),
                stage: env.stage(),
                approvers: env.approval_required.approvers,
                auto_rollback: env.auto_rollback,
                deployment_window: env.deployment_window.as_ref().map(ToString::to_string),
                max_concurrent_deployments: env.max_concurrent_deployments,
                rollback_timeout: env.rollback_timeout,
                notification_channels: self.channels_for(env),
                device_groups: env.device_groups.clone(),
                health_checks: env.health_checks.clone(),
            })
            .collect();
        Summary {
            environments,
            health_checks: self.health_checks.len(),
            notification_channels: self.notifications.enabled(),
            pre_deployment_gates: self.quality_gates.pre_deployment.len(),
            post_deployment_gates: self.quality_gates.post_deployment.len(),
            alert_rules: self.alerting.rules.len(),
            database: if self.database.connection_string.is_postgres() {
                "postgresql"
            } else {
                "sqlite"
            },
            server_listen: self.server.listen.to_string(),
            mqtt: match &self.mqtt.url {
                Some(url) => format!("external broker {}", redact_url(&url.0)),
                None => format!("embedded broker on {}", self.mqtt.listen),
            },
        }
    }
}

fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// What `cutover config check` prints about a valid deployment config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub environments: Vec<EnvironmentSummary>,
    pub health_checks: usize,
    /// Notification channels configured and enabled.
    pub notification_channels: Vec<Channel>,
    pub pre_deployment_gates: usize,
    pub post_deployment_gates: usize,
    pub alert_rules: usize,
    pub database: &'static str,
    pub server_listen: String,
    pub mqtt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvironmentSummary {
    pub key: String,
    pub name: String,
    pub stage: Stage,
    /// 0 when no approval is needed.
    pub approvers: u32,
    pub auto_rollback: bool,
    pub deployment_window: Option<String>,
    pub max_concurrent_deployments: u32,
    pub rollback_timeout: Duration,
    pub notification_channels: Vec<Channel>,
    pub device_groups: Vec<String>,
    pub health_checks: Vec<String>,
}

/// `mqtt.tls`: each key applies to one kind of broker, and a certificate goes with its key.
fn check_mqtt_tls(check: &mut Check<'_>, mqtt: &Mqtt, tls: &MqttTls) -> Result<(), ConfigError> {
    for (cert, key, given_cert, given_key, what) in [
        (
            "cert_file",
            "key_file",
            tls.cert_file.is_some(),
            tls.key_file.is_some(),
            "the embedded broker's mqtts listener serves a certificate with its private key",
        ),
        (
            "client_cert_file",
            "client_key_file",
            tls.client_cert_file.is_some(),
            tls.client_key_file.is_some(),
            "the server presents a client certificate with its private key",
        ),
    ] {
        if given_cert != given_key {
            let (given, missing) = if given_cert { (cert, key) } else { (key, cert) };
            return Err(check.error(
                &format!("mqtt.tls.{given}"),
                format!("mqtt.tls.{given} needs mqtt.tls.{missing}: {what}"),
            ));
        }
    }
    let embedded_keys = [
        ("listen", tls.listen.is_some()),
        ("cert_file", tls.cert_file.is_some()),
        ("key_file", tls.key_file.is_some()),
    ];
    let external_keys = [
        ("ca_file", tls.ca_file.is_some()),
        ("client_cert_file", tls.client_cert_file.is_some()),
        ("client_key_file", tls.client_key_file.is_some()),
    ];
    match &mqtt.url {
        None => {
            for (key, _) in external_keys.iter().filter(|(_, given)| *given) {
                check.warn(
                    &format!("mqtt.tls.{key}"),
                    "ignored: it applies to an external broker with an mqtts:// url; the embedded broker's mqtts listener uses cert_file and key_file",
                );
            }
            if tls.listen.is_some() && tls.cert_file.is_none() {
                check.warn(
                    "mqtt.tls.listen",
                    "ignored: the embedded broker listens for mqtts only with cert_file and key_file",
                );
            }
            if let Some(addr) = mqtt.tls_listen()
                && addr == mqtt.listen.0
            {
                return Err(check.error(
                    "mqtt.tls.listen",
                    format!(
                        "{addr} is mqtt.listen too: the mqtts listener needs an address of its own"
                    ),
                ));
            }
        }
        Some(url) => {
            for (key, _) in embedded_keys.iter().filter(|(_, given)| *given) {
                check.warn(
                    &format!("mqtt.tls.{key}"),
                    "ignored: mqtt.url names an external broker; this key configures the embedded broker's mqtts listener",
                );
            }
            if !matches!(url.0.scheme(), "mqtts" | "ssl" | "wss") {
                for (key, _) in external_keys.iter().filter(|(_, given)| *given) {
                    check.warn(
                        &format!("mqtt.tls.{key}"),
                        "ignored: mqtt.url is not an mqtts:// (or ssl://, wss://) url",
                    );
                }
            }
        }
    }
    Ok(())
}

fn warn_unconfigured(check: &mut Check<'_>, path: &str, channel: Channel, configured: &[Channel]) {
    if !configured.contains(&channel) {
        check.warn(
            path,
            format!("{channel} is not configured (or not enabled) under notifications.{channel}; nothing will be sent there"),
        );
    }
}

fn unknown_name(
    check: &Check<'_>,
    path: &str,
    what: &str,
    name: &str,
    known: &[String],
) -> ConfigError {
    let mut message = if known.is_empty() {
        format!("unknown {what} \"{name}\": health_checks defines none")
    } else {
        format!(
            "unknown {what} \"{name}\": expected one of {}",
            known.join(", ")
        )
    };
    if let Some(near) = super::did_you_mean(name, known.iter().map(String::as_str)) {
        message.push_str(&format!(" (did you mean {near}?)"));
    }
    check.error(path, message)
}

fn validate_health_check(
    check: &mut Check<'_>,
    base: &str,
    hc: &HealthCheck,
) -> Result<(), ConfigError> {
    let field = |key: &str| format!("{base}.{key}");
    let require = |check: &Check<'_>, present: bool, key: &str, example: &str| {
        if present {
            Ok(())
        } else {
            Err(check.error(
                &field(key),
                format!("a {} check needs {key} ({example})", hc.check_type),
            ))
        }
    };
    let given: Vec<(&str, bool)> = vec![
        ("endpoint", hc.endpoint.is_some()),
        ("method", hc.method.is_some()),
        ("expected_status", hc.expected_status.is_some()),
        ("headers", !hc.headers.is_empty()),
        ("broker", hc.broker.is_some()),
        ("topic", hc.topic.is_some()),
        ("connection_string", hc.connection_string.is_some()),
        ("query", hc.query.is_some()),
        ("command", hc.command.is_some()),
    ];
    let applies: &[&str] = match hc.check_type {
        CheckType::Http => &["endpoint", "method", "expected_status", "headers"],
        CheckType::Mqtt => &["broker", "topic"],
        CheckType::Database => &["connection_string", "query"],
        CheckType::Command => &["command"],
    };
    for (key, present) in given {
        if present && !applies.contains(&key) {
            check.warn(
                &field(key),
                format!("ignored: {key} does not apply to a {} check", hc.check_type),
            );
        }
    }
    match hc.check_type {
        CheckType::Http => {
            require(
                check,
                hc.endpoint.is_some(),
                "endpoint",
                "a path such as /health or a full URL",
            )?;
            let endpoint = hc.endpoint.as_deref().unwrap_or("");
            let ok = if endpoint.starts_with('/') {
                !endpoint.contains(char::is_whitespace)
            } else {
                endpoint.parse::<HttpUrl>().is_ok()
            };
            if !ok {
                return Err(check.error(
                    &field("endpoint"),
                    format!(
                        "expected a path starting with / or an http(s) URL, found \"{endpoint}\""
                    ),
                ));
            }
            if let Some(status) = hc.expected_status
                && !(100..=599).contains(&status)
            {
                return Err(check.error(
                    &field("expected_status"),
                    format!("expected an HTTP status from 100 to 599, found {status}"),
                ));
            }
        }
        CheckType::Mqtt => {
            require(check, hc.broker.is_some(), "broker", "mqtt://broker:1883")?;
            require(check, hc.topic.is_some(), "topic", "health/check")?;
            let topic = hc.topic.as_deref().unwrap_or("");
            if topic.is_empty() || topic.contains(['#', '+']) {
                return Err(check.error(
                    &field("topic"),
                    format!(
                        "expected a topic without wildcards such as health/check, found \"{topic}\""
                    ),
                ));
            }
        }
        CheckType::Database => {
            require(
                check,
                hc.connection_string.is_some(),
                "connection_string",
                "postgresql://user@db:5432/app",
            )?;
            if hc.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
                return Err(check.error(&field("query"), "expected a query, found an empty string"));
            }
        }
        CheckType::Command => {
            require(
                check,
                hc.command.as_deref().is_some_and(|c| !c.trim().is_empty()),
                "command",
                "./scripts/check.sh",
            )?;
        }
    }
    if hc.timeout.is_zero() {
        return Err(check.error(&field("timeout"), "expected a duration above zero"));
    }
    Ok(())
}

fn resolve_gate(
    check: &Check<'_>,
    path: &str,
    gate: &mut Gate,
    checks: &[String],
) -> Result<(), ConfigError> {
    let is_builtin = BUILTIN_GATES.contains(&gate.name.as_str());
    let is_check = checks.contains(&gate.name);
    let kind = match gate.kind {
        Some(kind) => kind,
        None if is_check => GateKind::HealthCheck,
        None if is_builtin => GateKind::Builtin,
        None if gate.name == "manual" || gate.name == "manual_approval" => GateKind::Manual,
        None => {
            let mut known: Vec<&str> = BUILTIN_GATES.to_vec();
            known.extend(checks.iter().map(String::as_str));
            let mut message = format!(
                "unknown gate \"{}\": expected one of {}, the name of a health check, or a mapping with name and type (command, http, manual)",
                gate.name,
                known.join(", ")
            );
            if let Some(near) = super::did_you_mean(&gate.name, known.iter().copied()) {
                message.push_str(&format!(" (did you mean {near}?)"));
            }
            return Err(check.error(path, message));
        }
    };
    let sub = |key: &str| {
        if check.present(&format!("{path}.{key}")) {
            format!("{path}.{key}")
        } else {
            path.to_string()
        }
    };
    match kind {
        GateKind::Builtin if !is_builtin => {
            return Err(check.error(
                &sub("name"),
                format!(
                    "\"{}\" is not a built-in gate: expected one of {}",
                    gate.name,
                    BUILTIN_GATES.join(", ")
                ),
            ));
        }
        GateKind::HealthCheck if !is_check => {
            return Err(unknown_name(
                check,
                &sub("name"),
                "health check",
                &gate.name,
                checks,
            ));
        }
        GateKind::Command if gate.command.as_deref().is_none_or(|c| c.trim().is_empty()) => {
            return Err(check.error(&sub("command"), "a command gate needs command"));
        }
        GateKind::Http if gate.url.is_none() => {
            return Err(check.error(&sub("url"), "an http gate needs url"));
        }
        _ => {}
    }
    if gate.timeout.is_zero() {
        return Err(check.error(&sub("timeout"), "expected a duration above zero"));
    }
    gate.kind = Some(kind);
    Ok(())
}

fn validate_criteria(
    check: &Check<'_>,
    base: &str,
    c: &RollbackCriteria,
    checks: &[String],
) -> Result<(), ConfigError> {
    if let Some(trigger) = &c.error_rate
        && trigger.for_duration.is_zero()
    {
        return Err(check.error(
            &format!("{base}.error_rate.for"),
            "expected a duration above zero",
        ));
    }
    for (i, name) in c.critical_checks.iter().enumerate() {
        if !checks.contains(name) {
            return Err(unknown_name(
                check,
                &format!("{base}.critical_checks[{i}]"),
                "health check",
                name,
                checks,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn window(start: &str, end: &str, tz: &str, days: Option<Vec<Weekday>>) -> DeploymentWindow {
        DeploymentWindow {
            start_time: start.parse().unwrap_or_else(|e| panic!("{e}")),
            end_time: end.parse().unwrap_or_else(|e| panic!("{e}")),
            timezone: tz.parse().unwrap_or_else(|e| panic!("{e}")),
            days,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or_else(|| panic!("bad test time"))
    }

    #[test]
    fn windows_open_and_close() {
        let w = window("02:00", "06:00", "UTC", None);
        assert!(w.contains(utc(2026, 3, 2, 2, 0)));
        assert!(w.contains(utc(2026, 3, 2, 5, 59)));
        assert!(!w.contains(utc(2026, 3, 2, 6, 0)));
        assert!(!w.contains(utc(2026, 3, 2, 1, 59)));
    }

    #[test]
    fn windows_past_midnight_belong_to_the_opening_day() {
        // Friday 22:00 to Saturday 04:00, Fridays only.
        let w = window("22:00", "04:00", "UTC", Some(vec![Weekday::Fri]));
        assert!(w.contains(utc(2026, 3, 6, 23, 0))); // Fri
        assert!(w.contains(utc(2026, 3, 7, 3, 0))); // Sat early: Friday's window
        assert!(!w.contains(utc(2026, 3, 7, 23, 0))); // Sat late
        assert!(!w.contains(utc(2026, 3, 6, 3, 0))); // Fri early: Thursday's window
    }

    #[test]
    fn windows_follow_daylight_saving_time() {
        // Berlin moved to CEST (UTC+2) on 2026-03-29; 02:00-06:00 local.
        let w = window("02:00", "06:00", "Europe/Berlin", None);
        assert!(w.contains(utc(2026, 3, 28, 1, 30))); // 02:30 CET
        assert!(!w.contains(utc(2026, 3, 29, 4, 30))); // 06:30 CEST
        assert!(w.contains(utc(2026, 3, 29, 3, 30))); // 05:30 CEST
        assert!(w.contains(utc(2026, 10, 25, 4, 30))); // 05:30 CET after the switch back
    }

    #[test]
    fn alert_conditions() {
        let c: AlertCondition = "deployment_failure_rate > 0.1"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.metric.as_str(), c.op, c.threshold),
            ("deployment_failure_rate", Comparison::Greater, 0.1)
        );
        assert!(c.op.holds(0.2, c.threshold));
        let c: AlertCondition = "duration>=3600".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.op, Comparison::GreaterOrEqual);
        assert!("rate is high".parse::<AlertCondition>().is_err());
        assert!("> 5".parse::<AlertCondition>().is_err());
        assert!("x > lots".parse::<AlertCondition>().is_err());
    }
}
