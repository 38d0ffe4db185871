//! deployment-config.yaml: the seed's snippets as written, the shipped
//! example, and every kind of mistake reported at its line with its key path.

use cutover_core::config::deployment::{Channel, CheckType, GateKind, LogLevel, Stage, Strategy};
use cutover_core::config::values::Duration;
use cutover_core::config::{
    ConfigError, ConfigKind, DeploymentConfig, Location, Vars, Warning, detect,
};

/// Seed 000's YAML snippets, copied verbatim (label, text).
const SEED_SNIPPETS: &[(&str, &str)] = &[
    (
        "Global settings",
        r##"# Global settings
global:
  organization: "Your Organization"
  project: "Device Management Platform"
  notification_channels:
    - email
    - slack

# Environment definitions
environments:
  production:
    name: "Production"
    stage: "production"
    description: "Production environment"
    api_endpoints:
      device_service: "https://api.company.com:3002"
      ota_service: "https://api.company.com:3003"
    approval_required: true
    auto_rollback: true
    health_check_url: "https://api.company.com:3002/health"
    deployment_window:
      start_time: "02:00"
      end_time: "06:00"
      timezone: "UTC"
"##,
    ),
    (
        "strategy blue_green",
        r##"strategy: "blue_green"
"##,
    ),
    (
        "strategy canary",
        r##"strategy: "canary"
canary_percentage: 10
"##,
    ),
    (
        "strategy rolling",
        r##"strategy: "rolling"
"##,
    ),
    (
        "strategy immediate",
        r##"strategy: "immediate"
"##,
    ),
    (
        "health_checks",
        r##"health_checks:
  api_health:
    type: "http"
    endpoint: "/health"
    method: "GET"
    timeout: 30
    expected_status: 200
    retry_count: 3
    
  device_connectivity:
    type: "mqtt"
    broker: "mqtt://broker.company.com:1883"
    topic: "health/check"
    timeout: 60
    
  database_health:
    type: "database"
    connection_string: "postgresql://user:pass@db:5432/devicedb"
    query: "SELECT 1"
    timeout: 10
"##,
    ),
    (
        "notifications",
        r##"notifications:
  email:
    enabled: true
    smtp_server: "smtp.gmail.com"
    smtp_port: 587
    use_tls: true
    from_email: "noreply@company.com"
    recipients:
      - "admin@company.com"
      - "dev-team@company.com"
"##,
    ),
    (
        "notifications",
        r##"notifications:
  slack:
    enabled: true
    webhook_url: "https://hooks.slack.com/services/YOUR/SLACK/WEBHOOK"
    channel: "#deployments"
    username: "DeploymentBot"
    icon_emoji: ":rocket:"
"##,
    ),
    (
        "notifications",
        r##"notifications:
  webhook:
    enabled: true
    url: "https://api.company.com/webhook/deployment"
    method: "POST"
    headers:
      Content-Type: "application/json"
      Authorization: "Bearer YOUR_TOKEN"
"##,
    ),
    (
        "quality_gates",
        r##"quality_gates:
  pre_deployment:
    - firmware_validation
    - device_compatibility_check
    - security_scan
    - performance_test
    
  post_deployment:
    - health_check
    - functionality_test
    - performance_validation
    - user_acceptance_test
"##,
    ),
    (
        "rollback_criteria",
        r##"rollback_criteria:
  max_failure_rate: 10          # Maximum 10% failure rate
  health_check_failure: true    # Rollback on health check failure
  performance_degradation: 20   # Rollback on 20% performance drop
  user_reported_issues: 5       # Rollback on 5+ user reports
"##,
    ),
    (
        "security",
        r##"security:
  api_key_auth: true
  jwt_secret: "your-jwt-secret-key"
  rate_limiting:
    enabled: true
    max_requests: 100
    window_seconds: 60
  ip_whitelist:
    - "192.168.1.0/24"
    - "10.0.0.0/8"
"##,
    ),
    (
        "security",
        r##"security:
  encryption:
    enabled: true
    algorithm: "AES-256-GCM"
    key_rotation_days: 30
"##,
    ),
    (
        "logging",
        r##"logging:
  audit_logging: true
  log_level: "INFO"
  log_file: "deployment-audit.log"
  detailed_logging: true
"##,
    ),
    (
        "alerting",
        r##"alerting:
  rules:
    - name: "deployment_failure_rate"
      condition: "deployment_failure_rate > 0.1"
      severity: "warning"
      message: "Deployment failure rate is above 10%"
      
    - name: "deployment_duration"
      condition: "deployment_duration > 3600"
      severity: "warning"
      message: "Deployment is taking longer than 1 hour"
"##,
    ),
    (
        "performance",
        r##"performance:
  max_concurrent_deployments: 5
  deployment_timeout: 3600
  health_check_timeout: 300
  worker_threads: 20
"##,
    ),
    (
        "cache",
        r##"cache:
  enabled: true
  cache_type: "redis"
  redis_url: "redis://localhost:6379/0"
  default_ttl: 3600
"##,
    ),
    (
        "database",
        r##"database:
  connection_string: "postgresql://user:pass@localhost:5432/deploymentdb"
  pool_size: 20
  max_overflow: 30
  pool_timeout: 30
"##,
    ),
    (
        "logging",
        r##"logging:
  log_level: "DEBUG"
  detailed_logging: true
  verbose_output: true
"##,
    ),
];

