//! Per-target message authentication, shared by the agent and the server.
//!
//! A target's key is derived from its credential; the server stores the
//! derived key (never the credential). Every state-changing agent message
//! carries an HMAC-SHA256 over its `mac_input()`, so a status published for
//! another target is refused even when the broker has no per-topic ACL.

use cutover_core::protocol::{AgentMessage, Command};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The MAC key of a target, derived from its credential.
pub fn target_key(credential: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cutover-target-key-v1\n");
    h.update(credential.as_bytes());
    h.finalize().into()
}

/// The derived key as the server stores it (hex).
pub fn target_key_hex(credential: &str) -> String {
    hex::encode(target_key(credential))
}

/// Hex HMAC-SHA256 of `data`.
pub fn mac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a hex HMAC-SHA256.
pub fn verify_mac(key: &[u8], data: &[u8], mac_hex_text: &str) -> bool {
    let Ok(expected) = hex::decode(mac_hex_text) else {
        return false;
    };
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac takes keys of any length");
    mac.update(data);
    mac.verify_slice(&expected).is_ok()
}

/// Fills in the message's MAC.
pub fn sign_message(msg: &mut AgentMessage, key: &[u8]) {
    let Some(input) = msg.mac_input() else { return };
    let mac = mac_hex(key, input.as_bytes());
    match msg {
        AgentMessage::Hello(h) => h.mac = mac,
        AgentMessage::Status(s) => s.mac = mac,
        AgentMessage::Ack { mac: m, .. } | AgentMessage::Refused { mac: m, .. } => *m = mac,
        AgentMessage::Heartbeat { .. } => {}
    }
}

/// Whether the message's MAC was made with `key` (heartbeats always pass:
/// they change no state).
pub fn verify_message(msg: &AgentMessage, key: &[u8]) -> bool {
    match msg.mac_input() {
        Some(input) => verify_mac(key, input.as_bytes(), msg.mac()),
        None => true,
    }
}

/// Fills in the MAC of a command for `target` (the server signs with the
/// target's stored key, the same one the agent derives from its credential).
pub fn sign_command(cmd: &mut Command, target: &str, key: &[u8]) {
    cmd.mac = mac_hex(key, cmd.mac_input(target).as_bytes());
}

/// Whether the command was made for `target` with `key`.
pub fn verify_command(cmd: &Command, target: &str, key: &[u8]) -> bool {
    verify_mac(key, cmd.mac_input(target).as_bytes(), &cmd.mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::protocol::{MessageKey, PROTOCOL_VERSION};

    #[test]
    fn a_command_verifies_only_for_its_target_and_key() {
        use cutover_core::protocol::CommandKind;
        let k = target_key("one");
        let mut cmd = Command {
            v: PROTOCOL_VERSION,
            execution: "e".into(),
            action: "a".into(),
            attempt: 1,
            kind: CommandKind::Cancel,
            mac: String::new(),
        };
        assert!(!verify_command(&cmd, "dev-1", &k));
        sign_command(&mut cmd, "dev-1", &k);
        assert!(verify_command(&cmd, "dev-1", &k));
        assert!(!verify_command(&cmd, "dev-2", &k));
        assert!(!verify_command(&cmd, "dev-1", &target_key("two")));
        cmd.attempt = 2;
        assert!(!verify_command(&cmd, "dev-1", &k));
    }

    #[test]
    fn a_message_signed_for_one_target_fails_for_another() {
        let k1 = target_key("one");
        let k2 = target_key("two");
        let mut msg = AgentMessage::Ack {
            v: PROTOCOL_VERSION,
            target: "dev-1".into(),
            key: MessageKey {
                execution: "e".into(),
                action: "a".into(),
                sequence: 1,
            },
            mac: String::new(),
        };
        assert!(!verify_message(&msg, &k1), "an empty mac never verifies");
        sign_message(&mut msg, &k1);
        assert!(verify_message(&msg, &k1));
        assert!(!verify_message(&msg, &k2));
        if let AgentMessage::Ack { target, .. } = &mut msg {
            *target = "dev-2".into();
        }
        assert!(!verify_message(&msg, &k1));
    }
}
