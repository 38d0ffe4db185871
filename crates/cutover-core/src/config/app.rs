//! An application's `deploy.yml` (committed with its code) and a host's
//! `config.yml` (kept beside the releases, never in git), as seed 001's
//! git-push deploys define them.
//!
//! ```yaml
//! # deploy.yml
//! name: my-app
//! type: python            # python | node | docker | static | custom
//! healthCheck: /health    # or a mapping: {path, interval, timeout, successThreshold, deadline}
//! command: python -m uvicorn main:app
//! hooks:
//!   preDeploy: ./scripts/migrate.sh
//!   postDeploy: ./scripts/notify.sh
//! ```
//!
//! ```yaml
//! # config.yml
//! port: 8000
//! manager: systemd        # builtin | systemd | pm2
//! env: production         # copies .env.production into the release
//! ```

use super::values::{Duration, name_enum};
use super::{Check, ConfigError, ConfigFile, Vars, Warning, loader_methods};
use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

name_enum! {
    /// How an application is built and started.
    pub enum AppType {
        /// venv + `pip install -r requirements.txt`.
        Python = "python",
        /// `npm ci` (or `npm install` without a lock file).
        Node = "node" | "nodejs",
        /// `docker build`, then `docker run` with the port mapped.
        Docker = "docker",
        /// Files served as they are by the built-in proxy.
        Static = "static",
        /// The `install` and `command` given in deploy.yml.
        Custom = "custom",
    }
}

name_enum! {
    /// Which process manager keeps the application running on the host.
    pub enum ProcessManager {
        /// cutover's own supervisor (the default).
        Builtin = "builtin" | "built_in",
        Systemd = "systemd",
        Pm2 = "pm2",
    }
}

/// The health check of a release, with Kamal's defaults: probe every second,
/// 5 s per probe, healthy after one success, give up after 30 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// Path requested on the release's port, e.g. `/health`.
    pub path: String,
    #[serde(default = "HealthCheckSpec::default_interval")]
    pub interval: Duration,
    #[serde(default = "HealthCheckSpec::default_timeout")]
    pub timeout: Duration,
    /// Consecutive successful probes needed.
    #[serde(default = "HealthCheckSpec::default_success_threshold")]
    pub success_threshold: u32,
    /// The release is failed if it is not healthy within this time.
    #[serde(default = "HealthCheckSpec::default_deadline")]
    pub deadline: Duration,
}

impl HealthCheckSpec {
    const FIELDS: &'static [&'static str] = &[
        "path",
        "interval",
        "timeout",
        "successThreshold",
        "deadline",
    ];

    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_success_threshold() -> u32 {
        1
    }
    fn default_deadline() -> Duration {
        Duration::from_secs(30)
    }

    /// A check of `path` with the default tuning.
    pub fn with_path(path: impl Into<String>) -> HealthCheckSpec {
        HealthCheckSpec {
            path: path.into(),
            interval: Self::default_interval(),
            timeout: Self::default_timeout(),
            success_threshold: Self::default_success_threshold(),
            deadline: Self::default_deadline(),
        }
    }
}

/// `healthCheck: /health` or `healthCheck: {path: /health, interval: 2s, …}`.
fn health_check_spec<'de, D: Deserializer<'de>>(d: D) -> Result<HealthCheckSpec, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Full {
        path: String,
        #[serde(default = "HealthCheckSpec::default_interval")]
        interval: Duration,
        #[serde(default = "HealthCheckSpec::default_timeout")]
        timeout: Duration,
        #[serde(default = "HealthCheckSpec::default_success_threshold")]
        success_threshold: u32,
        #[serde(default = "HealthCheckSpec::default_deadline")]
        deadline: Duration,
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = HealthCheckSpec;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a path such as /health, or a mapping with path, interval, timeout, successThreshold, deadline")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<HealthCheckSpec, E> {
            Ok(HealthCheckSpec::with_path(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HealthCheckSpec, A::Error> {
            let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(HealthCheckSpec {
                path: f.path,
                interval: f.interval,
                timeout: f.timeout,
                success_threshold: f.success_threshold,
                deadline: f.deadline,
            })
        }
    }
    d.deserialize_struct("HealthCheckSpec", HealthCheckSpec::FIELDS, V)
}

/// Commands run in the new release directory around the switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    /// Before the new release starts (migrations); failure aborts the deploy.
    #[serde(default)]
    pub pre_deploy: Option<String>,
    /// After the switch to a healthy release (notifications).
    #[serde(default)]
    pub post_deploy: Option<String>,
}

