//! Quality gates: which run when, and the runners that need a process, a
//! request or a file.
//!
//! The rule:
//!
//! - `quality_gates.pre_deployment` gates are decided once, when a deployment is
//!   executed and before any target is touched. One that fails refuses the execute
//!   (409 `application/problem+json`, rule `pre_deployment_gate`, naming the gate and
//!   why) and is written to the audit log; nothing is started. Those that pass are
//!   stored with the execution (`gate_results`, phase `before`).
//! - `quality_gates.post_deployment` gates run after each wave: the execution's
//!   rollout gets `gate_after_each_wave` and its spec carries them as `gates`. One
//!   that fails stops the rollout (paused, or rolled back where the environment rolls
//!   back automatically); the orchestrator decides them in `fleet/gates.rs`.
//! - An environment's own `quality_gates` replace the top-level ones, phase by phase.
//! - A gate nobody can run automatically (`manual`, and built-in names the server has
//!   no runner for: security_scan, performance_test, functionality_test,
//!   user_acceptance_test) never passes unseen. After a wave it holds the execution,
//!   paused and never rolled back, until a person resumes it; before a deployment it
//!   refuses the execute unless the operator names it in `passed_gates`, which is
//!   recorded with who passed it.
//!
//! Runners the server has: `command` (`sh -c` on the server, passes on exit 0, within
//! the gate's timeout), `http` (GET, passes on `expected_status`, 200 by default),
//! `firmware_validation` (the artifact's blob is there, its sha256 matches, its
//! signature verifies with `artifacts.public_keys`), `device_compatibility_check`
//! (before: every target's hardware fits the artifact; after a wave: no target refused
//! it), `health_check` before a deployment (the environment's configured health checks
//! and `health_check_url`, or the one check a gate is named after, run by
//! [`crate::health_checks`]), and the wave measures of `fleet/gates.rs`.

use crate::health_checks::{CheckResult, CheckToRun};
use cutover_core::config::deployment::Gate;
use cutover_store::{ArtifactRow, TargetRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How much of a command's output a gate result keeps, from its end.
const OUTPUT_TAIL_BYTES: usize = 2048;

/// A gate as an execution's spec carries it (`spec.gates`): the `quality_gates` form of
/// the deployment configuration plus optional thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct GateDef {
    pub name: String,
    /// `builtin`, `health_check`, `command`, `http`, `manual`; builtin when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Highest share of the wave's finished targets that may have failed (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Lowest share of the wave's targets that must have succeeded (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The health checks a `health_check` gate runs, by name (the definitions stay
    /// in the configuration, they may hold passwords: [`RunContext::checks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

impl GateDef {
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("builtin")
    }

    /// The gate's time limit; ten minutes when it names none (the configuration's default).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(600_000).max(1))
    }

    /// Deciding it runs a process, a request or health checks: never on the
    /// orchestrator's loop.
    pub fn needs_io(&self) -> bool {
        matches!(self.kind(), "command" | "http") || !self.checks.is_empty()
    }

    pub fn from_config(g: &Gate) -> Self {
        GateDef {
            name: g.name.clone(),
            kind: Some(g.kind().as_str().to_string()),
            command: g.command.clone(),
            url: g.url.as_ref().map(|u| u.as_str().to_string()),
            expected_status: g.expected_status,
            timeout_ms: Some(u64::try_from(g.timeout.get().as_millis()).unwrap_or(u64::MAX)),
            ..Default::default()
        }
    }
}

/// When a gate is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Once, when the deployment is executed.
    Before,
    /// After each wave.
    After,
}

