//! Server ↔ agent messages: MQTT topics and versioned JSON payloads. Pure data.
//!
//! Both directions are made reliable at the application level, because a
//! broker may drop QoS 1 messages for a subscriber that falls behind: the
//! server re-sends a [`Command`] until the agent answers with an
//! [`AgentMessage::Ack`], and the agent re-sends a [`StatusReport`] until the
//! server answers with a [`ServerMessage::Ack`]. Each side handles repeats
//! idempotently by [`MessageKey`] (execution, action, sequence).
//!
//! The same messages travel over HTTP polling (`/api/agent/v1/...`) for agents
//! that cannot use MQTT.
//!
//! Every agent message carries its target id and a MAC (HMAC-SHA256 with a key
//! derived from the target's own credential) over its `mac_input()`, so that a
//! target can only write its own status even through a broker without
//! per-topic access control. This crate only says which bytes are covered;
//! the MAC itself is computed by `cutover_agent::device::mac`, shared by the
//! agent and the server.

use serde::{Deserialize, Serialize};

/// The payload format version; a message with another major version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every topic starts with this.
pub const TOPIC_PREFIX: &str = "cutover/v1/targets/";

/// The four topics of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Agent → server: inventory on connect.
    Hello,
    /// Server → agent: commands and acknowledgements of status reports.
    Commands,
    /// Agent → server: action progress, health, acknowledgements of commands.
    Status,
    /// Agent → server: liveness.
    Heartbeat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Hello => "hello",
            Channel::Commands => "commands",
            Channel::Status => "status",
            Channel::Heartbeat => "heartbeat",
        }
    }
}

/// `cutover/v1/targets/{id}/{channel}`.
pub fn topic(target_id: &str, channel: Channel) -> String {
    format!("{TOPIC_PREFIX}{target_id}/{}", channel.as_str())
}

/// The subscription filter that matches one channel of every target.
pub fn topic_filter_all(channel: Channel) -> String {
    format!("{TOPIC_PREFIX}+/{}", channel.as_str())
}

/// Splits a topic into its target id and channel; `None` for foreign topics.
pub fn parse_topic(topic: &str) -> Option<(&str, Channel)> {
    let rest = topic.strip_prefix(TOPIC_PREFIX)?;
    let (target, channel) = rest.rsplit_once('/')?;
    if !valid_target_id(target) {
        return None;
    }
    let channel = match channel {
        "hello" => Channel::Hello,
        "commands" => Channel::Commands,
        "status" => Channel::Status,
        "heartbeat" => Channel::Heartbeat,
        _ => return None,
    };
    Some((target, channel))
}

/// A target id must be one topic level with no wildcards: letters, digits,
/// `-`, `_`, `.`, `:`, 1 to 128 characters.
pub fn valid_target_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What makes a command or a report unique: repeats with the same key are
/// the same message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageKey {
    pub execution: String,
    /// The action id (one target in one execution).
    pub action: String,
    /// Commands: the engine's attempt number. Reports: `attempt * 16 + stage
    /// ordinal`, see [`StatusReport::key`].
    pub sequence: u32,
}

/// Where an artifact is and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub id: String,
    pub version: String,
    /// Hex sha256 of the payload.
    pub sha256: String,
    pub size: u64,
    /// Hex ed25519 signature over [`signed_manifest`].
    pub signature: String,
    /// Which key signed it (hex of the public key's first 8 bytes), a hint.
    #[serde(default)]
    pub key_id: String,
    /// Absolute URL, or a path relative to the agent's server URL.
    pub url: String,
    #[serde(default)]
    pub hardware: Vec<String>,
}

/// The bytes an artifact's signature covers: its digest bound to its version,
/// so a validly signed image cannot be relabelled as another version.
pub fn signed_manifest(sha256_hex: &str, version: &str) -> Vec<u8> {
    format!(
        "cutover-artifact-v1\nsha256={}\nversion={version}\n",
        sha256_hex.to_ascii_lowercase()
    )
    .into_bytes()
}

/// A server → agent instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub v: u32,
    pub execution: String,
    pub action: String,
    /// The engine's attempt; a later attempt supersedes an earlier one.
    pub attempt: u32,
    pub kind: CommandKind,
    /// Hex HMAC-SHA256 of [`Command::mac_input`] with the target's key: an
    /// agent runs only commands made with its own credential, so whoever
    /// can publish on the broker cannot command a device.
    #[serde(default)]
    pub mac: String,
}

impl Command {
    /// The bytes the MAC covers: the target, the key and everything the kind carries.
    pub fn mac_input(&self, target: &str) -> String {
        let kind = match &self.kind {
            CommandKind::Install {
                artifact: a,
                stage_only,
            } => format!(
                "install|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
                a.id,
                a.version,
                a.sha256,
                a.size,
                a.signature,
                a.key_id,
                a.url,
                a.hardware.join(","),
                a.hardware.len(),
                stage_only
            ),
            CommandKind::Activate => "activate".into(),
            CommandKind::Rollback { previous_version } => format!(
                "rollback|{}",
                previous_version
                    .as_deref()
                    .map_or("-".to_string(), |v| format!("={v}"))
            ),
            CommandKind::Cancel => "cancel".into(),
        };
        format!(
            "command|{}|{target}|{}|{}|{}|{kind}",
            self.v, self.execution, self.action, self.attempt
        )
    }

