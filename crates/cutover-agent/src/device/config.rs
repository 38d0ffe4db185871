//! The agent's configuration file (YAML): who the target is, how it reaches the
//! server, where its slots live, which keys it trusts, how it installs.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {why}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        why: String,
    },
}

fn default_max_boot_tries() -> u32 {
    3
}
fn default_poll_interval_ms() -> u64 {
    2000
}
fn default_resend_ms() -> u64 {
    2000
}
fn default_heartbeat_s() -> u64 {
    30
}
fn default_kind() -> String {
    "device".into()
}

/// Everything a device agent needs to know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub target_id: String,
    pub environment: String,
    pub hardware_model: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    /// This target's own secret; messages carry a MAC made with a key derived from it.
    pub credential: String,
    /// `mqtt://host:port` or `mqtts://host:port`; when absent the agent polls `server_url`.
    #[serde(default)]
    pub mqtt_url: Option<String>,
    #[serde(default)]
    pub mqtt_username: Option<String>,
    #[serde(default)]
    pub mqtt_password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts); the
    /// system roots otherwise.
    #[serde(default)]
    pub mqtt_ca_file: Option<PathBuf>,
    /// The control plane, for artifact downloads with relative URLs and for HTTP polling.
    #[serde(default)]
    pub server_url: Option<String>,
    /// Where the A/B slots, the boot pointer, downloads and state live.
    pub slot_dir: PathBuf,
    /// Hex ed25519 public keys; an artifact must be signed by one of them.
    pub public_keys: Vec<String>,
    /// The version in slot A on first start.
    #[serde(default)]
    pub factory_version: Option<String>,
    /// Installs a verified file instead of the built-in slot writer, e.g.
    /// `rauc install {file}` or `swupdate -i {file}`.
    #[serde(default)]
    pub installer_command: Option<String>,
    /// Reboots the device after an install; without it the agent boots the
    /// new slot in process (slot files, tests, simulation).
    #[serde(default)]
    pub reboot_command: Option<String>,
    /// Run after boot to confirm health; exit 0 means healthy. Without it the
    /// booted slot's content is checked against its recorded sha256.
    #[serde(default)]
    pub health_command: Option<String>,
    /// Unconfirmed boots of a new slot before falling back to the old one.
    #[serde(default = "default_max_boot_tries")]
    pub max_boot_tries: u32,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long to wait for an acknowledgement before sending a report again.
    #[serde(default = "default_resend_ms")]
    pub resend_ms: u64,
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// Caps the slot write rate (bytes per second), like slow flash.
    #[serde(default)]
    pub slot_write_bytes_per_s: Option<u64>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                why,
            })
        };
        if !cutover_core::protocol::valid_target_id(&self.target_id) {
            return bad(
                "target_id",
                format!(
                    "{:?} must be 1-128 of letters, digits, - _ . :",
                    self.target_id
                ),
            );
        }
        if self.credential.len() < 16 {
            return bad("credential", "must be at least 16 characters".into());
        }
        if self.mqtt_url.is_none() && self.server_url.is_none() {
            return bad(
                "mqtt_url",
                "give mqtt_url or server_url (HTTP polling)".into(),
            );
        }
        if let Some(u) = &self.mqtt_url
            && !(u.starts_with("mqtt://") || u.starts_with("mqtts://") || u.starts_with("tcp://"))
        {
            return bad(
                "mqtt_url",
                format!("{u:?} must start with mqtt:// or mqtts://"),
            );
        }
        if self.public_keys.is_empty() {
            return bad(
                "public_keys",
                "at least one ed25519 public key is needed".into(),
            );
        }
        for (i, k) in self.public_keys.iter().enumerate() {
            if super::verify::parse_public_key(k).is_err() {
                return bad(
                    "public_keys",
                    format!(
                        "entry {} is not a hex ed25519 public key (64 hex digits)",
                        i + 1
                    ),
                );
            }
        }
        if self.max_boot_tries == 0 {
            return bad("max_boot_tries", "must be at least 1".into());
        }
        if let Some(cmd) = &self.installer_command
            && !cmd.contains("{file}")
        {
            return bad(
                "installer_command",
                format!("{cmd:?} must contain {{file}}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn a_minimal_file_loads_with_defaults() {
        let text = format!(
            "target_id: dev-1\nenvironment: staging\nhardware_model: rpi4\ncredential: 0123456789abcdef0123\n\
             mqtt_url: mqtt://127.0.0.1:1883\nslot_dir: /tmp/x\npublic_keys: [\"{KEY}\"]\n"
        );
        let cfg = AgentConfig::parse(&text, Path::new("agent.yaml")).unwrap();
        assert_eq!(cfg.max_boot_tries, 3);
        assert_eq!(cfg.kind, "device");
    }

    #[test]
    fn bad_fields_are_named() {
        let text = "target_id: dev-1\nenvironment: s\nhardware_model: m\ncredential: short\n\
                    mqtt_url: mqtt://x\nslot_dir: /tmp/x\npublic_keys: [\"zz\"]\n";
        let err = AgentConfig::parse(text, Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.yaml: credential"), "{err}");
        let text = text.replace("credential: short", "credential: 0123456789abcdef0123");
        let err = AgentConfig::parse(&text, Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("public_keys: entry 1"), "{err}");
        let err = AgentConfig::parse("target_id: [", Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("a.yaml:"), "{err}");
    }
}
