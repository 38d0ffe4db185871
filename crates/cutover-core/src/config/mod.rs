//! The configuration files cutover reads: schema, parsing with locations,
//! validation.
//!
//! Three files, each parsed from text (this crate reads no files and no
//! environment; the caller passes both in):
//!
//! - [`deployment::DeploymentConfig`]: the server's `deployment-config.yaml`
//!   (environments and their policies, health checks, notifications, gates,
//!   rollback criteria, security, logging, alerting, performance, cache,
//!   database, and cutover's own `server`, `mqtt`, `artifacts`).
//! - [`app::DeployConfig`]: an application's `deploy.yml` (git-push deploys).
//! - [`app::HostConfig`]: the host's `config.yml` beside an application's
//!   releases (port, process manager, env name).
//!
//! Every error names the file, line and column, the key path and what was
//! expected (`deployment-config.yaml:53:33:
//! environments.production.max_concurrent_deployments: expected a whole
//! number, found "lots"`). Unknown keys are [`Warning`]s with the nearest
//! known key.
//!
//! **Variables.** In any value, `${VAR}` is replaced by the variable's value
//! and `${VAR:-default}` by its value or, when it is unset or empty, the
//! default; `$$` is a literal `$`. A `${VAR}` with no value and no default is
//! an error at its line. A value that comes out empty is unset; one that
//! comes out `~` or `null` is that text, never "unset". The lookup is the
//! closure in [`Vars`].
//!
//! **Overrides** (deployment config only). A `CUTOVER_…` pair in
//! [`Vars::with_overrides`] replaces the value at a key path:
//!
//! - `CUTOVER_<SECTION>_<KEY>` sets `section.key` for a section that is a
//!   plain mapping of settings, e.g. `CUTOVER_DATABASE_CONNECTION_STRING` →
//!   `database.connection_string`, `CUTOVER_SERVER_LISTEN` → `server.listen`,
//!   `CUTOVER_MQTT_URL` → `mqtt.url`, `CUTOVER_SECURITY_JWT_SECRET` →
//!   `security.jwt_secret`, `CUTOVER_ROLLBACK_CRITERIA_MAX_FAILURE_RATE` →
//!   `rollback_criteria.max_failure_rate`.
//! - `CUTOVER_<A>__<B>__<C>` (double underscores) sets `a.b.c` at any depth,
//!   e.g. `CUTOVER_ENVIRONMENTS__PRODUCTION__APPROVAL_REQUIRED` or
//!   `CUTOVER_SECURITY__RATE_LIMITING__MAX_REQUESTS`.
//! - Names are lower-cased. A value starting with `[` or `{` is read as YAML
//!   (`CUTOVER_SECURITY_IP_WHITELIST='[10.0.0.0/8]'`); anything else is a
//!   plain scalar, typed like a value written in the file.
//! - Variables whose first part names no section (`CUTOVER_LOG`,
//!   `CUTOVER_API_KEY`, `CUTOVER_SERVER`) are not overrides and are ignored.
//!
//! Errors in an overridden value name the variable instead of a line.

pub mod app;
pub(crate) mod de;
pub mod deployment;
mod error;
pub(crate) mod tree;
pub mod values;

pub use app::{AppType, DeployConfig, HostConfig, ProcessManager};
pub use deployment::DeploymentConfig;
pub use error::{ConfigError, Location, Warning};

use serde::de::DeserializeOwned;
use tree::{Node, Value};

/// Where `${VAR}` values and `CUTOVER_…` overrides come from. The caller
/// builds it from the process environment; tests build it from a list.
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    overrides: &'a [(String, String)],
}

fn no_variable(_: &str) -> Option<String> {
    None
}

impl<'a> Vars<'a> {
    /// `${VAR}` is looked up with `lookup`; no overrides.
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Vars<'a> {
        Vars {
            lookup,
            overrides: &[],
        }
    }

    /// No variables at all: every `${VAR}` must have a default.
    pub fn none() -> Vars<'static> {
        Vars {
            lookup: &no_variable,
            overrides: &[],
        }
    }

    /// Adds `(name, value)` pairs; those named `CUTOVER_…` that map to a key
    /// path override the file (see the module documentation).
    pub fn with_overrides(mut self, overrides: &'a [(String, String)]) -> Vars<'a> {
        self.overrides = overrides;
        self
    }
}

/// Which kind of configuration a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    /// `deployment-config.yaml`: the server's configuration.
    Deployment,
    /// `deploy.yml`: an application's deploy settings.
    Deploy,
    /// `config.yml`: a host's settings for one application.
    Host,
}

