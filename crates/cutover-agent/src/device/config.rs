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
fn default_bind_host() -> String {
    "127.0.0.1".into()
}
fn default_env() -> String {
    "production".into()
}
fn default_keep_warm_s() -> u64 {
    300
}
fn default_lock_timeout_s() -> u64 {
    600
}

/// What a `kind: host` agent installs: one application's releases on this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The application's name: its directory under `deployments_dir`.
    pub app: String,
    /// Where applications live (`{deployments_dir}/{app}/releases/…`), as for
    /// the git-push flow; the host daemon's socket is under it too.
    pub deployments_dir: PathBuf,
    /// The public port the built-in proxy holds for the app (written to the
    /// app's config.yml).
    pub port: u16,
    /// The address the proxy binds.
    #[serde(default = "default_bind_host")]
    pub bind_host: String,
    /// `.env.{env}` beside the releases becomes each release's `.env`.
    #[serde(default = "default_env")]
    pub env: String,
    /// How long a replaced release keeps running for an instant rollback.
    #[serde(default = "default_keep_warm_s")]
    pub keep_warm_s: u64,
    /// How long an install waits for another deploy's lock.
    #[serde(default = "default_lock_timeout_s")]
    pub lock_timeout_s: u64,
    /// Starts the host daemon when none answers, e.g. `[cutover, host, run,
    /// --deployments-dir, /opt/deployments]`; by default this agent binary's
    /// own `host-daemon`.
    #[serde(default)]
    pub daemon_command: Option<Vec<String>>,
}

/// Everything an agent needs to know; `kind` is `device` (A/B slots, the
/// default) or `host` (application releases, with the `host` section).
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
    /// Where the A/B slots, the boot pointer, downloads and state live. A host
    /// agent keeps its downloads and state here too (default
    /// `{deployments_dir}/.cutover-agent/{app}`).
    #[serde(default)]
    pub slot_dir: PathBuf,
    /// The application a `kind: host` agent installs.
    #[serde(default)]
    pub host: Option<HostSettings>,
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
        let mut cfg: AgentConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.validate(path)?;
        if let Some(host) = &cfg.host
            && cfg.slot_dir.as_os_str().is_empty()
        {
            cfg.slot_dir = host.deployments_dir.join(".cutover-agent").join(&host.app);
        }
        Ok(cfg)
    }

    /// Whether this agent installs application releases rather than firmware.
    pub fn is_host(&self) -> bool {
        self.kind == "host"
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
        match (self.kind.as_str(), &self.host) {
            ("device", None) => {
                if self.slot_dir.as_os_str().is_empty() {
                    return bad("slot_dir", "a device agent needs its slot directory".into());
                }
            }
            ("device", Some(_)) => {
                return bad(
                    "host",
                    "only a `kind: host` agent takes a host section".into(),
                );
            }
            ("host", None) => {
                return bad(
                    "host",
                    "a `kind: host` agent needs a host section (app, deployments_dir, port)".into(),
                );
            }
            ("host", Some(host)) => {
                let name_ok = !host.app.is_empty()
                    && !host.app.starts_with('.')
                    && host
                        .app
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !name_ok {
                    return bad(
                        "host.app",
                        format!(
                            "{:?} must be letters, digits, - _ . and not start with .",
                            host.app
                        ),
                    );
                }
                if host.port == 0 {
                    return bad("host.port", "must be a port number above 0".into());
                }
                if host.daemon_command.as_ref().is_some_and(Vec::is_empty) {
                    return bad("host.daemon_command", "needs at least the program".into());
                }
            }
            (other, _) => {
                return bad("kind", format!("{other:?} must be device or host"));
            }
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

    #[test]
    fn the_example_host_agent_config_loads() {
        let text = include_str!("../../../../examples/host-agent.yaml");
        let cfg = AgentConfig::parse(text, Path::new("host-agent.yaml")).unwrap();
        assert!(cfg.is_host());
        assert_eq!(cfg.host.as_ref().unwrap().port, 8080);
    }

    #[test]
    fn a_host_agent_needs_its_host_section_and_gets_a_state_dir() {
        let base = format!(
            "target_id: web-1\nenvironment: staging\nhardware_model: vm\ncredential: 0123456789abcdef0123\n\
             mqtt_url: mqtt://127.0.0.1:1883\npublic_keys: [\"{KEY}\"]\nkind: host\n"
        );
        let err = AgentConfig::parse(&base, Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.yaml: host:"), "{err}");
        let text = format!("{base}host:\n  app: web\n  deployments_dir: /srv/d\n  port: 8080\n");
        let cfg = AgentConfig::parse(&text, Path::new("a.yaml")).unwrap();
        assert!(cfg.is_host());
        let host = cfg.host.as_ref().unwrap();
        assert_eq!(host.bind_host, "127.0.0.1");
        assert_eq!(host.keep_warm_s, 300);
        assert_eq!(cfg.slot_dir, Path::new("/srv/d/.cutover-agent/web"));
        let err = AgentConfig::parse(&text.replace("app: web", "app: ../x"), Path::new("a.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("host.app"), "{err}");
        // A device agent still needs its slots.
        let err = AgentConfig::parse(
            &base.replace("kind: host", "kind: device"),
            Path::new("a.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("slot_dir"), "{err}");
        let err = AgentConfig::parse(
            &base.replace("kind: host", "kind: toaster"),
            Path::new("a.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kind"), "{err}");
    }
}