    pub fn key(&self) -> MessageKey {
        MessageKey {
            execution: self.execution.clone(),
            action: self.action.clone(),
            sequence: self.attempt,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandKind {
    /// Download, verify, install and activate (or, staged, install only).
    Install {
        artifact: ArtifactRef,
        #[serde(default)]
        stage_only: bool,
    },
    /// Blue-green: boot the staged slot now.
    Activate,
    /// Go back to the version that ran before this execution.
    Rollback {
        #[serde(default)]
        previous_version: Option<String>,
    },
    /// Stop the action in progress.
    Cancel,
}

impl CommandKind {
    pub fn name(&self) -> &'static str {
        match self {
            CommandKind::Install { .. } => "install",
            CommandKind::Activate => "activate",
            CommandKind::Rollback { .. } => "rollback",
            CommandKind::Cancel => "cancel",
        }
    }
}

/// Everything the server sends on `.../commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum ServerMessage {
    Command(Command),
    /// The server stored the report with this key; stop re-sending it.
    Ack {
        v: u32,
        key: MessageKey,
    },
    /// The server refused a report (bad MAC, unknown action); stop re-sending.
    Nack {
        v: u32,
        key: MessageKey,
        reason: String,
    },
    /// The server read the inventory.
    HelloAck {
        v: u32,
    },
}

/// A stage of an action as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Received,
    Downloading,
    Verifying,
    Installing,
    Rebooting,
    Succeeded,
    Failed,
    RolledBack,
    Canceled,
}

impl Stage {
    /// Position in the report sequence of one attempt.
    pub fn ordinal(self) -> u32 {
        match self {
            Stage::Received => 0,
            Stage::Downloading => 1,
            Stage::Verifying => 2,
            Stage::Installing => 3,
            Stage::Rebooting => 4,
            Stage::Succeeded => 5,
            Stage::Failed => 6,
            Stage::RolledBack => 7,
            Stage::Canceled => 8,
        }
    }

    /// Whether the attempt is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Stage::Succeeded | Stage::Failed | Stage::RolledBack | Stage::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Received => "received",
            Stage::Downloading => "downloading",
            Stage::Verifying => "verifying",
            Stage::Installing => "installing",
            Stage::Rebooting => "rebooting",
            Stage::Succeeded => "succeeded",
            Stage::Failed => "failed",
            Stage::RolledBack => "rolled_back",
            Stage::Canceled => "canceled",
        }
    }
}

/// Which step failed, so the server and the simulator can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedStep {
    Download,
    Verify,
    Install,
    Health,
    Incompatible,
}

/// Health measured after boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    #[serde(default)]
    pub detail: String,
}

/// Progress of one action, agent → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub v: u32,
    pub target: String,
    pub execution: String,
    pub action: String,
    pub attempt: u32,
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<FailedStep>,
    /// Why it failed, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The version the target actually runs now.
    pub running_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Milliseconds since the command was received (boot time on success).
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Hex HMAC-SHA256 of [`StatusReport::mac_input`] with the target's key.
    #[serde(default)]
    pub mac: String,
}

impl StatusReport {
    pub fn key(&self) -> MessageKey {
        MessageKey {
            execution: self.execution.clone(),
            action: self.action.clone(),
            sequence: self
                .attempt
                .saturating_mul(16)
                .saturating_add(self.stage.ordinal()),
        }
    }

    /// The fields the MAC covers.
    pub fn mac_input(&self) -> String {
        format!(
            "status|{}|{}|{}|{}|{}|{}|{}",
            self.v,
            self.target,
            self.execution,
            self.action,
            self.attempt,
            self.stage.as_str(),
            self.running_version
        )
    }
}

/// The agent's inventory, sent on every connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub v: u32,
    pub target: String,
    /// `device` or `host`.
    pub kind: String,
    pub environment: String,
    pub hardware_model: String,
    /// The version actually running (after a fallback, the old one).
    pub running_version: String,
    pub slots: Vec<SlotInfo>,
    pub agent_version: String,
    #[serde(default)]
    pub mac: String,
}

impl Hello {
    pub fn mac_input(&self) -> String {
        format!(
            "hello|{}|{}|{}|{}|{}",
            self.v, self.target, self.environment, self.hardware_model, self.running_version
        )
    }
}

/// One A/B slot as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    pub active: bool,
    #[serde(default)]
    pub pending: bool,
}

/// Everything an agent sends, on `.../status` (and `.../hello`, `.../heartbeat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum AgentMessage {
    Hello(Hello),
    Status(StatusReport),
    /// The agent has the command with this key; stop re-sending it.
    Ack {
        v: u32,
        target: String,
        key: MessageKey,
        #[serde(default)]
        mac: String,
    },
    Heartbeat {
        v: u32,
        target: String,
        running_version: String,
    },
    /// The agent refused a command (its MAC does not verify): nothing ran.
    Refused {
        v: u32,
        target: String,
        key: MessageKey,
        reason: String,
        #[serde(default)]
        mac: String,
    },
}

