//! Inventory writes off the orchestrator's path: agents' hello messages
//! (checked, stored, acknowledged) and the version each target runs after a
//! final report. A fleet connecting at once sends thousands of hellos; they
//! must not delay the reports that drive rollouts, so they are written in
//! batches, one transaction for whatever arrived meanwhile. A hello sent
//! again unchanged (the agent re-sends it every few seconds until it is
//! acknowledged, so a slow batch brings a backlog of copies) is acknowledged
//! without being written again.

use super::Shared;
use chrono::Utc;
use cutover_agent::device::mac;
use cutover_core::protocol::{AgentMessage, PROTOCOL_VERSION, ServerMessage};
use cutover_store::NewAuditEntry;
use serde_json::json;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// How long a stored hello makes an identical one a repeat. Longer than an
/// agent's re-send period and a backlog of re-sends; short enough that a
/// target's `last_seen_at` stays within this of its latest hello.
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The hellos stored lately, by target: what they said (a hash of the
/// version and inventory) and when. Only this task writes hellos and the
/// versions of final reports, in the order they arrive, so a version written
/// in between makes the next hello new again, whatever it says. (Enrolling a
/// target again with a version is the one write elsewhere; a repeat within
/// the window leaves that version in place until the agent's next hello.)
#[derive(Default)]
struct StoredHellos {
    by_target: HashMap<String, (u64, Instant)>,
    pruned: Option<Instant>,
}

impl StoredHellos {
    /// Whether `target` already had this hello stored within the window.
    fn is_repeat(&self, target: &str, fingerprint: u64, now: Instant) -> bool {
        self.by_target
            .get(target)
            .is_some_and(|&(f, at)| f == fingerprint && now.duration_since(at) < REPEAT_WINDOW)
    }

    fn remember(&mut self, target: String, fingerprint: u64, now: Instant) {
        self.by_target.insert(target, (fingerprint, now));
        // Entries past the window decide nothing: drop them once per window.
        if self
            .pruned
            .is_none_or(|p| now.duration_since(p) >= REPEAT_WINDOW)
        {
            self.by_target
                .retain(|_, &mut (_, at)| now.duration_since(at) < REPEAT_WINDOW);
            self.pruned = Some(now);
        }
    }

    /// The target's version was written apart from a hello.
    fn forget(&mut self, target: &str) {
        self.by_target.remove(target);
    }
}

/// What a hello would store, as one number.
fn fingerprint(version: &str, inventory: &serde_json::Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    version.hash(&mut h);
    inventory.to_string().hash(&mut h);
    h.finish()
}

pub(crate) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut keys: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut stored = StoredHellos::default();
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
        // Hellos written by this batch, to remember once it is stored.
        let mut fresh: HashMap<String, u64> = HashMap::new();
        let now = Instant::now();
        for job in batch.drain(..) {
            match job {
                Job::Version { target, version } => {
                    stored.forget(&target);
                    fresh.remove(&target);
                    seen.push((target, version, None));
                }
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
                    let print = fingerprint(&h.running_version, &inventory);
                    if stored.is_repeat(&h.target, print, now) {
                        continue;
                    }
                    fresh.insert(h.target.clone(), print);
                    seen.push((h.target.clone(), h.running_version.clone(), Some(inventory)));
                }
            }
        }
        if let Err(e) = shared.store.record_targets_seen(&seen, Utc::now()).await {
            tracing::warn!(error = %e, "cannot store the inventory of {} targets", seen.len());
            continue;
        }
        for (target, print) in fresh {
            stored.remember(target, print, now);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_repeats_only_what_was_stored_within_the_window_and_since_no_version() {
        let t0 = Instant::now();
        let inventory = serde_json::json!({ "kind": "device", "slots": [] });
        let print = fingerprint("1.0.0", &inventory);
        let mut stored = StoredHellos::default();
        assert!(!stored.is_repeat("a", print, t0), "nothing stored yet");
        stored.remember("a".into(), print, t0);
        assert!(stored.is_repeat("a", print, t0 + Duration::from_secs(3)));
        assert!(!stored.is_repeat("b", print, t0), "another target");
        assert!(
            !stored.is_repeat("a", fingerprint("2.0.0", &inventory), t0),
            "another version"
        );
        assert!(
            !stored.is_repeat(
                "a",
                fingerprint("1.0.0", &serde_json::json!({ "kind": "host" })),
                t0
            ),
            "another inventory"
        );
        assert!(
            !stored.is_repeat("a", print, t0 + REPEAT_WINDOW),
            "past the window a hello is written again"
        );
        stored.forget("a");
        assert!(
            !stored.is_repeat("a", print, t0),
            "a version written since makes the same hello new"
        );
    }

    #[test]
    fn hellos_past_the_window_are_dropped_when_the_next_one_is_remembered() {
        let t0 = Instant::now();
        let mut stored = StoredHellos::default();
        stored.remember("old".into(), 1, t0);
        stored.remember("newer".into(), 2, t0 + REPEAT_WINDOW / 2);
        stored.remember(
            "latest".into(),
            3,
            t0 + REPEAT_WINDOW + Duration::from_secs(1),
        );
        let mut left: Vec<&str> = stored.by_target.keys().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["latest", "newer"]);
    }
}