/// Why the gate waits for a person, if it does: `manual` gates, and those nothing on
/// the server can decide in this phase.
pub fn waits_for_person(g: &GateDef, phase: Phase) -> Option<String> {
    let runnable = match (g.kind(), g.name.as_str(), phase) {
        ("manual", _, _) => false,
        ("builtin", "health_check", Phase::Before) | ("health_check", _, Phase::Before) => {
            !g.checks.is_empty()
        }
        ("command" | "http", _, _) => true,
        ("builtin", "firmware_validation", Phase::Before) => true,
        ("builtin", "device_compatibility_check", _) => true,
        (
            "builtin",
            "health_check" | "error_rate" | "success_rate" | "performance_validation",
            Phase::After,
        ) => true,
        ("health_check", _, Phase::After) => true,
        _ => false,
    };
    if runnable {
        return None;
    }
    let how = match phase {
        Phase::Before => format!("execute again with \"passed_gates\": [\"{}\"]", g.name),
        Phase::After => "resume the deployment".to_string(),
    };
    let why = match (g.kind(), phase) {
        ("manual", _) => String::new(),
        ("builtin", Phase::After) if g.name == "firmware_validation" => {
            " (the server checks firmware before a deployment: list it under pre_deployment)"
                .to_string()
        }
        ("builtin", Phase::Before) if g.name == "health_check" => {
            " (the environment lists no health_checks and no health_check_url to run before a deployment)"
                .to_string()
        }
        (kind, Phase::Before) if kind == "health_check" || kind == "builtin" => {
            " (the server has no runner for it before a deployment)".to_string()
        }
        _ => " (the server has no runner for it)".to_string(),
    };
    Some(format!(
        "gate {} waits for a person{why}: {how} to pass it",
        g.name
    ))
}

/// One gate's answer, as stored in `gate_results`.
#[derive(Debug, Clone, PartialEq)]
pub struct GateOutcome {
    pub gate: String,
    pub kind: String,
    pub passed: bool,
    /// Not passed because a person must decide it.
    pub hold: bool,
    pub reason: String,
    pub measured: Value,
}

impl GateOutcome {
    pub fn new(g: &GateDef, passed: bool, reason: String, measured: Value) -> Self {
        GateOutcome {
            gate: g.name.clone(),
            kind: g.kind().to_string(),
            passed,
            hold: false,
            reason,
            measured,
        }
    }

    /// The answer of a gate that waits for a person.
    pub fn held(g: &GateDef, reason: String) -> Self {
        GateOutcome {
            hold: true,
            ..GateOutcome::new(g, false, reason, Value::Null)
        }
    }
}

/// What gates that run something are given: the deployment, which a command gate
/// is told as `CUTOVER_*` variables, and the environment's health checks.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub execution_id: Option<String>,
    pub plan_id: String,
    pub environment: String,
    pub version: String,
    /// The wave just finished (0-based), after a wave.
    pub wave: Option<u32>,
    /// The health checks `health_check` gates name (`GateDef::checks`).
    pub checks: Vec<CheckToRun>,
}

/// Decides a gate that runs something: a command, a request, health checks.
pub async fn run_io(g: &GateDef, ctx: &RunContext, http: &reqwest::Client) -> GateOutcome {
    if !g.checks.is_empty() {
        return run_health_checks(g, &ctx.checks, http).await;
    }
    match g.kind() {
        "command" => run_command(g, ctx).await,
        "http" => run_http(g, http).await,
        other => GateOutcome::new(
            g,
            false,
            format!("gate {}: {other} gates are not run here", g.name),
            Value::Null,
        ),
    }
}

/// How a shell command run by [`run_shell`] ended.
pub(crate) enum ShellRun {
    Finished {
        code: Option<i32>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        elapsed: Duration,
    },
    /// Killed, with what it started, at the timeout.
    TimedOut,
    CannotStart(String),
}

/// `sh -c COMMAND` with `env`, its output captured, within `timeout`.
pub(crate) async fn run_shell(
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> ShellRun {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ShellRun::CannotStart(e.to_string()),
    };
    // On a timeout, what the command started is stopped with it.
    let mut group = cutover_agent::process::GroupGuard::new(&child);
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => ShellRun::TimedOut,
        Ok(Err(e)) => {
            group.disarm();
            ShellRun::CannotStart(format!("cannot wait for it: {e}"))
        }
        Ok(Ok(out)) => {
            group.disarm();
            ShellRun::Finished {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
                elapsed: started.elapsed(),
            }
        }
    }
}