impl AgentMessage {
    /// The target the message claims to come from.
    pub fn target(&self) -> &str {
        match self {
            AgentMessage::Hello(h) => &h.target,
            AgentMessage::Status(s) => &s.target,
            AgentMessage::Ack { target, .. }
            | AgentMessage::Heartbeat { target, .. }
            | AgentMessage::Refused { target, .. } => target,
        }
    }

    pub fn version(&self) -> u32 {
        match self {
            AgentMessage::Hello(h) => h.v,
            AgentMessage::Status(s) => s.v,
            AgentMessage::Ack { v, .. }
            | AgentMessage::Heartbeat { v, .. }
            | AgentMessage::Refused { v, .. } => *v,
        }
    }

    /// The bytes its MAC covers; heartbeats change no state and have none.
    pub fn mac_input(&self) -> Option<String> {
        match self {
            AgentMessage::Hello(h) => Some(h.mac_input()),
            AgentMessage::Status(s) => Some(s.mac_input()),
            AgentMessage::Ack { target, key, .. } => Some(ack_mac_input(target, key)),
            AgentMessage::Heartbeat { .. } => None,
            AgentMessage::Refused {
                target,
                key,
                reason,
                ..
            } => Some(format!(
                "refused|{target}|{}|{}|{}|{reason}",
                key.execution, key.action, key.sequence
            )),
        }
    }

    /// The MAC the message carries (empty for heartbeats).
    pub fn mac(&self) -> &str {
        match self {
            AgentMessage::Hello(h) => &h.mac,
            AgentMessage::Status(s) => &s.mac,
            AgentMessage::Ack { mac, .. } | AgentMessage::Refused { mac, .. } => mac,
            AgentMessage::Heartbeat { .. } => "",
        }
    }
}

/// The bytes the MAC of a command acknowledgement covers.
pub fn ack_mac_input(target: &str, key: &MessageKey) -> String {
    format!(
        "ack|{target}|{}|{}|{}",
        key.execution, key.action, key.sequence
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let t = topic("dev-1", Channel::Status);
        assert_eq!(t, "cutover/v1/targets/dev-1/status");
        assert_eq!(parse_topic(&t), Some(("dev-1", Channel::Status)));
        assert_eq!(parse_topic("cutover/v1/targets/a/b/status"), None);
        assert_eq!(parse_topic("cutover/v1/targets/+/status"), None);
        assert_eq!(parse_topic("other/dev/status"), None);
        assert_eq!(
            topic_filter_all(Channel::Hello),
            "cutover/v1/targets/+/hello"
        );
    }

    fn report() -> StatusReport {
        StatusReport {
            v: PROTOCOL_VERSION,
            target: "dev-1".into(),
            execution: "exec_1".into(),
            action: "act_1".into(),
            attempt: 2,
            stage: Stage::Succeeded,
            failed_step: None,
            reason: String::new(),
            running_version: "1.2.0".into(),
            health: Some(Health {
                healthy: true,
                detail: String::new(),
            }),
            elapsed_ms: 10,
            mac: String::new(),
        }
    }

    #[test]
    fn mac_input_covers_the_claimed_target() {
        let r = report();
        let mut forged = r.clone();
        forged.target = "dev-2".into();
        assert_ne!(r.mac_input(), forged.mac_input());
        let msg = AgentMessage::Status(r.clone());
        let json = serde_json::to_string(&msg).unwrap();
        let back: AgentMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.target(), "dev-1");
        assert_eq!(back.mac_input(), Some(r.mac_input()));
    }

    #[test]
    fn report_keys_differ_by_stage_and_attempt() {
        let a = report();
        let mut b = report();
        b.stage = Stage::Failed;
        let mut c = report();
        c.attempt = 3;
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_eq!(a.key(), report().key());
    }

    #[test]
    fn command_json_is_stable() {
        let c = ServerMessage::Command(Command {
            v: 1,
            execution: "e".into(),
            action: "a".into(),
            attempt: 1,
            kind: CommandKind::Rollback {
                previous_version: Some("1.0".into()),
            },
            mac: String::new(),
        });
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["msg"], "command");
        assert_eq!(json["kind"]["type"], "rollback");
        let back: ServerMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn command_mac_input_covers_target_and_kind() {
        let c = Command {
            v: 1,
            execution: "e".into(),
            action: "a".into(),
            attempt: 1,
            kind: CommandKind::Rollback {
                previous_version: Some("1.0".into()),
            },
            mac: String::new(),
        };
        let mut other = c.clone();
        other.kind = CommandKind::Rollback {
            previous_version: None,
        };
        assert_ne!(c.mac_input("dev-1"), c.mac_input("dev-2"));
        assert_ne!(c.mac_input("dev-1"), other.mac_input("dev-1"));
    }

    #[test]
    fn manifest_binds_version() {
        assert_ne!(signed_manifest("AB", "1.0"), signed_manifest("ab", "1.1"));
        assert_eq!(signed_manifest("AB", "1.0"), signed_manifest("ab", "1.0"));
    }
}
