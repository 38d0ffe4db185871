//! Quality gates between waves, decided from what the server measured: the
//! wave's reports (error and success rates), the health the devices reported
//! after boot, and their compatibility refusals. A gate the server has no
//! runner for (a command, an HTTP call, a person, a scan) fails with that
//! reason: the execution stops at the gate until a person resumes it, rather
//! than passing it unseen. Pure logic; the orchestrator feeds it.

use cutover_core::engine::StateCounts;
use serde::Deserialize;
use serde_json::{Value, json};

/// A gate as the execution's spec declares it (`spec.gates`), in the
/// `quality_gates` form of the deployment config plus optional thresholds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct GateDef {
    pub name: String,
    /// `builtin`, `health_check`, `command`, `http`, `manual`; from the name when absent.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Highest share of the wave's finished targets that may have failed (0.0 to 1.0).
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Lowest share of the wave's targets that must have succeeded (0.0 to 1.0).
    #[serde(default)]
    pub min_success_rate: Option<f64>,
}

impl GateDef {
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("builtin")
    }
}

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
pub(crate) struct GateOutcome {
    pub gate: String,
    pub kind: String,
    pub passed: bool,
    pub reason: String,
    pub measured: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub passed: bool,
    pub reason: String,
    pub results: Vec<GateOutcome>,
}

/// Decides every gate of `gates` over the wave; the verdict passes when all do.
pub(crate) fn evaluate(gates: &[GateDef], m: &WaveMeasure) -> Verdict {
    if gates.is_empty() {
        return Verdict {
            passed: true,
            reason: "no quality gate declared for this execution".into(),
            results: Vec::new(),
        };
    }
    let results: Vec<GateOutcome> = gates.iter().map(|g| one(g, m)).collect();
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
        reason,
        results,
    }
}

fn one(g: &GateDef, m: &WaveMeasure) -> GateOutcome {
    let measured = json!({
        "wave": m.wave, "size": m.size, "succeeded": m.counts.succeeded, "failed": m.failed(),
        "error_rate": m.error_rate(), "success_rate": m.success_rate(),
        "healthy": m.healthy, "unhealthy": m.unhealthy, "incompatible": m.incompatible,
    });
    let out = |passed: bool, reason: String| GateOutcome {
        gate: g.name.clone(),
        kind: g.kind().to_string(),
        passed,
        reason,
        measured: measured.clone(),
    };
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
            format!(
                "gate {name} ({kind}) cannot be evaluated by the server: it has no runner for it"
            ),
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
            max_error_rate: None,
            min_success_rate: None,
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
    fn a_gate_without_a_runner_is_reported_not_passed() {
        for g in [
            gate("security_scan", None),
            gate("smoke", Some("command")),
            gate("approve", Some("manual")),
        ] {
            let v = evaluate(&[g], &wave(10, 0, 0));
            assert!(!v.passed);
            assert!(v.reason.contains("cannot be evaluated"), "{}", v.reason);
        }
    }

    #[test]
    fn no_gate_declared_passes_saying_so() {
        let v = evaluate(&[], &wave(1, 0, 0));
        assert!(v.passed);
        assert!(v.reason.contains("no quality gate declared"));
    }
}
