//! What the API server is configured with: environments, security, limits.
//!
//! These are plain values, built from the deployment configuration by `cutover serve` or
//! directly by tests. The defaults live here and nowhere else: four environments in the
//! seed's order, production requiring one approval, API keys on, rate limiting at the seed's
//! 100 requests per 60 seconds, no allow-list.

use crate::health_checks::CheckToRun;
use cutover_core::config::deployment::{EnvironmentGates, HealthCheck, QualityGates};
use indexmap::IndexMap;
use ipnet::IpNet;
use serde_json::json;
use std::time::Duration;

/// The default address of the API, as the seed's examples use it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5001";

/// An environment and its policy, as the server syncs it into the store.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentSettings {
    /// The key under `environments:` (e.g. `production`).
    pub name: String,
    /// Order in the promotion chain; lower comes first.
    pub position: i64,
    pub approval_required: bool,
    /// Distinct approvers needed when `approval_required` (at least 1 then).
    pub required_approvals: i64,
    pub auto_rollback: bool,
    pub max_concurrent_deployments: Option<i64>,
    /// The environment's section as written in the configuration (returned by the API).
    pub config: serde_json::Value,
    /// The environment's own `quality_gates`, per phase over the top-level ones.
    pub quality_gates: Option<EnvironmentGates>,
    /// Names from the top-level `health_checks` this environment runs.
    pub health_checks: Vec<String>,
    /// `health_check_url`: checked itself, and the base of checks whose endpoint is a path.
    pub health_check_url: Option<String>,
    /// The first of `api_endpoints`: the base of relative endpoints without a health_check_url.
    pub api_endpoint: Option<String>,
}

impl EnvironmentSettings {
    /// An environment with no approval and auto rollback on.
    pub fn new(name: &str, position: i64) -> Self {
        EnvironmentSettings {
            name: name.to_string(),
            position,
            approval_required: false,
            required_approvals: 0,
            auto_rollback: true,
            max_concurrent_deployments: None,
            config: json!({ "name": capitalise(name), "stage": name }),
            quality_gates: None,
            health_checks: Vec::new(),
            health_check_url: None,
            api_endpoint: None,
        }
    }

    /// Approvals actually needed before a plan to this environment may run.
    pub fn approvals_needed(&self) -> i64 {
        if self.approval_required {
            self.required_approvals.max(1)
        } else {
            0
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// development, testing, staging, production; production needs one approval.
pub fn default_environments() -> Vec<EnvironmentSettings> {
    let mut envs: Vec<EnvironmentSettings> = ["development", "testing", "staging", "production"]
        .iter()
        .enumerate()
        .map(|(i, n)| EnvironmentSettings::new(n, i as i64))
        .collect();
    if let Some(prod) = envs.last_mut() {
        prod.approval_required = true;
        prod.required_approvals = 1;
        prod.config["approval_required"] = json!(true);
        prod.config["auto_rollback"] = json!(true);
    }
    envs
}

/// JSON Web Tokens accepted as `Authorization: Bearer`.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// HS256 shared secret (the seed's `jwt_secret`).
    pub hs256_secret: Option<Vec<u8>>,
    /// EdDSA (Ed25519) public keys, raw 32 bytes each.
    pub ed25519_public_keys: Vec<[u8; 32]>,
    /// Required `iss`; none means any.
    pub issuer: Option<String>,
    /// Required `aud`; none means any.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on exp and nbf.
    pub leeway_secs: u64,
}

impl JwtSettings {
    pub fn enabled(&self) -> bool {
        self.hs256_secret.is_some() || !self.ed25519_public_keys.is_empty()
    }
}

/// The seed's `rate_limiting`: at most `max_requests` per `window` per API key and per client
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub max_requests: u32,
    pub window: Duration,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            max_requests: 100,
            window: Duration::from_secs(60),
        }
    }
}