/// Guesses the kind of a configuration file from its name
/// (`deploy.yml`, `config.yml`, anything else) and, when the name says
/// nothing, from its top-level keys.
pub fn detect(file_name: &str, text: &str) -> ConfigKind {
    let base = file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(file_name)
        .to_ascii_lowercase();
    match base.as_str() {
        "deploy.yml" | "deploy.yaml" => return ConfigKind::Deploy,
        "config.yml" | "config.yaml" => return ConfigKind::Host,
        "deployment-config.yaml" | "deployment-config.yml" => return ConfigKind::Deployment,
        _ => {}
    }
    let keys: Vec<String> = tree::parse(text, file_name)
        .map(|t| t.top_keys().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let has = |k: &str| keys.iter().any(|key| key == k);
    let deployment_keys = deployment::SECTIONS.iter().any(|s| has(s));
    if !deployment_keys && (has("healthCheck") || (has("name") && has("type"))) {
        ConfigKind::Deploy
    } else if !deployment_keys && (has("port") || has("manager")) {
        ConfigKind::Host
    } else {
        ConfigKind::Deployment
    }
}

/// A parsed document with the tree kept for locating later errors.
pub(crate) struct Loaded<T> {
    pub value: T,
    pub tree: Node,
}

/// Parses, interpolates, applies overrides (when `sections` names the
/// override-able sections: plain ones, then keyed maps) and deserializes.
pub(crate) fn load<T: DeserializeOwned>(
    text: &str,
    file: &str,
    vars: &Vars<'_>,
    sections: Option<(&[&str], &[&str])>,
    warnings: &mut Vec<Warning>,
) -> Result<Loaded<T>, ConfigError> {
    let mut root = tree::parse(text, file)?;
    if !matches!(root.value, Value::Map(_)) {
        return Err(ConfigError::Invalid {
            location: root.loc.clone(),
            path: "(top level)".into(),
            message: "expected a mapping of settings (key: value lines)".into(),
        });
    }
    tree::interpolate(&mut root, &mut Vec::new(), vars.lookup)?;
    if let Some((plain, keyed)) = sections {
        tree::apply_overrides(&mut root, vars.overrides, plain, keyed)?;
    }
    let ctx = de::Ctx::default();
    let result = T::deserialize(de::De {
        node: &root,
        path: Vec::new(),
        ctx: &ctx,
    });
    warnings.extend(ctx.warnings.into_inner());
    let value = result.map_err(|e| e.into_config_error(&root))?;
    Ok(Loaded { value, tree: root })
}

/// A kind of configuration file: what the one loader ([`parse`] and the
/// methods [`loader_methods!`] gives each kind) needs to know of it.
pub(crate) trait ConfigFile: DeserializeOwned {
    /// The sections `CUTOVER_…` overrides reach (plain ones, then keyed
    /// maps); `None` for files that take no overrides.
    const OVERRIDES: Option<(&'static [&'static str], &'static [&'static str])> = None;

    /// Checks what deserialization cannot (ranges, names, cross references).
    fn check(&mut self, check: &mut Check<'_>) -> Result<(), ConfigError>;
}

/// Parses, interpolates, applies the kind's overrides, deserializes and
/// checks; warnings go to `warnings`, so those found before an error are kept.
pub(crate) fn parse<T: ConfigFile>(
    text: &str,
    file: &str,
    vars: &Vars<'_>,
    warnings: &mut Vec<Warning>,
) -> Result<T, ConfigError> {
    let loaded = load::<T>(text, file, vars, T::OVERRIDES, warnings)?;
    let mut value = loaded.value;
    value.check(&mut Check::new(&loaded.tree, warnings))?;
    Ok(value)
}

/// `from_yaml`, `from_yaml_with` and `parse` as inherent methods of a
/// [`ConfigFile`] kind, so that callers need no trait in scope.
macro_rules! loader_methods {
    ($kind:ident, $file:literal) => {
        impl $kind {
            #[doc = concat!("Parses and validates a `", $file, "`; `${VAR}` needs a default.")]
            pub fn from_yaml(
                text: &str,
                file_name: &str,
            ) -> Result<($kind, Vec<Warning>), ConfigError> {
                Self::from_yaml_with(text, file_name, &Vars::none())
            }

            #[doc = concat!("Parses and validates a `", $file, "`, with `${VAR}` (and, where the file takes them, `CUTOVER_…` overrides) from `vars`.")]
            pub fn from_yaml_with(
                text: &str,
                file_name: &str,
                vars: &Vars<'_>,
            ) -> Result<($kind, Vec<Warning>), ConfigError> {
                let mut warnings = Vec::new();
                let config = Self::parse(text, file_name, vars, &mut warnings)?;
                Ok((config, warnings))
            }

            /// As [`Self::from_yaml_with`], but the warnings go to `warnings`, so
            /// that those found before an error are kept as well.
            pub fn parse(
                text: &str,
                file_name: &str,
                vars: &Vars<'_>,
                warnings: &mut Vec<Warning>,
            ) -> Result<$kind, ConfigError> {
                $crate::config::parse(text, file_name, vars, warnings)
            }
        }
    };
}
pub(crate) use loader_methods;

/// Validation after deserialization: errors and warnings located by key path.
pub(crate) struct Check<'a> {
    tree: &'a Node,
    warnings: &'a mut Vec<Warning>,
}

impl<'a> Check<'a> {
    pub(crate) fn new(tree: &'a Node, warnings: &'a mut Vec<Warning>) -> Check<'a> {
        Check { tree, warnings }
    }

    /// An error at the value named by `path` (`a.b[2].c`).
    pub(crate) fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: self.tree.locate(&tree::parse_path(path)),
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            location: self.tree.locate(&tree::parse_path(path)),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Whether the key at `path` was written (or overridden).
    pub(crate) fn present(&self, path: &str) -> bool {
        self.tree.find(&tree::parse_path(path)).is_some()
    }
}

/// The nearest of `candidates` to `word`, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    de::nearest(word, candidates.into_iter())
}
