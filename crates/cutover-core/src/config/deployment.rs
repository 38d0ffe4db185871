//! The server's `deployment-config.yaml`.

use serde::{Deserialize, Serialize};

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

/// The server's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentConfig {}