/// The seed's `security` section.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Accept `X-API-Key`.
    pub api_key_auth: bool,
    pub jwt: JwtSettings,
    /// None turns rate limiting off.
    pub rate_limit: Option<RateLimitSettings>,
    /// Client networks allowed in; empty allows every address.
    pub ip_allowlist: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            api_key_auth: true,
            jwt: JwtSettings::default(),
            rate_limit: Some(RateLimitSettings::default()),
            ip_allowlist: Vec::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Everything the API server needs besides its store and listener.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub environments: Vec<EnvironmentSettings>,
    pub security: SecuritySettings,
    /// The secret API keys are HMAC'd with; the same one must be used to create keys.
    pub key_secret: Vec<u8>,
    /// How often the event stream polls the store for progress.
    pub event_poll: Duration,
    /// Timeout of each environment health check.
    pub health_check_timeout: Duration,
    /// How long a deployment's status or a deployment list may be served from memory.
    /// This server's own changes drop them at once; another replica's show within it.
    /// Zero reads the store every time.
    pub read_cache_ttl: Duration,
    /// The top-level `quality_gates`: pre-deployment gates decided when a deployment
    /// is executed, post-deployment gates after each wave.
    pub quality_gates: QualityGates,
    /// Ed25519 keys artifact signatures must verify with (`artifacts.public_keys`).
    pub artifact_public_keys: Vec<[u8; 32]>,
    /// The top-level `health_checks`, by name.
    pub health_checks: IndexMap<String, HealthCheck>,
}

impl ServerSettings {
    /// Default settings with the given key secret.
    pub fn new(key_secret: Vec<u8>) -> Self {
        ServerSettings {
            environments: default_environments(),
            security: SecuritySettings::default(),
            key_secret,
            event_poll: Duration::from_millis(500),
            health_check_timeout: Duration::from_secs(5),
            read_cache_ttl: Duration::from_secs(1),
            quality_gates: QualityGates::default(),
            artifact_public_keys: Vec::new(),
            health_checks: IndexMap::new(),
        }
    }

    /// The health checks `environment` runs: those its `health_checks` name,
    /// then its `health_check_url`.
    pub fn environment_checks(&self, environment: &str) -> Vec<CheckToRun> {
        let Some(env) = self.environments.iter().find(|e| e.name == environment) else {
            return Vec::new();
        };
        let mut checks: Vec<CheckToRun> = env
            .health_checks
            .iter()
            .filter_map(|name| self.health_check(environment, name))
            .collect();
        if let Some(url) = &env.health_check_url {
            checks.push(CheckToRun::url(url));
        }
        checks
    }

    /// One of the top-level `health_checks` as `environment` runs it: a path
    /// endpoint is joined to its `health_check_url`, else its first API endpoint.
    pub fn health_check(&self, environment: &str, name: &str) -> Option<CheckToRun> {
        let check = self.health_checks.get(name)?.clone();
        let env = self.environments.iter().find(|e| e.name == environment);
        Some(CheckToRun {
            name: name.to_string(),
            check,
            base_url: env.and_then(|e| e.health_check_url.clone().or(e.api_endpoint.clone())),
        })
    }

    /// The gates of a deployment into `environment`: per phase, the environment's
    /// own when it lists that phase, else the top-level ones.
    pub fn gates_for(&self, environment: &str) -> QualityGates {
        let own = self
            .environments
            .iter()
            .find(|e| e.name == environment)
            .and_then(|e| e.quality_gates.as_ref());
        self.quality_gates.overridden_by(own)
    }
}