/// Files and directories kept in `{base}/{app}/shared/` and linked into every
/// release (`.env`, uploads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub dirs: Vec<String>,
}

/// How a `type: docker` application is built and run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerSettings {
    /// Dockerfile, relative to `context`.
    #[serde(default = "DockerSettings::default_dockerfile")]
    pub dockerfile: String,
    /// Build context, relative to the release directory.
    #[serde(default = "DockerSettings::default_context")]
    pub context: String,
    #[serde(default)]
    pub build_args: IndexMap<String, String>,
    /// Run this image instead of building one.
    #[serde(default)]
    pub image: Option<String>,
    /// The port the application listens on inside the container; the host
    /// port is mapped to it.
    #[serde(default = "DockerSettings::default_container_port")]
    pub container_port: u16,
    /// Extra `docker run` arguments (volumes, capabilities).
    #[serde(default)]
    pub run_args: Vec<String>,
}

impl DockerSettings {
    fn default_dockerfile() -> String {
        "Dockerfile".into()
    }
    fn default_context() -> String {
        ".".into()
    }
    fn default_container_port() -> u16 {
        8000
    }
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            dockerfile: Self::default_dockerfile(),
            context: Self::default_context(),
            build_args: IndexMap::new(),
            image: None,
            container_port: Self::default_container_port(),
            run_args: Vec::new(),
        }
    }
}

/// An application's `deploy.yml`. Keys are camelCase as in the seed
/// (`healthCheck`, `preDeploy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployConfig {
    /// The application's name: letters, digits, `.`, `_`, `-`; it names
    /// directories and services.
    pub name: String,
    #[serde(rename = "type")]
    pub app_type: AppType,
    #[serde(deserialize_with = "health_check_spec")]
    pub health_check: HealthCheckSpec,
    /// Start command; replaces the type's default (required for `custom`).
    /// `$PORT` in it is the port the release must listen on.
    #[serde(default)]
    pub command: Option<String>,
    /// Install command; replaces the type's default (pip, npm ci, docker build).
    #[serde(default)]
    pub install: Option<String>,
    #[serde(default)]
    pub hooks: Hooks,
    /// Releases kept on disk, the current one included (default 5).
    #[serde(default = "DeployConfig::default_keep_releases")]
    pub keep_releases: u32,
    /// How long the old release may finish its requests after the switch (default 30 s).
    #[serde(default = "DeployConfig::default_drain_timeout")]
    pub drain_timeout: Duration,
    #[serde(default)]
    pub shared: Shared,
    #[serde(default)]
    pub docker: Option<DockerSettings>,
}

loader_methods!(DeployConfig, "deploy.yml");

impl ConfigFile for DeployConfig {
    fn check(&mut self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        self.validate(check)
    }
}

impl DeployConfig {
    fn default_keep_releases() -> u32 {
        5
    }
    fn default_drain_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// The docker settings, defaults when the file gives none.
    pub fn docker_settings(&self) -> DockerSettings {
        self.docker.clone().unwrap_or_default()
    }

