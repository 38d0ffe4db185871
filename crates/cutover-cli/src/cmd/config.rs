//! `cutover config check FILE` and `cutover config default`.
//!
//! `check` recognises the three configuration files by name or content
//! (`deployment-config.yaml`, an application's `deploy.yml`, a host's
//! `config.yml`), applies `${VAR}` from the environment and, for the server
//! configuration, `CUTOVER_…` overrides, then prints a short summary (exit 0)
//! or the located error (exit 1). Warnings go to stderr with their location.

use super::GlobalArgs;
use crate::output::{OutputFormat, print_json};
use anyhow::Context;
use clap::Subcommand;
use cutover_core::config::{
    ConfigError, ConfigKind, DeployConfig, DeploymentConfig, HostConfig, Vars, Warning, detect,
};
use std::path::PathBuf;

/// The documented example printed by `cutover config default`.
pub const EXAMPLE: &str = include_str!("../../../../examples/deployment-config.yaml");

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a deployment-config.yaml (or deploy.yml / config.yml) and summarise it.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a documented example configuration.
    Default,
}

pub async fn run(command: ConfigCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    match command {
        ConfigCommand::Check { file } => check(&file, global.output),
        ConfigCommand::Default => {
            print!("{EXAMPLE}");
            Ok(0)
        }
    }
}

/// The `CUTOVER_…` variables of this process, for overrides.
fn cutover_overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("CUTOVER_"))
        .collect()
}

enum Checked {
    Deployment(Box<DeploymentConfig>),
    Deploy(Box<DeployConfig>),
    Host(HostConfig),
}

fn check(file: &std::path::Path, output: OutputFormat) -> anyhow::Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let kind = detect(&name, &text);
    let lookup = |var: &str| std::env::var(var).ok();
    let overrides = cutover_overrides();
    let vars = Vars::new(&lookup).with_overrides(&overrides);
    let mut warnings = Vec::new();
    let result: Result<Checked, ConfigError> = match kind {
        ConfigKind::Deployment => DeploymentConfig::parse(&text, &name, &vars, &mut warnings)
            .map(|c| Checked::Deployment(Box::new(c))),
        ConfigKind::Deploy => DeployConfig::parse(&text, &name, &vars, &mut warnings)
            .map(|c| Checked::Deploy(Box::new(c))),
        ConfigKind::Host => {
            HostConfig::parse(&text, &name, &vars, &mut warnings).map(Checked::Host)
        }
    };
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    match result {
        Ok(config) => {
            match output {
                OutputFormat::Json => print_json(&json_summary(&name, kind, &config, &warnings))?,
                OutputFormat::Text => print!("{}", text_summary(&name, &config)),
            }
            Ok(0)
        }
        Err(error) => {
            eprintln!("error: {error}");
            if output == OutputFormat::Json {
                print_json(&serde_json::json!({
                    "valid": false,
                    "file": name,
                    "kind": kind,
                    "warnings": warnings,
                    "error": {
                        "location": error.location(),
                        "path": error.path(),
                        "message": error.to_string(),
                    },
                }))?;
            }
            Ok(1)
        }
    }
}

fn json_summary(
    name: &str,
    kind: ConfigKind,
    config: &Checked,
    warnings: &[Warning],
) -> serde_json::Value {
    let summary = match config {
        Checked::Deployment(c) => serde_json::to_value(c.summary()),
        Checked::Deploy(c) => serde_json::to_value(c),
        Checked::Host(c) => serde_json::to_value(c),
    }
    .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "valid": true,
        "file": name,
        "kind": kind,
        "summary": summary,
        "warnings": warnings,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn text_summary(name: &str, config: &Checked) -> String {
    let mut out = String::new();
    match config {
        Checked::Deployment(c) => {
            let s = c.summary();
            out.push_str(&format!("{name}: valid deployment configuration\n"));
            out.push_str(&format!("environments ({}):\n", s.environments.len()));
            let width = s
                .environments
                .iter()
                .map(|e| e.key.len())
                .max()
                .unwrap_or(0);
            for e in &s.environments {
                let approval = match e.approvers {
                    0 => "none".to_string(),
                    1 => "1 approver".to_string(),
                    n => format!("{n} approvers"),
                };
                out.push_str(&format!(
                    "  {:width$}  stage {}, approval {}, auto_rollback {}, window {}, max {} concurrent, rollback timeout {}, channels {}",
                    e.key,
                    e.stage,
                    approval,
                    yes_no(e.auto_rollback),
                    e.deployment_window.as_deref().unwrap_or("any time"),
                    e.max_concurrent_deployments,
                    e.rollback_timeout,
                    list(&e.notification_channels),
                ));
                if !e.device_groups.is_empty() {
                    out.push_str(&format!(", groups {}", list(&e.device_groups)));
                }
                out.push('\n');
            }
            out.push_str(&format!(
                "health checks: {}; notification channels: {}; quality gates: {} before, {} after; alert rules: {}\n",
                s.health_checks,
                list(&s.notification_channels),
                s.pre_deployment_gates,
                s.post_deployment_gates,
                s.alert_rules
            ));
            out.push_str(&format!(
                "database: {}; server: {}; mqtt: {}\n",
                s.database, s.server_listen, s.mqtt
            ));
        }
        Checked::Deploy(c) => {
            let hc = &c.health_check;
            out.push_str(&format!(
                "{name}: valid deploy.yml for {} ({})\n",
                c.name, c.app_type
            ));
            out.push_str(&format!(
                "health check {} every {}, timeout {}, {} success(es) needed, deadline {}\n",
                hc.path, hc.interval, hc.timeout, hc.success_threshold, hc.deadline
            ));
            let mut hooks = Vec::new();
            if c.hooks.pre_deploy.is_some() {
                hooks.push("preDeploy");
            }
            if c.hooks.post_deploy.is_some() {
                hooks.push("postDeploy");
            }
            out.push_str(&format!(
                "command: {}; hooks: {}; keeps {} releases; drain {}\n",
                c.command.as_deref().unwrap_or("(default for the type)"),
                list(&hooks),
                c.keep_releases,
                c.drain_timeout
            ));
        }
        Checked::Host(c) => {
            out.push_str(&format!(
                "{name}: valid host config: port {}, manager {}, env {}\n",
                c.port, c.manager, c.env
            ));
        }
    }
    out
}