/// `sh -c COMMAND` on the server; passes on exit status 0 within the gate's timeout.
/// The end of its output is kept in the result.
pub async fn run_command(g: &GateDef, ctx: &RunContext) -> GateOutcome {
    let Some(command) = g.command.as_deref().filter(|c| !c.trim().is_empty()) else {
        return GateOutcome::new(
            g,
            false,
            format!("gate {}: a command gate needs command", g.name),
            Value::Null,
        );
    };
    let timeout = g.timeout();
    let phase = if ctx.wave.is_some() {
        "post_deployment"
    } else {
        "pre_deployment"
    };
    let mut env = vec![
        ("CUTOVER_GATE", g.name.clone()),
        ("CUTOVER_PLAN_ID", ctx.plan_id.clone()),
        ("CUTOVER_ENVIRONMENT", ctx.environment.clone()),
        ("CUTOVER_VERSION", ctx.version.clone()),
        ("CUTOVER_PHASE", phase.to_string()),
    ];
    if let Some(id) = &ctx.execution_id {
        env.push(("CUTOVER_EXECUTION_ID", id.clone()));
    }
    if let Some(w) = ctx.wave {
        env.push(("CUTOVER_WAVE", (w + 1).to_string()));
    }
    match run_shell(command, &env, timeout).await {
        ShellRun::TimedOut => GateOutcome::new(
            g,
            false,
            format!(
                "gate {}: command did not finish within {} s and was killed",
                g.name,
                timeout.as_secs_f64()
            ),
            json!({ "command": command, "timeout_ms": timeout.as_millis() as u64 }),
        ),
        ShellRun::CannotStart(e) => GateOutcome::new(
            g,
            false,
            format!("gate {}: cannot run sh -c: {e}", g.name),
            json!({ "command": command }),
        ),
        ShellRun::Finished {
            code,
            stdout,
            stderr,
            elapsed,
        } => {
            let measured = json!({
                "command": command,
                "exit_code": code,
                "elapsed_ms": elapsed.as_millis() as u64,
                "stdout_tail": tail(&stdout),
                "stderr_tail": tail(&stderr),
            });
            let reason = match code {
                Some(0) => format!("gate {}: command exited 0", g.name),
                Some(c) => format!("gate {}: command exited {c}", g.name),
                None => format!("gate {}: command was killed by a signal", g.name),
            };
            let last = last_line(&stderr).or_else(|| last_line(&stdout));
            let reason = match (code, last) {
                (Some(0), _) | (_, None) => reason,
                (_, Some(line)) => format!("{reason}: {line}"),
            };
            GateOutcome::new(g, code == Some(0), reason, measured)
        }
    }
}

/// The end of a command's output, at most [`OUTPUT_TAIL_BYTES`], as text.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(OUTPUT_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.trim_start_matches('\u{fffd}').to_string()
}

pub(crate) fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    Some(line.chars().take(200).collect())
}

/// GET the gate's URL within its timeout; passes on `expected_status` (200 by default).
pub async fn run_http(g: &GateDef, http: &reqwest::Client) -> GateOutcome {
    let Some(url) = g.url.as_deref() else {
        return GateOutcome::new(
            g,
            false,
            format!("gate {}: an http gate needs url", g.name),
            Value::Null,
        );
    };
    let expected = g.expected_status.unwrap_or(200);
    let started = Instant::now();
    let answer = http.get(url).timeout(g.timeout()).send().await;
    let elapsed = started.elapsed().as_millis() as u64;
    match answer {
        Err(e) => {
            let why = if e.is_timeout() {
                format!("no answer within {} s", g.timeout().as_secs_f64())
            } else {
                format!("request failed: {e}")
            };
            GateOutcome::new(
                g,
                false,
                format!("gate {}: GET {url}: {why}", g.name),
                json!({ "url": url, "expected_status": expected, "elapsed_ms": elapsed }),
            )
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let measured = json!({
                "url": url, "status": status, "expected_status": expected, "elapsed_ms": elapsed,
            });
            if status == expected {
                GateOutcome::new(
                    g,
                    true,
                    format!("gate {}: GET {url} answered {status}", g.name),
                    measured,
                )
            } else {
                GateOutcome::new(
                    g,
                    false,
                    format!(
                        "gate {}: GET {url} answered {status}, expected {expected}",
                        g.name
                    ),
                    measured,
                )
            }
        }
    }
}

