//! Inventory writes off the orchestrator's path: agents' hello messages
//! (checked, stored, acknowledged) and the version each target runs after a
//! final report. A fleet connecting at once sends thousands of hellos; they
//! must not delay the reports that drive rollouts.

use super::Shared;
use chrono::Utc;
use cutover_agent::device::mac;
use cutover_core::protocol::{AgentMessage, PROTOCOL_VERSION, ServerMessage};
use cutover_store::NewAuditEntry;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(crate) enum Job {
    Hello {
        topic_target: String,
        message: AgentMessage,
    },
    Version {
        target: String,
        version: String,
    },
}

pub(crate) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut keys: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Version { target, version } => {
                let store = &shared.store;
                let inventory = store
                    .get_target(&target)
                    .await
                    .map(|t| t.inventory)
                    .unwrap_or(Value::Null);
                let _ = store
                    .update_target_inventory(&target, &version, &inventory, Utc::now())
                    .await;
            }
            Job::Hello {
                topic_target,
                message,
            } => {
                let AgentMessage::Hello(h) = &message else {
                    continue;
                };
                if !keys.contains_key(&topic_target) {
                    let key = match shared.store.get_target(&topic_target).await {
                        Ok(row) => row.credential_hash.and_then(|h| hex::decode(h).ok()),
                        Err(_) => None,
                    };
                    keys.insert(topic_target.clone(), key);
                }
                let why = if h.v != PROTOCOL_VERSION {
                    Some("unsupported protocol version")
                } else if h.target != topic_target {
                    Some("message claims another target than its topic")
                } else {
                    match keys.get(&topic_target).cloned().flatten() {
                        None => Some("unknown target or no credential enrolled"),
                        Some(k) if !mac::verify_message(&message, &k) => {
                            Some("bad message authentication code")
                        }
                        Some(_) => None,
                    }
                };
                if let Some(why) = why {
                    tracing::warn!(topic_target, claimed = h.target, why, "hello refused");
                    let _ = shared
                        .store
                        .append_audit(&NewAuditEntry {
                            actor: format!("target:{topic_target}"),
                            action: "agent.message.refused".into(),
                            subject: h.target.clone(),
                            source_ip: None,
                            result: "denied".into(),
                            details: json!({ "reason": why, "topic_target": topic_target, "claimed_target": h.target }),
                            at: None,
                        })
                        .await;
                    continue;
                }
                let inventory = json!({
                    "kind": h.kind, "hardware_model": h.hardware_model, "slots": h.slots,
                    "agent_version": h.agent_version, "environment": h.environment,
                });
                let _ = shared
                    .store
                    .update_target_inventory(&h.target, &h.running_version, &inventory, Utc::now())
                    .await;
                shared.send(
                    &h.target,
                    ServerMessage::HelloAck {
                        v: PROTOCOL_VERSION,
                    },
                );
            }
        }
    }
}