fn load(text: &str) -> (DeploymentConfig, Vec<Warning>) {
    DeploymentConfig::from_yaml(text, "deployment-config.yaml")
        .unwrap_or_else(|e| panic!("expected a valid config, got: {e}\n{text}"))
}

fn fail(text: &str) -> ConfigError {
    match DeploymentConfig::from_yaml(text, "deployment-config.yaml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// 1-based line and column of the first occurrence of `needle`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, column)
}

fn assert_at(e: &ConfigError, path: &str, text: &str, needle: &str) {
    let (line, column) = position(text, needle);
    assert_eq!(e.path(), path, "{e}");
    assert_eq!(
        e.location(),
        &Location::File {
            file: "deployment-config.yaml".into(),
            line,
            column
        },
        "{e}"
    );
}

const PRODUCTION: &str = r#"environments:
  production:
    name: "Production"
    stage: "production"
    approval_required: true
    max_concurrent_deployments: 1
    deployment_window:
      start_time: "02:00"
      end_time: "06:00"
      timezone: "UTC"
"#;

#[test]
fn every_seed_snippet_passes_without_unknown_keys() {
    assert_eq!(SEED_SNIPPETS.len(), 19);
    for (label, text) in SEED_SNIPPETS {
        let (_, warnings) = DeploymentConfig::from_yaml(text, "deployment-config.yaml")
            .unwrap_or_else(|e| panic!("seed snippet {label} refused: {e}"));
        for w in &warnings {
            assert!(
                !w.message.contains("unknown key"),
                "seed snippet {label}: {w}"
            );
        }
    }
}

#[test]
fn the_seed_main_configuration_reads_as_written() {
    let (config, warnings) = load(SEED_SNIPPETS[0].1);
    assert_eq!(
        config.global.organization.as_deref(),
        Some("Your Organization")
    );
    assert_eq!(
        config.global.notification_channels,
        vec![Channel::Email, Channel::Slack]
    );
    let prod = &config.environments["production"];
    assert_eq!(prod.stage(), Stage::Production);
    assert!(prod.approval_required.required);
    assert_eq!(prod.approval_required.approvers, 1);
    assert!(prod.auto_rollback);
    assert_eq!(
        prod.api_endpoints["ota_service"].as_str(),
        "https://api.company.com:3003/"
    );
    let window = prod
        .deployment_window
        .as_ref()
        .unwrap_or_else(|| panic!("window"));
    assert_eq!(window.to_string(), "02:00-06:00 UTC");
    // email and slack are named but not configured in this snippet: warned, located.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(warnings[0].path, "global.notification_channels[0]");
    assert_eq!(warnings[0].location.line(), Some(6));
}

#[test]
fn seed_sections_keep_their_values() {
    let find = |label: &str, needle: &str| {
        SEED_SNIPPETS
            .iter()
            .find(|(l, t)| *l == label && t.contains(needle))
            .map(|(_, t)| load(t).0)
            .unwrap_or_else(|| panic!("no snippet {label}"))
    };
    let c = find("health_checks", "api_health");
    assert_eq!(c.health_checks["api_health"].check_type, CheckType::Http);
    assert_eq!(c.health_checks["api_health"].retry_count, 3);
    assert_eq!(
        c.health_checks["device_connectivity"].timeout,
        Duration::from_secs(60)
    );
    assert_eq!(c.health_checks["database_health"].query(), "SELECT 1");
    let c = find("rollback_criteria", "max_failure_rate");
    assert_eq!(
        c.rollback_criteria.max_failure_rate.map(|p| p.get()),
        Some(10.0)
    );
    assert_eq!(c.rollback_criteria.user_reported_issues, Some(5));
    let c = find("quality_gates", "firmware_validation");
    assert_eq!(c.quality_gates.pre_deployment.len(), 4);
    assert!(
        c.quality_gates
            .post_deployment
            .iter()
            .all(|g| g.kind() == GateKind::Builtin)
    );
    let c = find("security", "ip_whitelist");
    assert_eq!(c.security.ip_whitelist.len(), 2);
    assert_eq!(
        c.security.rate_limiting.window_seconds,
        Duration::from_secs(60)
    );
    let c = find("logging", "DEBUG");
    assert_eq!(c.logging.log_level, LogLevel::Debug);
    assert!(c.logging.verbose_output);
    let c = find("strategy blue_green", "blue_green");
    assert_eq!(c.strategy, Some(Strategy::BlueGreen));
    let c = find("strategy canary", "canary_percentage");
    assert_eq!(c.canary_percentage.map(|p| p.get()), Some(10.0));
    let c = find("database", "pool_size");
    assert_eq!(c.database.max_connections(), 50);
    assert!(c.database.connection_string.is_postgres());
    let c = find("alerting", "rules");
    assert_eq!(c.alerting.rules[1].condition.threshold, 3600.0);
}

#[test]
fn the_shipped_example_passes_cleanly_with_four_stages() {
    let text = include_str!("../../../examples/deployment-config.yaml");
    let (config, warnings) = load(text);
    assert!(warnings.is_empty(), "{warnings:#?}");
    let stages: Vec<Stage> = config.environments.values().map(|e| e.stage()).collect();
    assert_eq!(
        stages,
        vec![
            Stage::Development,
            Stage::Testing,
            Stage::Staging,
            Stage::Production
        ]
    );
    assert_eq!(
        config.environments["production"]
            .approval_required
            .approvers,
        2
    );
    assert_eq!(config.notifications.enabled().len(), 3);
    assert_eq!(config.health_checks.len(), 4);
    assert_eq!(
        config.health_checks["disk_space"].command.as_deref(),
        Some("test $(df --output=pcent / | tail -1 | tr -dc 0-9) -lt 90")
    );
    assert_eq!(
        config.quality_gates.pre_deployment[4].kind(),
        GateKind::Manual
    );
    assert_eq!(
        config.database.connection_string.as_str(),
        "sqlite://cutover.db"
    );
    let summary = config.summary();
    assert_eq!(summary.environments.len(), 4);
    assert_eq!(summary.pre_deployment_gates, 5);
    assert_eq!(summary.alert_rules, 2);
    // Every section of the seed is present in the example.
    for section in [
        "global:",
        "environments:",
        "health_checks:",
        "notifications:",
        "quality_gates:",
        "rollback_criteria:",
        "security:",
        "logging:",
        "alerting:",
        "performance:",
        "cache:",
        "database:",
        "device_groups:",
        "notification_channels:",
        "rate_limiting:",
        "ip_whitelist:",
        "encryption:",
        "email:",
        "slack:",
        "webhook:",
    ] {
        assert!(text.contains(section), "the example lacks {section}");
    }
}

#[test]
fn a_wrong_type_names_file_line_column_path_and_expectation() {
    let text = PRODUCTION.replace(
        "max_concurrent_deployments: 1",
        "max_concurrent_deployments: lots",
    );
    let e = fail(&text);
    let (line, column) = position(&text, "lots");
    assert_eq!(
        e.to_string(),
        format!(
            "deployment-config.yaml:{line}:{column}: environments.production.max_concurrent_deployments: expected a whole number, found \"lots\""
        )
    );
    let text = PRODUCTION.replace("approval_required: true", "approval_required: maybe");
    assert_at(
        &fail(&text),
        "environments.production.approval_required",
        &text,
        "maybe",
    );
    let text = PRODUCTION.replace(
        "    name: \"Production\"\n",
        "    name: \"Production\"\n    auto_rollback: sometimes\n",
    );
    assert_at(
        &fail(&text),
        "environments.production.auto_rollback",
        &text,
        "sometimes",
    );
}

#[test]
fn an_impossible_time_is_located() {
    let text = PRODUCTION.replace("\"02:00\"", "\"25:61\"");
    let e = fail(&text);
    assert_at(
        &e,
        "environments.production.deployment_window.start_time",
        &text,
        "\"25:61\"",
    );
    assert!(
        e.to_string()
            .contains("expected a time of day as \"HH:MM\""),
        "{e}"
    );
}

#[test]
fn a_bad_time_zone_is_located_with_a_suggestion() {
    let text = PRODUCTION.replace("\"UTC\"", "\"Europe/Berln\"");
    let e = fail(&text);
    assert_at(
        &e,
        "environments.production.deployment_window.timezone",
        &text,
        "\"Europe/Berln\"",
    );
    assert!(e.to_string().contains("did you mean Europe/Berlin?"), "{e}");
    let text = PRODUCTION.replace("\"UTC\"", "\"Mars/Olympus_Mons\"");
    assert!(fail(&text).to_string().contains("IANA time zone"));
}

#[test]
fn an_empty_window_is_refused() {
    let text = PRODUCTION.replace("\"06:00\"", "\"02:00\"");
    let e = fail(&text);
    assert_eq!(
        e.path(),
        "environments.production.deployment_window.end_time"
    );
    assert_eq!(e.location().line(), Some(position(&text, "end_time").0));
}

#[test]
fn a_bad_cidr_is_located() {
    let text = "security:\n  ip_whitelist:\n    - \"192.168.1.0/24\"\n    - \"10.0.0.0/33\"\n";
    let e = fail(text);
    assert_at(&e, "security.ip_whitelist[1]", text, "\"10.0.0.0/33\"");
    assert!(e.to_string().contains("CIDR"), "{e}");
}

#[test]
fn a_percentage_above_100_is_located() {
    let text = "rollback_criteria:\n  max_failure_rate: 150          # Maximum 150% failure rate\n";
    let e = fail(text);
    assert_at(&e, "rollback_criteria.max_failure_rate", text, "150");
    assert!(
        e.to_string()
            .ends_with("expected a percentage from 0 to 100, found 150"),
        "{e}"
    );
    let text = "rollback_criteria:\n  error_rate:\n    above: \"120%\"\n";
    assert_at(
        &fail(text),
        "rollback_criteria.error_rate.above",
        text,
        "\"120%\"",
    );
}

#[test]
fn urls_durations_and_names_are_checked() {
    let text = "environments:\n  production:\n    api_endpoints:\n      ota: \"api.company.com\"\n";
    assert_at(
        &fail(text),
        "environments.production.api_endpoints.ota",
        text,
        "\"api.company.com\"",
    );
    let text = "environments:\n  production:\n    rollback_timeout: soon\n";
    assert_at(
        &fail(text),
        "environments.production.rollback_timeout",
        text,
        "soon",
    );
    let text = "environments:\n  production:\n    strategy: big_bang\n";
    let e = fail(text);
    assert_at(&e, "environments.production.strategy", text, "big_bang");
    assert!(
        e.to_string()
            .contains("immediate, rolling, canary, blue_green"),
        "{e}"
    );
    let text = "environments:\n  production:\n    stage: prodution\n";
    assert!(fail(text).to_string().contains("did you mean production?"));
    let text = "health_checks:\n  api:\n    type: \"grpc\"\n    endpoint: /h\n";
    let e = fail(text);
    assert_at(&e, "health_checks.api.type", text, "\"grpc\"");
    assert!(
        e.to_string().contains("http, mqtt, database, command"),
        "{e}"
    );
    let text = "health_checks:\n  api:\n    type: http\n";
    assert_eq!(fail(text).path(), "health_checks.api.endpoint");
    let text =
        "health_checks:\n  mq:\n    type: mqtt\n    broker: \"http://broker:1883\"\n    topic: t\n";
    assert_at(
        &fail(text),
        "health_checks.mq.broker",
        text,
        "\"http://broker:1883\"",
    );
    let text = "database:\n  connection_string: \"mysql://db/app\"\n";
    assert_at(
        &fail(text),
        "database.connection_string",
        text,
        "\"mysql://db/app\"",
    );
    let text = "server:\n  listen: \"localhost\"\n";
    assert_at(&fail(text), "server.listen", text, "\"localhost\"");
    let text = "notifications:\n  email:\n    smtp_server: smtp.example.com\n    from_email: noreply@example.com\n    recipients: [\"not-an-address\"]\n";
    assert_at(
        &fail(text),
        "notifications.email.recipients[0]",
        text,
        "\"not-an-address\"",
    );
    let text = "alerting:\n  rules:\n    - name: r\n      condition: \"failure rate is high\"\n";
    assert_at(
        &fail(text),
        "alerting.rules[0].condition",
        text,
        "\"failure rate is high\"",
    );
    let text = "logging:\n  log_level: LOUD\n";
    assert_at(&fail(text), "logging.log_level", text, "LOUD");
}

#[test]
fn references_to_checks_and_gates_are_resolved() {
    let text = "health_checks:\n  api_health:\n    type: http\n    endpoint: /health\nenvironments:\n  staging:\n    health_checks: [api_helth]\n";
    let e = fail(text);
    assert_at(
        &e,
        "environments.staging.health_checks[0]",
        text,
        "api_helth",
    );
    assert!(e.to_string().contains("did you mean api_health?"), "{e}");
    let text = "quality_gates:\n  pre_deployment:\n    - securty_scan\n";
    let e = fail(text);
    assert_at(&e, "quality_gates.pre_deployment[0]", text, "securty_scan");
    assert!(e.to_string().contains("did you mean security_scan?"), "{e}");
    let text = "quality_gates:\n  post_deployment:\n    - name: smoke\n      type: command\n";
    assert_eq!(fail(text).path(), "quality_gates.post_deployment[0]");
    let text = "health_checks:\n  api_health:\n    type: http\n    endpoint: /health\nquality_gates:\n  post_deployment: [api_health, health_check]\n";
    let (c, _) = load(text);
    assert_eq!(
        c.quality_gates.post_deployment[0].kind(),
        GateKind::HealthCheck
    );
    assert_eq!(c.quality_gates.post_deployment[1].kind(), GateKind::Builtin);
}

#[test]
fn unknown_keys_warn_with_line_and_nearest_key() {
    let text = PRODUCTION.replace("approval_required: true", "aproval_required: true");
    let (_, warnings) = load(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (line, column) = position(&text, "aproval_required");
    assert_eq!(
        warnings[0].to_string(),
        format!(
            "deployment-config.yaml:{line}:{column}: environments.production.aproval_required: unknown key \"aproval_required\" is ignored (did you mean approval_required?)"
        )
    );
    let (_, warnings) = load("securty:\n  api_key_auth: true\n");
    assert!(
        warnings[0].message.contains("did you mean security?"),
        "{warnings:?}"
    );
    let (_, warnings) =
        load("health_checks:\n  a:\n    type: http\n    endpoint: /h\n    timout: 5\n");
    assert_eq!(warnings[0].path, "health_checks.a.timout");
    assert!(warnings[0].message.contains("did you mean timeout?"));
}

#[test]
fn duplicate_keys_and_bad_yaml_are_located() {
    let text = "database:\n  pool_size: 5\n  pool_size: 6\n";
    let e = fail(text);
    assert_eq!(e.location().line(), Some(3));
    assert!(e.to_string().contains("duplicate key"), "{e}");
    let e = fail("environments:\n  production:\n    name: \"unclosed\n");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    assert!(e.location().line().is_some());
    let e = fail("- just\n- a list\n");
    assert_eq!(e.path(), "(top level)");
}

#[test]
fn approval_counts_and_stages_from_keys() {
    let (c, _) = load(
        "environments:\n  staging:\n    approval_required: 2\n  dev:\n    approval_required: false\n",
    );
    assert_eq!(c.environments["staging"].approval_required.approvers, 2);
    assert_eq!(c.environments["staging"].stage(), Stage::Staging);
    assert_eq!(c.environments["dev"].stage(), Stage::Development);
    assert!(!c.environments["dev"].approval_required.required);
    let e = fail("environments:\n  qa:\n    approval_required: true\n");
    assert_eq!(e.path(), "environments.qa");
    assert!(e.to_string().contains("stage"));
}

#[test]
fn interpolation_with_and_without_defaults() {
    let lookup = |name: &str| match name {
        "DB_HOST" => Some("db.internal".to_string()),
        "POOL" => Some("40".to_string()),
        _ => None,
    };
    let vars = Vars::new(&lookup);
    let text = "database:\n  connection_string: \"postgresql://app@${DB_HOST}:${DB_PORT:-5432}/cutover\"\n  pool_size: ${POOL}\nserver:\n  listen: \"${LISTEN:-0.0.0.0:8080}\"\n";
    let (c, _) = DeploymentConfig::from_yaml_with(text, "deployment-config.yaml", &vars)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.database.connection_string.as_str(),
        "postgresql://app@db.internal:5432/cutover"
    );
    assert_eq!(c.database.pool_size, 40);
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");

    let text = "database:\n  pool_size: 4\n  connection_string: \"postgresql://${DB_USER}@db/x\"\n";
    let e = DeploymentConfig::from_yaml_with(text, "deployment-config.yaml", &vars)
        .err()
        .unwrap_or_else(|| panic!("a missing variable must fail"));
    assert!(
        matches!(&e, ConfigError::MissingVariable { variable, .. } if variable == "DB_USER"),
        "{e}"
    );
    assert_at(&e, "database.connection_string", text, "\"postgresql://");
    assert!(e.to_string().contains("DB_USER is not set"), "{e}");

    // an interpolated value is still validated at the line that wrote it
    let text = "database:\n  pool_size: ${POOL_SIZE:-many}\n";
    assert_at(&fail(text), "database.pool_size", text, "${POOL_SIZE");
}

#[test]
fn a_variable_holding_null_text_is_that_text_and_an_empty_one_is_nothing() {
    let lookup = |name: &str| match name {
        "TILDE" => Some("~".to_string()),
        "WORD" => Some("null".to_string()),
        _ => None,
    };
    let vars = Vars::new(&lookup);
    let organization = |value: &str| {
        let text = format!("global:\n  organization: {value}\n");
        let (c, _) = DeploymentConfig::from_yaml_with(&text, "f.yaml", &vars)
            .unwrap_or_else(|e| panic!("{e}"));
        c.global.organization
    };
    assert_eq!(organization("${TILDE}").as_deref(), Some("~"));
    assert_eq!(organization("${WORD}").as_deref(), Some("null"));
    assert_eq!(organization("${UNSET:-}"), None);
    // written plainly, `~` is still no value
    assert_eq!(organization("~"), None);
}

#[test]
fn cutover_overrides_replace_file_values() {
    let none = |_: &str| None;
    let overrides = vec![
        (
            "CUTOVER_DATABASE_CONNECTION_STRING".to_string(),
            "postgresql://postgres@127.0.0.1:5432/cutover".to_string(),
        ),
        (
            "CUTOVER_SERVER_LISTEN".to_string(),
            "0.0.0.0:9000".to_string(),
        ),
        (
            "CUTOVER_ENVIRONMENTS__PRODUCTION__APPROVAL_REQUIRED".to_string(),
            "3".to_string(),
        ),
        (
            "CUTOVER_SECURITY_IP_WHITELIST".to_string(),
            "[10.0.0.0/8, \"192.168.0.0/16\"]".to_string(),
        ),
        ("CUTOVER_LOG".to_string(), "debug".to_string()),
        ("CUTOVER_API_KEY".to_string(), "abc".to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    let vars = Vars::new(&none).with_overrides(&overrides);
    let (c, warnings) =
        DeploymentConfig::from_yaml_with(PRODUCTION, "deployment-config.yaml", &vars)
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(c.database.connection_string.is_postgres());
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.environments["production"].approval_required.approvers, 3);
    assert_eq!(c.security.ip_whitelist.len(), 2);

    let bad = vec![("CUTOVER_SERVER_LISTEN".to_string(), "nowhere".to_string())];
    let vars = Vars::new(&none).with_overrides(&bad);
    let e = DeploymentConfig::from_yaml_with(PRODUCTION, "deployment-config.yaml", &vars)
        .err()
        .unwrap_or_else(|| panic!("a bad override must fail"));
    assert_eq!(e.path(), "server.listen");
    assert_eq!(
        e.location(),
        &Location::Override {
            variable: "CUTOVER_SERVER_LISTEN".into()
        }
    );
    assert!(
        e.to_string().starts_with(
            "environment variable CUTOVER_SERVER_LISTEN: server.listen: expected an address"
        ),
        "{e}"
    );

    assert_eq!(
        DeploymentConfig::override_path("CUTOVER_DATABASE_CONNECTION_STRING").as_deref(),
        Some("database.connection_string")
    );
    assert_eq!(
        DeploymentConfig::override_path("CUTOVER_MQTT_URL").as_deref(),
        Some("mqtt.url")
    );
    assert_eq!(DeploymentConfig::override_path("CUTOVER_LOG"), None);
}

#[test]
fn defaults_when_sections_are_missing() {
    let (c, warnings) = load("");
    assert!(warnings.is_empty());
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:5001");
    assert!(c.mqtt.embedded());
    assert_eq!(c.mqtt.listen.to_string(), "127.0.0.1:1883");
    assert_eq!(c.database.connection_string.as_str(), "sqlite://cutover.db");
    assert!(c.security.api_key_auth);
    assert_eq!(c.security.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(c.artifacts.dir, "artifacts");
    let (c, _) = load("environments:\n  production:\n    stage: production\n");
    let prod = &c.environments["production"];
    assert_eq!(prod.max_concurrent_deployments, 1);
    assert_eq!(prod.rollback_timeout, Duration::from_secs(300));
    assert!(prod.auto_rollback);
    assert!(!prod.approval_required.required);
}

#[test]
fn file_kinds_are_detected_by_name_then_content() {
    assert_eq!(detect("x/deploy.yml", ""), ConfigKind::Deploy);
    assert_eq!(detect("config.yml", ""), ConfigKind::Host);
    assert_eq!(detect("deployment-config.yaml", ""), ConfigKind::Deployment);
    assert_eq!(
        detect("a.yaml", "name: a\ntype: node\nhealthCheck: /h\n"),
        ConfigKind::Deploy
    );
    assert_eq!(
        detect("a.yaml", "port: 80\nmanager: pm2\n"),
        ConfigKind::Host
    );
    assert_eq!(
        detect("a.yaml", "environments: {}\n"),
        ConfigKind::Deployment
    );
    assert_eq!(
        detect("a.yaml", "server:\n  listen: 1.2.3.4:80\n"),
        ConfigKind::Deployment
    );
}

#[test]
fn anchors_and_merge_keys_share_settings() {
    let text = "environments:\n  staging: &base\n    stage: staging\n    auto_rollback: false\n    max_concurrent_deployments: 2\n  production:\n    <<: *base\n    stage: production\n";
    let (c, warnings) = load(text);
    assert!(warnings.is_empty(), "{warnings:?}");
    let prod = &c.environments["production"];
    assert_eq!(prod.stage(), Stage::Production);
    assert!(!prod.auto_rollback);
    assert_eq!(prod.max_concurrent_deployments, 2);
}

#[test]
fn enabled_channels_need_their_settings() {
    let text = "notifications:\n  email:\n    enabled: true\n    from_email: a@b.co\n";
    assert_eq!(fail(text).path(), "notifications.email.smtp_server");
    let text = "notifications:\n  email:\n    smtp_server: \"smtp://mail\"\n";
    assert_at(
        &fail(text),
        "notifications.email.smtp_server",
        text,
        "\"smtp://mail\"",
    );
    let text = "notifications:\n  slack:\n    enabled: true\n";
    assert_eq!(fail(text).path(), "notifications.slack.webhook_url");
    let (c, _) = load("notifications:\n  slack:\n    enabled: false\n");
    assert!(c.notifications.enabled().is_empty());
    let text = "notifications:\n  webhook:\n    url: \"ftp://x.example.com\"\n";
    assert_at(&fail(text), "notifications.webhook.url", text, "\"ftp://x");
    let text = "environments:\n  production:\n    approval_required: -1\n";
    assert_at(
        &fail(text),
        "environments.production.approval_required",
        text,
        "-1",
    );
    let text = "environments:\n  production:\n    notification_channels: [email, pager]\n";
    let e = fail(text);
    assert_eq!(e.path(), "environments.production.notification_channels[1]");
    assert!(e.to_string().contains("email, slack, webhook"), "{e}");
    let text = "cache:\n  enabled: true\n  cache_type: redis\n";
    assert_eq!(fail(text).path(), "cache.redis_url");
    let text = "security:\n  encryption:\n    enabled: true\n    key: \"c2hvcnQ=\"\n";
    assert_at(&fail(text), "security.encryption.key", text, "\"c2hvcnQ=\"");
}

#[test]
fn secrets_are_not_serialized() {
    let text = "security:\n  jwt_secret: \"0123456789abcdef0123456789abcdef-jwt\"\nnotifications:\n  email:\n    smtp_server: smtp.example.com\n    from_email: a@example.com\n    recipients: [b@example.com]\n    password: hunter2-mail\n  webhook:\n    url: https://hooks.example.com/x\n    secret: hmac-key-webhook\nmqtt:\n  password: broker-pass\n";
    let (c, _) = load(text);
    assert_eq!(
        c.notifications
            .email
            .as_ref()
            .and_then(|e| e.password.as_deref()),
        Some("hunter2-mail")
    );
    let json = serde_json::to_string(&c).unwrap_or_else(|e| panic!("{e}"));
    for secret in [
        "0123456789abcdef",
        "hunter2-mail",
        "hmac-key-webhook",
        "broker-pass",
    ] {
        assert!(!json.contains(secret), "{secret} leaked into {json}");
    }
}

#[test]
fn mqtt_tls_keys_apply_to_their_broker_and_come_in_pairs() {
    // The embedded broker's mqtts listener: port 8883 beside mqtt.listen by default.
    let text = "mqtt:\n  listen: 0.0.0.0:1883\n  tls:\n    cert_file: /etc/cutover/broker.pem\n    key_file: /etc/cutover/broker.key\n";
    let (c, warnings) = load(text);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.mqtt.tls_listen(), Some("0.0.0.0:8883".parse().unwrap()));
    let (c, _) = load(
        "mqtt:\n  tls:\n    listen: 127.0.0.1:9883\n    cert_file: a.pem\n    key_file: a.key\n",
    );
    assert_eq!(c.mqtt.tls_listen(), Some("127.0.0.1:9883".parse().unwrap()));
    let (c, _) = load("mqtt:\n  listen: 127.0.0.1:1884\n");
    assert_eq!(c.mqtt.tls_listen(), None);

    // A certificate without its key, either way round, is refused where it stands.
    let text = "mqtt:\n  tls:\n    cert_file: a.pem\n";
    let e = fail(text);
    assert_at(&e, "mqtt.tls.cert_file", text, "a.pem");
    assert!(e.to_string().contains("needs mqtt.tls.key_file"), "{e}");
    let text =
        "mqtt:\n  url: mqtts://broker.example.com:8883\n  tls:\n    client_key_file: c.key\n";
    let e = fail(text);
    assert_at(&e, "mqtt.tls.client_key_file", text, "c.key");
    assert!(
        e.to_string().contains("needs mqtt.tls.client_cert_file"),
        "{e}"
    );
    let text =
        "mqtt:\n  listen: 127.0.0.1:8883\n  tls:\n    cert_file: a.pem\n    key_file: a.key\n";
    assert_eq!(fail(text).path(), "mqtt.tls.listen");

    // Keys of the other kind of broker are named as ignored.
    let (_, warnings) =
        load("mqtt:\n  tls:\n    ca_file: ca.pem\n    cert_file: a.pem\n    key_file: a.key\n");
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["mqtt.tls.ca_file"], "{warnings:?}");
    let (_, warnings) = load(
        "mqtt:\n  url: mqtts://broker.example.com:8883\n  tls:\n    ca_file: ca.pem\n    cert_file: a.pem\n    key_file: a.key\n",
    );
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        ["mqtt.tls.cert_file", "mqtt.tls.key_file"],
        "{warnings:?}"
    );
    let (_, warnings) =
        load("mqtt:\n  url: mqtt://broker.example.com:1883\n  tls:\n    ca_file: ca.pem\n");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].message.contains("not an mqtts://"),
        "{warnings:?}"
    );
}