/// `firmware_validation`: the artifact's blob is stored, its sha256 is the recorded one,
/// and its signature verifies with one of `keys`. With no key configured the signature
/// is not checked, and the result says so.
pub async fn firmware_validation(
    g: &GateDef,
    artifact: &ArtifactRow,
    keys: &[[u8; 32]],
) -> GateOutcome {
    let name = &g.name;
    let what = format!("{} {}", artifact.kind, artifact.version);
    let Some(path) = artifact.storage_path.clone() else {
        return GateOutcome::new(
            g,
            false,
            format!("gate {name}: {what} has no stored content on this server"),
            json!({ "artifact_id": artifact.id }),
        );
    };
    let path = std::path::PathBuf::from(path);
    let digest = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || crate::fleet::artifacts::digest_file(&path)).await
    };
    let (sha, size) = match digest {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return GateOutcome::new(
                g,
                false,
                format!("gate {name}: cannot read {what} at {}: {e}", path.display()),
                json!({ "artifact_id": artifact.id }),
            );
        }
        Err(e) => {
            return GateOutcome::new(
                g,
                false,
                format!("gate {name}: cannot hash {what}: {e}"),
                json!({ "artifact_id": artifact.id }),
            );
        }
    };
    let mut measured = json!({
        "artifact_id": artifact.id, "sha256": sha, "expected_sha256": artifact.sha256,
        "size": size, "signature_checked": false,
    });
    if !sha.eq_ignore_ascii_case(&artifact.sha256) {
        return GateOutcome::new(
            g,
            false,
            format!(
                "gate {name}: the stored content of {what} has sha256 {sha}, not {}",
                artifact.sha256
            ),
            measured,
        );
    }
    if keys.is_empty() {
        return GateOutcome::new(
            g,
            true,
            format!(
                "gate {name}: sha256 of {what} matches; signature not checked: the server has no artifacts.public_keys configured"
            ),
            measured,
        );
    }
    let verifying: Vec<ed25519_dalek::VerifyingKey> = keys
        .iter()
        .filter_map(|k| ed25519_dalek::VerifyingKey::from_bytes(k).ok())
        .collect();
    let reference = crate::fleet::artifacts::artifact_ref(artifact);
    measured["signature_checked"] = json!(true);
    match cutover_agent::device::verify::verify_signature(&reference, &verifying) {
        Ok(()) => GateOutcome::new(
            g,
            true,
            format!("gate {name}: sha256 of {what} matches and its signature verifies"),
            measured,
        ),
        Err(e) => GateOutcome::new(
            g,
            false,
            format!("gate {name}: the signature of {what} does not verify: {e}"),
            measured,
        ),
    }
}

/// `device_compatibility_check` before a deployment: every target's hardware model is
/// one the artifact is built for (an artifact that names none fits every target).
pub fn device_compatibility(
    g: &GateDef,
    artifact: &ArtifactRow,
    targets: &[TargetRow],
) -> GateOutcome {
    let name = &g.name;
    let hw = &artifact.compatible_hardware;
    if hw.is_empty() {
        return GateOutcome::new(
            g,
            true,
            format!(
                "gate {name}: {} {} names no hardware; it is offered to all {} targets",
                artifact.kind,
                artifact.version,
                targets.len()
            ),
            json!({ "targets": targets.len(), "compatible_hardware": hw }),
        );
    }
    let misfits: Vec<String> = crate::validate::hardware_misfits(targets, hw).collect();
    let measured = json!({
        "targets": targets.len(), "compatible_hardware": hw, "misfits": misfits.len(),
    });
    if misfits.is_empty() {
        GateOutcome::new(
            g,
            true,
            format!(
                "gate {name}: all {} targets run hardware {} is built for",
                targets.len(),
                artifact.version
            ),
            measured,
        )
    } else {
        let shown: Vec<&str> = misfits.iter().take(5).map(String::as_str).collect();
        GateOutcome::new(
            g,
            false,
            format!(
                "gate {name}: {} of {} targets do not fit {} (built for {}): {}",
                misfits.len(),
                targets.len(),
                artifact.version,
                hw.join(", "),
                shown.join(", ")
            ),
            measured,
        )
    }
}

/// A `health_check` gate before a deployment: runs the checks it names, at
/// once; passes when every one is healthy.
pub async fn run_health_checks(
    g: &GateDef,
    available: &[CheckToRun],
    http: &reqwest::Client,
) -> GateOutcome {
    let runs = g.checks.iter().map(|name| async move {
        match available.iter().find(|c| &c.name == name) {
            Some(c) => crate::health_checks::run(c, http).await,
            None => CheckResult {
                name: name.clone(),
                kind: "unknown".into(),
                healthy: false,
                attempts: 0,
                latency_ms: 0.0,
                detail: "no such health check in the configuration".into(),
            },
        }
    });
    let results = futures::future::join_all(runs).await;
    let sick: Vec<String> = results
        .iter()
        .filter(|r| !r.healthy)
        .map(|r| format!("{} ({}): {}", r.name, r.kind, r.detail))
        .collect();
    let measured = json!({ "checks": results });
    if sick.is_empty() {
        GateOutcome::new(
            g,
            true,
            format!(
                "gate {}: {} health check(s) healthy: {}",
                g.name,
                results.len(),
                g.checks.join(", ")
            ),
            measured,
        )
    } else {
        GateOutcome::new(
            g,
            false,
            format!(
                "gate {}: {} of {} health check(s) unhealthy: {}",
                g.name,
                sick.len(),
                results.len(),
                sick.join("; ")
            ),
            measured,
        )
    }
}