    fn validate(&self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        validate_name(check, "name", &self.name)?;
        let hc = &self.health_check;
        let hc_path = if check.present("healthCheck.path") {
            "healthCheck.path"
        } else {
            "healthCheck"
        };
        if !hc.path.starts_with('/') || hc.path.contains(char::is_whitespace) {
            return Err(check.error(
                hc_path,
                format!(
                    "expected a path starting with / such as /health, found \"{}\"",
                    hc.path
                ),
            ));
        }
        if hc.interval.is_zero() {
            return Err(check.error("healthCheck.interval", "expected a duration above zero"));
        }
        if hc.timeout.is_zero() {
            return Err(check.error("healthCheck.timeout", "expected a duration above zero"));
        }
        if hc.success_threshold == 0 {
            return Err(check.error(
                "healthCheck.successThreshold",
                "expected a whole number of at least 1, found 0",
            ));
        }
        if hc.deadline < hc.interval {
            return Err(check.error(
                "healthCheck.deadline",
                format!(
                    "expected a deadline no shorter than the interval ({}), found {}",
                    hc.interval, hc.deadline
                ),
            ));
        }
        if self.keep_releases == 0 {
            return Err(check.error(
                "keepReleases",
                "expected a whole number of at least 1 (the current release is kept), found 0",
            ));
        }
        for (key, value) in [
            ("command", &self.command),
            ("install", &self.install),
            ("hooks.preDeploy", &self.hooks.pre_deploy),
            ("hooks.postDeploy", &self.hooks.post_deploy),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(check.error(key, "expected a command, found an empty string"));
            }
        }
        match self.app_type {
            AppType::Custom if self.command.is_none() => {
                return Err(check.error(
                    "command",
                    "a custom application needs a start command (command: ./run --port $PORT)",
                ));
            }
            AppType::Static if self.command.is_some() => {
                check.warn(
                    "command",
                    "ignored: static files are served by cutover itself",
                );
            }
            _ => {}
        }
        if self.docker.is_some() && self.app_type != AppType::Docker {
            check.warn(
                "docker",
                format!(
                    "ignored: the application type is {}, not docker",
                    self.app_type
                ),
            );
        }
        for (kind, list) in [("files", &self.shared.files), ("dirs", &self.shared.dirs)] {
            for (i, entry) in list.iter().enumerate() {
                let bad = entry.is_empty()
                    || entry.starts_with('/')
                    || entry.split(['/', '\\']).any(|part| part == "..");
                if bad {
                    return Err(check.error(
                        &format!("shared.{kind}[{i}]"),
                        format!(
                            "expected a path inside the release (relative, without ..), found \"{entry}\""
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Names become directory and service names: keep them to a safe alphabet.
fn validate_name(check: &Check<'_>, path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(check.error(
            path,
            format!(
                "expected a name of letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit), found \"{name}\""
            ),
        ))
    }
}

/// A host's `config.yml` for one application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// The public port the application is reached on.
    pub port: u16,
    #[serde(default = "HostConfig::default_manager")]
    pub manager: ProcessManager,
    /// Environment name: `.env.{env}` in the application's base directory is
    /// copied into each release as `.env` (default `production`).
    #[serde(default = "HostConfig::default_env")]
    pub env: String,
}

loader_methods!(HostConfig, "config.yml");

impl ConfigFile for HostConfig {
    fn check(&mut self, check: &mut Check<'_>) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(check.error("port", "expected a port from 1 to 65535, found 0"));
        }
        validate_name(check, "env", &self.env)
    }
}

impl HostConfig {
    fn default_manager() -> ProcessManager {
        ProcessManager::Builtin
    }
    fn default_env() -> String {
        "production".into()
    }

    /// The text of a `config.yml` with these values, as `cutover setup` writes it.
    pub fn to_yaml(&self) -> String {
        format!(
            "# Host settings for this application (not in git).\nport: {}\nmanager: {}  # builtin, systemd or pm2\nenv: {}  # .env.{} is copied into each release\n",
            self.port, self.manager, self.env, self.env
        )
    }
}