/// Builds the server's settings from a loaded `deployment-config.yaml`. Environments are
/// ordered by stage (development → production), whatever order the file lists them in.
pub fn from_config(
    config: &cutover_core::config::DeploymentConfig,
    key_secret: Vec<u8>,
) -> ServerSettings {
    let mut settings = ServerSettings::new(key_secret);
    settings.read_cache_ttl = config.server.read_cache_ttl.into();
    if !config.environments.is_empty() {
        settings.environments = config
            .environments
            .iter()
            .enumerate()
            .map(|(index, (name, env))| {
                let mut section = serde_json::to_value(env).unwrap_or_else(|_| json!({}));
                if section.get("name").is_none_or(|v| v.is_null()) {
                    section["name"] = json!(name);
                }
                if section.get("stage").is_none_or(|v| v.is_null()) {
                    section["stage"] = json!(env.stage().as_str());
                }
                EnvironmentSettings {
                    name: name.clone(),
                    position: i64::from(env.stage().rank()) * 1000 + index as i64,
                    approval_required: env.approval_required.required,
                    required_approvals: i64::from(env.approval_required.approvers),
                    auto_rollback: env.auto_rollback,
                    max_concurrent_deployments: (env.max_concurrent_deployments > 0)
                        .then_some(i64::from(env.max_concurrent_deployments)),
                    config: section,
                    quality_gates: env.quality_gates.clone(),
                    health_checks: env.health_checks.clone(),
                    health_check_url: env
                        .health_check_url
                        .as_ref()
                        .map(|u| u.as_str().to_string()),
                    api_endpoint: env
                        .api_endpoints
                        .values()
                        .next()
                        .map(|u| u.as_str().to_string()),
                }
            })
            .collect();
        settings.environments.sort_by_key(|e| e.position);
    }
    let s = &config.security;
    settings.security.api_key_auth = s.api_key_auth;
    settings.security.jwt.hs256_secret = s.jwt_secret.as_ref().map(|x| x.as_bytes().to_vec());
    settings.security.rate_limit = s.rate_limiting.enabled.then(|| RateLimitSettings {
        max_requests: s.rate_limiting.max_requests,
        window: s.rate_limiting.window_seconds.get(),
    });
    settings.security.ip_allowlist = s.ip_whitelist.iter().map(|c| c.0).collect();
    settings.security.trusted_proxies = s.trusted_proxies.iter().map(|c| c.0).collect();
    settings.security.max_body_bytes = usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX);
    settings.quality_gates = config.quality_gates.clone();
    settings.health_checks = config.health_checks.clone();
    // Checked when the configuration was loaded: 64 hex digits each.
    settings.artifact_public_keys = config
        .artifacts
        .public_keys
        .iter()
        .filter_map(|k| hex::decode(k.trim()).ok()?.try_into().ok())
        .collect();
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_security_section_maps_to_settings() {
        let yaml = r#"
environments:
  production:
    name: "Production"
    stage: "production"
    approval_required: 2
  staging:
    stage: "staging"
security:
  api_key_auth: true
  jwt_secret: "a-very-long-jwt-secret-of-at-least-32-bytes"
  rate_limiting:
    enabled: true
    max_requests: 100
    window_seconds: 60
  ip_whitelist:
    - "192.168.1.0/24"
    - "10.0.0.0/8"
"#;
        let (config, _) =
            cutover_core::config::DeploymentConfig::from_yaml(yaml, "deployment-config.yaml")
                .unwrap();
        let s = from_config(&config, b"k".to_vec());
        assert_eq!(s.environments[0].name, "staging");
        assert_eq!(s.environments[1].name, "production");
        assert_eq!(s.environments[1].approvals_needed(), 2);
        assert_eq!(
            s.security.rate_limit,
            Some(RateLimitSettings {
                max_requests: 100,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(s.security.ip_allowlist.len(), 2);
        assert!(s.security.jwt.hs256_secret.is_some());
    }

    #[test]
    fn an_environment_replaces_the_top_level_gates_one_phase_at_a_time() {
        let yaml = r#"
environments:
  staging:
    stage: staging
  production:
    stage: production
    quality_gates:
      post_deployment:
        - health_check
        - user_acceptance_test
quality_gates:
  pre_deployment:
    - firmware_validation
    - device_compatibility_check
  post_deployment:
    - health_check
artifacts:
  public_keys: ["00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"]
"#;
        let (config, _) =
            cutover_core::config::DeploymentConfig::from_yaml(yaml, "deployment-config.yaml")
                .unwrap();
        let s = from_config(&config, b"k".to_vec());
        let names = |g: &[cutover_core::config::deployment::Gate]| -> Vec<String> {
            g.iter().map(|g| g.name.clone()).collect()
        };
        let staging = s.gates_for("staging");
        assert_eq!(
            names(&staging.pre_deployment),
            ["firmware_validation", "device_compatibility_check"]
        );
        assert_eq!(names(&staging.post_deployment), ["health_check"]);
        let production = s.gates_for("production");
        assert_eq!(
            names(&production.pre_deployment),
            ["firmware_validation", "device_compatibility_check"],
            "a phase the environment does not list keeps the top-level gates"
        );
        assert_eq!(
            names(&production.post_deployment),
            ["health_check", "user_acceptance_test"]
        );
        assert_eq!(s.artifact_public_keys.len(), 1);
        assert_eq!(s.artifact_public_keys[0][1], 0x11);
    }
}
