//! Quality gates between waves (`quality_gates.post_deployment`; the rule of
//! which gates run when is in [`crate::quality_gates`]). Decided from what the
//! server measured: the wave's reports (error and success rates), the health
//! the devices reported after boot, and their compatibility refusals; and by
//! running `command` and `http` gates and gates named after a configured
//! health check, which the orchestrator does off its
//! loop ([`evaluate_with_io`]) and feeds back as the gate's result. A gate
//! nobody can run automatically (`manual`, a scan, a user acceptance test)
//! never passes unseen: it holds the execution, paused and not rolled back,
//! with the reason "gate NAME waits for a person: resume the deployment to
//! pass it", until a person resumes past it.

pub(crate) use crate::quality_gates::{GateDef, GateOutcome};
use crate::quality_gates::{Phase, RunContext, run_io, waits_for_person};
use cutover_core::engine::StateCounts;
use serde_json::json;

/// What the server measured over one wave.
#[derive(Debug, Clone, Default)]
pub(crate) struct WaveMeasure {
    pub wave: u32,
    pub size: u32,
    pub counts: StateCounts,
    /// Succeeded targets that reported healthy, and unhealthy, after boot.
    pub healthy: u32,
    pub unhealthy: u32,
    /// Targets that refused the artifact as incompatible with their hardware.
    pub incompatible: u32,
    /// The execution's error threshold as a share, for gates that give none.
    pub default_max_error_rate: f64,
}