/// What the pre-deployment gates are decided over.
pub struct Before<'a> {
    pub artifact: &'a ArtifactRow,
    pub targets: &'a [TargetRow],
    pub public_keys: &'a [[u8; 32]],
    /// Gates the operator who executes says a person passed.
    pub passed_by_person: &'a [String],
    pub principal: &'a str,
}

/// Decides each pre-deployment gate, in order, all of them (so a refusal names every
/// gate that stands in the way).
pub async fn decide_before(
    gates: &[GateDef],
    before: &Before<'_>,
    ctx: &RunContext,
    http: &reqwest::Client,
) -> Vec<GateOutcome> {
    let mut out = Vec::with_capacity(gates.len());
    for g in gates {
        let outcome = if let Some(why) = waits_for_person(g, Phase::Before) {
            if before.passed_by_person.iter().any(|p| p == &g.name) {
                GateOutcome::new(
                    g,
                    true,
                    format!("gate {}: passed by {} at execute", g.name, before.principal),
                    json!({ "passed_by": before.principal }),
                )
            } else {
                GateOutcome::held(g, why)
            }
        } else if g.needs_io() {
            run_io(g, ctx, http).await
        } else if g.name == "firmware_validation" {
            firmware_validation(g, before.artifact, before.public_keys).await
        } else {
            device_compatibility(g, before.artifact, before.targets)
        };
        out.push(outcome);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(name: &str, kind: &str) -> GateDef {
        GateDef {
            name: name.into(),
            kind: Some(kind.into()),
            ..Default::default()
        }
    }

    #[test]
    fn gates_nobody_can_run_wait_for_a_person_and_say_how_to_pass_them() {
        for name in [
            "security_scan",
            "performance_test",
            "functionality_test",
            "user_acceptance_test",
        ] {
            let why = waits_for_person(&gate(name, "builtin"), Phase::After).unwrap();
            assert!(
                why.starts_with(&format!("gate {name} waits for a person")),
                "{why}"
            );
            assert!(why.ends_with("resume the deployment to pass it"), "{why}");
            let why = waits_for_person(&gate(name, "builtin"), Phase::Before).unwrap();
            assert!(
                why.contains(&format!("\"passed_gates\": [\"{name}\"]")),
                "{why}"
            );
        }
        assert_eq!(
            waits_for_person(&gate("sign_off", "manual"), Phase::After).as_deref(),
            Some("gate sign_off waits for a person: resume the deployment to pass it")
        );
        // Firmware is checked before a deployment, the wave measures after a wave.
        assert!(waits_for_person(&gate("firmware_validation", "builtin"), Phase::After).is_some());
        assert!(waits_for_person(&gate("firmware_validation", "builtin"), Phase::Before).is_none());
        assert!(waits_for_person(&gate("health_check", "builtin"), Phase::After).is_none());
        assert!(waits_for_person(&gate("health_check", "builtin"), Phase::Before).is_some());
        // Before a deployment, health_check gates wait for a person only without checks to run.
        let mut with_checks = gate("health_check", "builtin");
        with_checks.checks = vec!["api_health".into()];
        assert!(waits_for_person(&with_checks, Phase::Before).is_none());
        let mut named = gate("api_health", "health_check");
        assert!(waits_for_person(&named, Phase::Before).is_some());
        named.checks = vec!["api_health".into()];
        assert!(waits_for_person(&named, Phase::Before).is_none());
        for phase in [Phase::Before, Phase::After] {
            assert!(waits_for_person(&gate("smoke", "command"), phase).is_none());
            assert!(waits_for_person(&gate("ping", "http"), phase).is_none());
            assert!(
                waits_for_person(&gate("device_compatibility_check", "builtin"), phase).is_none()
            );
        }
    }

    #[test]
    fn a_configured_gate_keeps_its_command_url_and_timeout_in_the_spec() {
        let yaml = r#"
quality_gates:
  post_deployment:
    - health_check
    - { name: smoke, type: command, command: "exit 3", timeout: 5 }
    - { name: ping, type: http, url: "http://127.0.0.1:9/ready", expected_status: 204 }
"#;
        let (config, _) =
            cutover_core::config::DeploymentConfig::from_yaml(yaml, "deployment-config.yaml")
                .unwrap();
        let defs: Vec<GateDef> = config
            .quality_gates
            .post_deployment
            .iter()
            .map(GateDef::from_config)
            .collect();
        assert_eq!(defs[0].kind(), "builtin");
        assert_eq!(defs[1].kind(), "command");
        assert_eq!(defs[1].command.as_deref(), Some("exit 3"));
        assert_eq!(defs[1].timeout(), Duration::from_secs(5));
        assert_eq!(defs[2].url.as_deref(), Some("http://127.0.0.1:9/ready"));
        assert_eq!(defs[2].expected_status, Some(204));
        // Through the spec's JSON and back.
        let back: Vec<GateDef> =
            serde_json::from_value(serde_json::to_value(&defs).unwrap()).unwrap();
        assert_eq!(back, defs);
    }

    #[tokio::test]
    async fn a_command_gate_passes_on_exit_zero_and_keeps_the_tail_of_its_output() {
        let ctx = RunContext {
            environment: "staging".into(),
            version: "2.0.0".into(),
            wave: Some(0),
            ..Default::default()
        };
        let mut g = gate("smoke", "command");
        g.command = Some("echo checking $CUTOVER_VERSION in wave $CUTOVER_WAVE".into());
        let ok = run_command(&g, &ctx).await;
        assert!(ok.passed, "{ok:?}");
        assert_eq!(
            ok.measured["stdout_tail"], "checking 2.0.0 in wave 1\n",
            "{ok:?}"
        );
        g.command = Some("echo 'smoke: 2 checks failed' >&2; exit 3".into());
        let bad = run_command(&g, &ctx).await;
        assert!(!bad.passed);
        assert_eq!(bad.measured["exit_code"], 3);
        assert_eq!(
            bad.reason,
            "gate smoke: command exited 3: smoke: 2 checks failed"
        );
        // A command that times out is stopped with what it started.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        g.command = Some(format!("sleep 30 & echo $! > {}; wait", pid_file.display()));
        g.timeout_ms = Some(300);
        let started = Instant::now();
        let slow = run_command(&g, &ctx).await;
        assert!(!slow.passed);
        assert!(
            slow.reason.contains("did not finish within 0.3 s"),
            "{}",
            slow.reason
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        let sleeper: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while cutover_agent::process::is_running(sleeper) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !cutover_agent::process::is_running(sleeper),
            "the command's sleep {sleeper} still runs"
        );
    }

    #[tokio::test]
    async fn an_http_gate_passes_on_its_expected_status_only() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, Ordering};
        let status = Arc::new(AtomicU16::new(204));
        let answer = status.clone();
        let app = axum::Router::new().fallback(move || {
            let s = answer.load(Ordering::SeqCst);
            async move { axum::http::StatusCode::from_u16(s).unwrap() }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ready", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let mut g = gate("ready", "http");
        g.url = Some(url.clone());
        g.expected_status = Some(204);
        let ok = run_http(&g, &http).await;
        assert!(ok.passed, "{ok:?}");
        assert_eq!(ok.measured["status"], 204);
        status.store(200, Ordering::SeqCst);
        let bad = run_http(&g, &http).await;
        assert!(!bad.passed);
        assert_eq!(
            bad.reason,
            format!("gate ready: GET {url} answered 200, expected 204")
        );
        // Without expected_status, 200 passes.
        g.expected_status = None;
        assert!(run_http(&g, &http).await.passed);
        // Nobody listening: fails, saying so.
        g.url = Some("http://127.0.0.1:9/ready".into());
        g.timeout_ms = Some(2000);
        let down = run_http(&g, &http).await;
        assert!(!down.passed);
        assert!(down.reason.contains("request failed"), "{}", down.reason);
    }

    #[test]
    fn output_tails_keep_the_end() {
        let long: Vec<u8> = std::iter::repeat_n(b'a', 5000).chain(*b"END").collect();
        let t = tail(&long);
        assert_eq!(t.len(), OUTPUT_TAIL_BYTES);
        assert!(t.ends_with("END"));
    }
}
