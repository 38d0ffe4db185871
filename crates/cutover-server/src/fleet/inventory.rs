//! Inventory writes off the orchestrator's path: agents' hello messages
//! (checked, stored, acknowledged) and the version each target runs after a
//! final report. A fleet connecting at once sends thousands of hellos; they
//! must not delay the reports that drive rollouts, so they are written in
//! batches, one transaction for whatever arrived meanwhile.

use super::Shared;
use chrono::Utc;
use cutover_agent::device::mac;
use cutover_core::protocol::{AgentMessage, PROTOCOL_VERSION, ServerMessage};
use cutover_store::NewAuditEntry;
use serde_json::json;
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

/// Jobs written in one transaction at most.
const BATCH: usize = 5_000;

pub(crate) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut keys: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(job) = jobs.recv().await {
        batch.push(job);
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        load_keys(&shared, &mut keys, &batch).await;
        let mut seen = Vec::with_capacity(batch.len());
        let mut acks = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Version { target, version } => seen.push((target, version, None)),
                Job::Hello {
                    topic_target,
                    message,
                } => {
                    let AgentMessage::Hello(h) = &message else {
                        continue;
                    };
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
                    acks.push(h.target.clone());
                    seen.push((h.target.clone(), h.running_version.clone(), Some(inventory)));
                }
            }
        }
        if let Err(e) = shared.store.record_targets_seen(&seen, Utc::now()).await {
            tracing::warn!(error = %e, "cannot store the inventory of {} targets", seen.len());
            continue;
        }
        for target in acks {
            shared.send(
                &target,
                ServerMessage::HelloAck {
                    v: PROTOCOL_VERSION,
                },
            );
        }
    }
}

/// Reads the keys of the hellos' targets not seen yet, in chunks (an unknown
/// target is looked up again next time: it may have been enrolled since).
async fn load_keys(shared: &Shared, keys: &mut HashMap<String, Option<Vec<u8>>>, batch: &[Job]) {
    let mut missing: Vec<String> = batch
        .iter()
        .filter_map(|j| match j {
            Job::Hello { topic_target, .. } if !keys.contains_key(topic_target) => {
                Some(topic_target.clone())
            }
            _ => None,
        })
        .collect();
    missing.sort();
    missing.dedup();
    for chunk in missing.chunks(5_000) {
        let rows = shared
            .store
            .list_targets(&cutover_store::TargetFilter {
                ids: Some(chunk.to_vec()),
                limit: Some(chunk.len() as i64),
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        for r in rows {
            let key = r
                .credential_hash
                .as_deref()
                .and_then(|h| hex::decode(h).ok());
            keys.insert(r.id, key);
        }
    }
}