impl WaveMeasure {
    fn failed(&self) -> u32 {
        self.counts.failed + self.counts.timed_out
    }
    fn finished(&self) -> u32 {
        self.counts.succeeded + self.failed()
    }
    fn error_rate(&self) -> f64 {
        if self.finished() == 0 {
            0.0
        } else {
            f64::from(self.failed()) / f64::from(self.finished())
        }
    }
    fn success_rate(&self) -> f64 {
        if self.size == 0 {
            1.0
        } else {
            f64::from(self.counts.succeeded) / f64::from(self.size)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub passed: bool,
    /// Not passed only because gates wait for a person: hold, never roll back.
    pub hold: bool,
    pub reason: String,
    pub results: Vec<GateOutcome>,
}

/// Whether deciding the gates runs a process or a request.
pub(crate) fn needs_io(gates: &[GateDef]) -> bool {
    gates.iter().any(GateDef::needs_io)
}

/// Decides every gate of `gates` over the wave; the verdict passes when all do.
/// `command` and `http` gates are not run here (see [`evaluate_with_io`]).
pub(crate) fn evaluate(gates: &[GateDef], m: &WaveMeasure) -> Verdict {
    verdict(gates.iter().map(|g| one(g, m)).collect(), m)
}

/// Like [`evaluate`], running `command` and `http` gates too; for a task of its own.
pub(crate) async fn evaluate_with_io(
    gates: &[GateDef],
    m: &WaveMeasure,
    ctx: &RunContext,
    http: &reqwest::Client,
) -> Verdict {
    let mut results = Vec::with_capacity(gates.len());
    for g in gates {
        let mut r = if g.needs_io() {
            run_io(g, ctx, http).await
        } else {
            one(g, m)
        };
        if r.measured.is_object() {
            r.measured["wave"] = json!(m.wave);
        }
        results.push(r);
    }
    verdict(results, m)
}

fn verdict(results: Vec<GateOutcome>, m: &WaveMeasure) -> Verdict {
    if results.is_empty() {
        return Verdict {
            passed: true,
            hold: false,
            reason: "no quality gate declared for this execution".into(),
            results,
        };
    }
    let failed: Vec<&GateOutcome> = results.iter().filter(|r| !r.passed).collect();
    let reason = if failed.is_empty() {
        format!(
            "wave {} passed {} gate(s): {}",
            m.wave + 1,
            results.len(),
            results
                .iter()
                .map(|r| r.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )
    } else {
        failed
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    Verdict {
        passed: failed.is_empty(),
        hold: !failed.is_empty() && failed.iter().all(|r| r.hold),
        reason,
        results,
    }
}

fn one(g: &GateDef, m: &WaveMeasure) -> GateOutcome {
    if let Some(why) = waits_for_person(g, Phase::After) {
        return GateOutcome::held(g, why);
    }
    let measured = json!({
        "wave": m.wave, "size": m.size, "succeeded": m.counts.succeeded, "failed": m.failed(),
        "error_rate": m.error_rate(), "success_rate": m.success_rate(),
        "healthy": m.healthy, "unhealthy": m.unhealthy, "incompatible": m.incompatible,
    });
    let out = |passed: bool, reason: String| GateOutcome::new(g, passed, reason, measured.clone());
    let rates = |name: &str| -> (bool, String) {
        let max_err = g.max_error_rate.unwrap_or(m.default_max_error_rate);
        if m.error_rate() > max_err {
            return (
                false,
                format!(
                    "gate {name}: error rate {:.2} % of wave {} is above {:.2} %",
                    m.error_rate() * 100.0,
                    m.wave + 1,
                    max_err * 100.0
                ),
            );
        }
        if let Some(min) = g.min_success_rate
            && m.success_rate() < min
        {
            return (
                false,
                format!(
                    "gate {name}: success rate {:.2} % of wave {} is below {:.2} %",
                    m.success_rate() * 100.0,
                    m.wave + 1,
                    min * 100.0
                ),
            );
        }
        (
            true,
            format!(
                "gate {name}: error rate {:.2} %, success rate {:.2} %",
                m.error_rate() * 100.0,
                m.success_rate() * 100.0
            ),
        )
    };
    match (g.kind(), g.name.as_str()) {
        ("builtin", "health_check") | ("health_check", _) => {
            if m.unhealthy > 0 {
                return out(
                    false,
                    format!(
                        "gate {}: {} of {} updated targets of wave {} reported unhealthy",
                        g.name,
                        m.unhealthy,
                        m.counts.succeeded,
                        m.wave + 1
                    ),
                );
            }
            let (ok, why) = rates(&g.name);
            if !ok {
                return out(false, why);
            }
            out(
                true,
                format!(
                    "gate {}: {} targets healthy, {} without a health report; {}",
                    g.name,
                    m.healthy,
                    m.counts.succeeded.saturating_sub(m.healthy),
                    why.trim_start_matches(&format!("gate {}: ", g.name))
                ),
            )
        }
        ("builtin", "device_compatibility_check") => {
            if m.incompatible > 0 {
                out(
                    false,
                    format!(
                        "gate {}: {} targets of wave {} refused the artifact as incompatible",
                        g.name,
                        m.incompatible,
                        m.wave + 1
                    ),
                )
            } else {
                out(
                    true,
                    format!("gate {}: no target refused the artifact", g.name),
                )
            }
        }
        ("builtin", "error_rate" | "success_rate" | "performance_validation") => {
            let (ok, why) = rates(&g.name);
            out(ok, why)
        }
        (kind, name) => out(
            false,
            format!("gate {name} ({kind}) is not decided from the wave's reports"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(name: &str, kind: Option<&str>) -> GateDef {
        GateDef {
            name: name.into(),
            kind: kind.map(str::to_string),
            ..Default::default()
        }
    }

    fn wave(succeeded: u32, failed: u32, unhealthy: u32) -> WaveMeasure {
        WaveMeasure {
            wave: 0,
            size: succeeded + failed,
            counts: StateCounts {
                succeeded,
                failed,
                ..Default::default()
            },
            healthy: succeeded - unhealthy,
            unhealthy,
            incompatible: 0,
            default_max_error_rate: 0.1,
        }
    }

    #[test]
    fn health_gate_passes_a_healthy_wave_and_fails_an_unhealthy_one() {
        let g = [gate("health_check", None)];
        assert!(evaluate(&g, &wave(10, 0, 0)).passed);
        let v = evaluate(&g, &wave(10, 0, 1));
        assert!(!v.passed);
        assert!(v.reason.contains("1 of 10"), "{}", v.reason);
    }

    #[test]
    fn error_rate_above_the_gate_threshold_fails() {
        let mut g = gate("error_rate", None);
        g.max_error_rate = Some(0.05);
        let v = evaluate(&[g.clone()], &wave(9, 1, 0));
        assert!(!v.passed, "{v:?}");
        assert!(v.reason.contains("10.00 %"), "{}", v.reason);
        g.max_error_rate = Some(0.2);
        assert!(evaluate(&[g], &wave(9, 1, 0)).passed);
    }

    #[test]
    fn a_gate_nobody_can_run_holds_for_a_person_and_is_never_passed() {
        for g in [
            gate("security_scan", None),
            gate("user_acceptance_test", None),
            gate("approve", Some("manual")),
        ] {
            let name = g.name.clone();
            let v = evaluate(&[gate("health_check", None), g], &wave(10, 0, 0));
            assert!(!v.passed);
            assert!(v.hold, "{v:?}");
            assert_eq!(
                v.reason,
                format!(
                    "gate {name} waits for a person{}: resume the deployment to pass it",
                    if name == "approve" {
                        ""
                    } else {
                        " (the server has no runner for it)"
                    }
                )
            );
        }
    }

    #[test]
    fn a_failed_gate_beside_a_held_one_is_a_failure_not_a_hold() {
        let v = evaluate(
            &[gate("health_check", None), gate("approve", Some("manual"))],
            &wave(10, 0, 2),
        );
        assert!(!v.passed);
        assert!(
            !v.hold,
            "an unhealthy wave is not waved through by a person: {v:?}"
        );
    }

    #[tokio::test]
    async fn command_gates_run_beside_the_wave_measures() {
        let mut smoke = gate("smoke", Some("command"));
        smoke.command = Some("exit 3".into());
        let gates = [gate("health_check", None), smoke];
        assert!(needs_io(&gates));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let v = evaluate_with_io(&gates, &wave(3, 0, 0), &RunContext::default(), &http).await;
        assert!(!v.passed && !v.hold, "{v:?}");
        assert_eq!(v.reason, "gate smoke: command exited 3");
        assert_eq!(v.results[1].measured["exit_code"], 3);
        assert!(v.results[0].passed);
    }

    #[test]
    fn no_gate_declared_passes_saying_so() {
        let v = evaluate(&[], &wave(1, 0, 0));
        assert!(v.passed);
        assert!(v.reason.contains("no quality gate declared"));
    }
}
