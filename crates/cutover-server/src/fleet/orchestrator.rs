//! The orchestrator: claims runnable executions (leases), drives the pure
//! rollout engine with agent reports, timer ticks and operator commands,
//! turns its commands into protocol messages, re-sends them until the agent
//! acknowledges, and stores each batch of transitions with its events in one
//! transaction per execution. After a restart it replays the stored events.

use super::{Inbound, ProgressEvent, Shared};
use chrono::{DateTime, TimeZone, Utc};
use cutover_agent::device::mac;
use cutover_core::engine::{
    self, ActionStage, DispatchMode, Event, ExecutionStatus, OperatorCommand, Rollout, RolloutSpec,
    TargetState,
};
use cutover_core::protocol::{
    AgentMessage, ArtifactRef, Command, CommandKind, FailedStep, MessageKey, PROTOCOL_VERSION,
    ServerMessage, Stage,
};
use cutover_store::{
    ActionUpdate, ExecutionRow, ExecutionUpdate, LeaseFence, NewActionEvent, NewAuditEntry,
    NewExecutionEvent, NewGateResult, StepBatch, StoreError, WaveUpdate, execution_lease_resource,
};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

fn action_status(s: TargetState) -> &'static str {
    match s {
        TargetState::Pending | TargetState::AwaitingRetry => "pending",
        TargetState::Dispatched | TargetState::RollingBack => "dispatched",
        TargetState::Downloading => "downloading",
        TargetState::Installing => "installing",
        TargetState::Verifying => "verifying",
        TargetState::Succeeded => "succeeded",
        TargetState::Failed | TargetState::RollbackFailed => "failed",
        TargetState::TimedOut => "timed_out",
        TargetState::Canceled => "canceled",
        TargetState::RolledBack => "rolled_back",
    }
}

pub(crate) fn execution_status(s: ExecutionStatus) -> &'static str {
    match s {
        ExecutionStatus::Pending => "pending",
        ExecutionStatus::Running | ExecutionStatus::RollingBack => "running",
        ExecutionStatus::Paused => "paused",
        ExecutionStatus::Succeeded => "succeeded",
        ExecutionStatus::Failed => "failed",
        ExecutionStatus::RolledBack => "rolled_back",
        ExecutionStatus::Canceled => "canceled",
    }
}

fn is_terminal(s: ExecutionStatus) -> bool {
    matches!(
        s,
        ExecutionStatus::Succeeded
            | ExecutionStatus::Failed
            | ExecutionStatus::RolledBack
            | ExecutionStatus::Canceled
    )
}

/// One execution this replica owns.
struct Run {
    id: String,
    /// Which load of the execution this is: writes of an older load that
    /// follow a failed commit are dropped, the execution is read again.
    generation: u64,
    plan_id: String,
    rollout: Rollout,
    targets: Vec<String>,
    actions: Vec<String>,
    action_index: HashMap<String, u32>,
    artifact: ArtifactRef,
    previous: Vec<Option<String>>,
    last_seq: i64,
    /// Commands not yet acknowledged, by target index, with when they were
    /// last sent: `None` while their commit is still queued (the committer
    /// sends them and reports [`Sent`]), so a slow commit does not make the
    /// re-send timer repeat commands that never left.
    unacked: HashMap<u32, (ServerMessage, Option<Instant>)>,
    seen_reports: HashSet<MessageKey>,
    status: &'static str,
    /// Reasons of failed targets, for the execution's summary.
    failures: HashMap<u32, String>,
    /// Each wave's status as last written.
    wave_status: Vec<&'static str>,
    /// Each target's MAC key (commands are signed with it).
    keys: Vec<Option<[u8; 32]>>,
    /// Quality gates between waves (`spec.gates`).
    gates: Vec<super::gates::GateDef>,
    /// What a command gate is told about the deployment.
    gate_context: crate::quality_gates::RunContext,
    /// Per wave: succeeded targets that reported healthy, unhealthy, and
    /// targets that refused the artifact as incompatible (for the gates; kept
    /// in memory, so a gate right after a restart sees only later reports).
    wave_health: Vec<[u32; 3]>,
}

impl Run {
    /// What the server measured over `wave`, for its gates.
    fn measure(&self, wave: u32) -> super::gates::WaveMeasure {
        let progress = self.rollout.progress();
        let wp = &progress.waves[wave as usize];
        let [healthy, unhealthy, incompatible] = self
            .wave_health
            .get(wave as usize)
            .copied()
            .unwrap_or_default();
        let threshold = self.rollout.spec().error_threshold;
        let max = f64::from(threshold.of_ceil(wp.size)) / f64::from(wp.size.max(1));
        super::gates::WaveMeasure {
            wave,
            size: wp.size,
            counts: wp.counts,
            healthy,
            unhealthy,
            incompatible,
            default_max_error_rate: max,
        }
    }
}

/// Commands of one commit that the committer has just sent.
struct Sent {
    execution: String,
    generation: u64,
    targets: Vec<u32>,
    at: Instant,
}

/// The verdict of gates that ran off the orchestrator's loop.
struct GateDone {
    execution: String,
    wave: u32,
    verdict: super::gates::Verdict,
}

/// Runs the gates after `wave` in a task of their own (commands and requests take
/// time) and sends the verdict back to the orchestrator's loop.
fn spawn_gates(tx: &mpsc::UnboundedSender<GateDone>, http: &reqwest::Client, run: &Run, wave: u32) {
    let gates = run.gates.clone();
    let measure = run.measure(wave);
    let mut ctx = run.gate_context.clone();
    ctx.wave = Some(wave);
    let (tx, http, execution) = (tx.clone(), http.clone(), run.id.clone());
    tracing::info!(execution, wave, "running quality gates");
    tokio::spawn(async move {
        let verdict = super::gates::evaluate_with_io(&gates, &measure, &ctx, &http).await;
        let _ = tx.send(GateDone {
            execution,
            wave,
            verdict,
        });
    });
}

/// The wave whose gates the engine waits for, if their verdict is still to come.
fn awaiting_gate(rollout: &Rollout) -> Option<u32> {
    match rollout.phase() {
        engine::Phase::Gate { wave }
            if !matches!(
                rollout.pause_trigger(),
                Some(engine::Trigger::GateFailed { .. } | engine::Trigger::GateHeld { .. })
            ) =>
        {
            Some(wave)
        }
        _ => None,
    }
}

/// Why an execution is paused, for its status.
fn held_reason(rollout: &Rollout) -> Option<String> {
    if rollout.status() != ExecutionStatus::Paused {
        return None;
    }
    Some(
        rollout
            .pause_trigger()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "paused by an operator".into()),
    )
}

/// What one batch decided for one run, before it is committed.
#[derive(Default)]
struct Pending {
    /// Gate verdicts to store and feed to the engine, by wave.
    verdicts: Vec<(u32, super::gates::Verdict)>,
    events: Vec<(Event, i64, Value)>,
    action_events: Vec<NewActionEvent>,
    touched: HashSet<u32>,
    bumped: HashSet<u32>,
    commands: Vec<engine::Command>,
    acks: Vec<(String, MessageKey)>,
}

pub(crate) struct Orchestrator {
    shared: Arc<Shared>,
    runs: HashMap<String, Run>,
    /// Executions this replica finished, so late reports are acknowledged
    /// without reading the store.
    finished: HashSet<String>,
    generation: u64,
    commits: mpsc::UnboundedSender<CommitJob>,
    reloads: mpsc::UnboundedReceiver<(String, u64)>,
    sent: mpsc::UnboundedReceiver<Sent>,
    /// Executions whose lease could not be renewed (another replica took it).
    lost_tx: mpsc::UnboundedSender<(String, u64)>,
    lost: mpsc::UnboundedReceiver<(String, u64)>,
    last_resend: Instant,
    keys: HashMap<String, Option<Vec<u8>>>,
    last_claim: Instant,
    last_renew: Instant,
    gates_tx: mpsc::UnboundedSender<GateDone>,
    gates_rx: mpsc::UnboundedReceiver<GateDone>,
    /// For `http` gates.
    http: reqwest::Client,
}

impl Orchestrator {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let long_ago = Instant::now() - Duration::from_secs(3600);
        let (commits, jobs) = mpsc::unbounded_channel();
        let (reload_tx, reloads) = mpsc::unbounded_channel();
        let (sent_tx, sent) = mpsc::unbounded_channel();
        let (lost_tx, lost) = mpsc::unbounded_channel();
        tokio::spawn(committer(shared.clone(), jobs, reload_tx, sent_tx));
        let (gates_tx, gates_rx) = mpsc::unbounded_channel();
        // One TLS backend for the process (a no-op when already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            gates_tx,
            gates_rx,
            http: reqwest::Client::new(),
            shared,
            runs: HashMap::new(),
            finished: HashSet::new(),
            generation: 0,
            commits,
            reloads,
            sent,
            lost_tx,
            lost,
            last_resend: Instant::now(),
            keys: HashMap::new(),
            last_claim: long_ago,
            last_renew: Instant::now(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut inbound: tokio::sync::mpsc::Receiver<Inbound>,
        mut wake: tokio::sync::mpsc::UnboundedReceiver<String>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let settings = self.shared.settings.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let mut batch: Vec<Inbound> = Vec::new();
            let mut woken = false;
            let mut gates = Vec::new();
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { break },
                Some(m) = inbound.recv() => batch.push(m),
                Some(g) = self.gates_rx.recv() => gates.push(g),
                Some(_) = wake.recv() => woken = true,
                Some(r) = self.reloads.recv() => self.reload(r),
                Some(s) = self.sent.recv() => self.mark_sent(s),
                Some(l) = self.lost.recv() => self.lease_lost(l),
                _ = tick.tick() => {}
            }
            // Take what else is ready, without waiting: a report is decided on
            // as soon as it is read, and a backlog makes the batches large.
            while batch.len() < settings.batch_max {
                match inbound.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            while wake.try_recv().is_ok() {
                woken = true;
            }
            while let Ok(r) = self.reloads.try_recv() {
                self.reload(r);
            }
            while let Ok(s) = self.sent.try_recv() {
                self.mark_sent(s);
            }
            while let Ok(l) = self.lost.try_recv() {
                self.lease_lost(l);
            }
            while let Ok(g) = self.gates_rx.try_recv() {
                gates.push(g);
            }
            if let Err(e) = self.cycle(batch, woken, gates).await {
                tracing::warn!(error = %e, "orchestrator cycle failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for id in self.runs.keys() {
            let _ = self
                .shared
                .store
                .release_lease(&execution_lease_resource(id), &settings.owner)
                .await;
        }
    }

    /// Another replica took the execution's lease: it is theirs to drive now.
    fn lease_lost(&mut self, (id, generation): (String, u64)) {
        if self
            .runs
            .get(&id)
            .is_some_and(|r| r.generation == generation)
        {
            tracing::warn!(execution = id, "lease lost; another replica owns it now");
            self.runs.remove(&id);
        }
    }

    /// Starts the re-send clock of commands the committer has sent.
    fn mark_sent(&mut self, sent: Sent) {
        let Some(run) = self.runs.get_mut(&sent.execution) else {
            return;
        };
        if run.generation != sent.generation {
            return;
        }
        for t in sent.targets {
            if let Some((_, at @ None)) = run.unacked.get_mut(&t) {
                *at = Some(sent.at);
            }
        }
    }

    /// A commit of this load of the execution failed: read it again from the store.
    fn reload(&mut self, (id, generation): (String, u64)) {
        if self
            .runs
            .get(&id)
            .is_none_or(|r| r.generation == generation)
        {
            tracing::info!(execution = id, "reloading the execution from the store");
            self.runs.remove(&id);
            self.finished.remove(&id);
            self.last_claim = Instant::now() - Duration::from_secs(3600);
        }
    }

    async fn cycle(
        &mut self,
        batch: Vec<Inbound>,
        woken: bool,
        gates: Vec<GateDone>,
    ) -> anyhow::Result<()> {
        let settings = self.shared.settings.clone();
        let ttl = Duration::from_millis(settings.lease_ttl_ms);
        if woken || self.last_claim.elapsed() >= Duration::from_millis(settings.claim_interval_ms) {
            self.last_claim = Instant::now();
            let claimed = self
                .shared
                .store
                .claim_runnable_executions(&settings.owner, Utc::now(), ttl, 100)
                .await?;
            for id in claimed {
                // A finished execution stays claimable until its last commit lands.
                // Only newly claimed executions are read in full.
                if !self.runs.contains_key(&id) && !self.finished.contains(&id) {
                    let loaded = match self.shared.store.get_execution(&id).await {
                        Ok(row) => self.load(&row).await,
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = loaded {
                        tracing::warn!(execution = id, error = %e, "cannot load execution");
                    }
                }
            }
            self.apply_operator_events().await?;
        }
        if self.last_renew.elapsed() >= ttl / 3 {
            self.last_renew = Instant::now();
            // Off the loop: a write waits for the store's writer, which the
            // commit of a large step holds for a second or more.
            let ids: Vec<(String, u64)> = self
                .runs
                .values()
                .map(|r| (r.id.clone(), r.generation))
                .collect();
            let (shared, lost) = (self.shared.clone(), self.lost_tx.clone());
            tokio::spawn(async move {
                for (id, generation) in ids {
                    let ok = shared
                        .store
                        .renew_lease(
                            &execution_lease_resource(&id),
                            &shared.settings.owner,
                            Utc::now(),
                            ttl,
                        )
                        .await
                        .unwrap_or(false);
                    if !ok {
                        let _ = lost.send((id, generation));
                    }
                }
            });
        }

        let mut pending: HashMap<String, Pending> = HashMap::new();
        for g in gates {
            // A run this replica no longer owns decides its gates again where it is loaded.
            if self.runs.contains_key(&g.execution) {
                pending
                    .entry(g.execution)
                    .or_default()
                    .verdicts
                    .push((g.wave, g.verdict));
            }
        }
        for m in batch {
            self.inbound(m, &mut pending).await;
        }
        // Timers.
        let now = now_ms();
        for run in self.runs.values() {
            if run.rollout.next_deadline().is_some_and(|d| d <= now) {
                pending.entry(run.id.clone()).or_default().events.push((
                    Event::Tick,
                    now,
                    Value::Null,
                ));
            }
        }
        let ids: Vec<String> = pending.keys().cloned().collect();
        for id in ids {
            let p = pending.remove(&id).unwrap_or_default();
            if let Err(e) = self.apply(&id, p).await {
                tracing::warn!(execution = id, error = %e, "cannot commit step");
            }
        }
        if self.last_resend.elapsed() >= Duration::from_millis(250) {
            self.last_resend = Instant::now();
            self.resend();
        }
        Ok(())
    }

    /// Loads a claimed execution: starts it, or replays its stored events.
    async fn load(&mut self, row: &ExecutionRow) -> anyhow::Result<()> {
        let store = &self.shared.store;
        let spec: RolloutSpec =
            serde_json::from_value(row.spec.get("rollout").cloned().unwrap_or(Value::Null))
                .map_err(|e| {
                    anyhow::anyhow!("execution {} has no readable rollout spec: {e}", row.id)
                })?;
        let targets: Vec<String> =
            serde_json::from_value(row.spec.get("targets").cloned().unwrap_or(Value::Null))
                .map_err(|e| anyhow::anyhow!("execution {} has no target list: {e}", row.id))?;
        let artifact_id = row
            .spec
            .get("artifact_id")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let artifact = super::artifacts::artifact_ref(&store.get_artifact(artifact_id).await?);
        let action_ids = store.action_ids(&row.id).await?;
        let by_target: HashMap<&str, &str> = action_ids
            .iter()
            .map(|(target, action)| (target.as_str(), action.as_str()))
            .collect();
        let actions: Vec<String> = targets
            .iter()
            .map(|t| {
                by_target
                    .get(t.as_str())
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            })
            .collect();
        let action_index: HashMap<String, u32> = actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i as u32))
            .collect();
        let n = targets.len() as u32;
        let mut versions: HashMap<String, Option<String>> = HashMap::new();
        for chunk in targets.chunks(5000) {
            let rows = store
                .list_targets(&cutover_store::TargetFilter {
                    ids: Some(chunk.to_vec()),
                    limit: Some(chunk.len() as i64),
                    ..Default::default()
                })
                .await?;
            for r in rows {
                let key = r
                    .credential_hash
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok());
                versions.insert(r.id.clone(), r.current_version);
                self.keys.insert(r.id, key);
            }
        }
        self.generation += 1;
        let events = store.load_execution_events(&row.id, 0).await?;
        let mut run = Run {
            id: row.id.clone(),
            generation: self.generation,
            plan_id: row.plan_id.clone(),
            rollout: Rollout::new(spec.clone(), n).map_err(|e| anyhow::anyhow!("{e}"))?,
            targets,
            actions,
            action_index,
            artifact,
            previous: vec![None; n as usize],
            last_seq: 0,
            unacked: HashMap::new(),
            seen_reports: HashSet::new(),
            status: "pending",
            failures: HashMap::new(),
            wave_status: Vec::new(),
            gates: Vec::new(),
            gate_context: crate::quality_gates::RunContext {
                execution_id: Some(row.id.clone()),
                plan_id: row.plan_id.clone(),
                environment: row.environment.clone(),
                version: row
                    .spec
                    .get("version")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                wave: None,
                checks: self
                    .shared
                    .settings
                    .health_checks
                    .get(&row.environment)
                    .cloned()
                    .unwrap_or_default(),
            },
            wave_health: Vec::new(),
            keys: Vec::new(),
        };
        run.wave_status = vec!["pending"; run.rollout.wave_count() as usize];
        run.wave_health = vec![[0; 3]; run.rollout.wave_count() as usize];
        run.keys = run
            .targets
            .iter()
            .map(|t| {
                self.keys
                    .get(t)
                    .cloned()
                    .flatten()
                    .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            })
            .collect();
        run.gates = match row.spec.get("gates") {
            Some(g) if !g.is_null() => serde_json::from_value(g.clone())
                .map_err(|e| anyhow::anyhow!("execution {} has unreadable gates: {e}", row.id))?,
            _ => Vec::new(),
        };
        let started = events.iter().any(|e| e.kind == "engine");
        if started {
            let mut replay = Vec::with_capacity(events.len());
            for e in &events {
                run.last_seq = run.last_seq.max(e.seq);
                if let Some(prev) = e.payload.get("previous").and_then(|p| p.as_array()) {
                    run.previous = prev
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect();
                }
                replay.extend(stored_events(&e.kind, &e.payload, e.at.timestamp_millis()));
            }
            run.rollout = Rollout::replay(spec, n, replay).map_err(|e| anyhow::anyhow!("{e}"))?;
            run.status = execution_status(run.rollout.status());
            // Whatever was in flight is sent again; agents drop repeats.
            for t in 0..n {
                if let Some(msg) = in_flight_command(&run, t) {
                    run.unacked
                        .insert(t, (msg, Some(Instant::now() - Duration::from_secs(3600))));
                }
            }
            tracing::info!(
                execution = run.id,
                events = events.len(),
                "execution resumed from its events"
            );
            // Gates asked for but not answered before the restart are run again.
            if let Some(wave) = awaiting_gate(&run.rollout) {
                if super::gates::needs_io(&run.gates) {
                    spawn_gates(&self.gates_tx, &self.http, &run, wave);
                } else {
                    let verdict = super::gates::evaluate(&run.gates, &run.measure(wave));
                    let _ = self.gates_tx.send(GateDone {
                        execution: run.id.clone(),
                        wave,
                        verdict,
                    });
                }
            }
            self.runs.insert(run.id.clone(), run);
        } else {
            for (i, t) in run.targets.iter().enumerate() {
                run.previous[i] = versions.get(t).cloned().flatten();
            }
            let id = run.id.clone();
            run.last_seq = events.iter().map(|e| e.seq).max().unwrap_or(0);
            // Operator events written before the start come first, as in a replay.
            let mut sink = Vec::new();
            for e in &events {
                for (ev, ms) in stored_events(&e.kind, &e.payload, e.at.timestamp_millis()) {
                    run.rollout.step_into(ev, ms, &mut sink);
                }
            }
            let previous = run.previous.clone();
            self.runs.insert(id.clone(), run);
            let mut p = Pending::default();
            p.events
                .push((Event::Start, now_ms(), json!({ "previous": previous })));
            self.apply(&id, p).await?;
        }
        Ok(())
    }

    /// Feeds operator commands that the API appended to the event log.
    async fn apply_operator_events(&mut self) -> anyhow::Result<()> {
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            let after = self.runs[&id].last_seq;
            let events = self.shared.store.load_execution_events(&id, after).await?;
            if events.is_empty() {
                continue;
            }
            let run = self.runs.get_mut(&id).expect("run is loaded");
            let mut out = Vec::new();
            for e in events {
                run.last_seq = run.last_seq.max(e.seq);
                for (ev, ms) in stored_events(&e.kind, &e.payload, e.at.timestamp_millis()) {
                    run.rollout.step_into(ev, ms, &mut out);
                }
            }
            let p = Pending {
                commands: out,
                ..Default::default()
            };
            self.apply(&id, p).await?;
        }
        Ok(())
    }

    async fn target_key(&mut self, target: &str) -> Option<Vec<u8>> {
        if let Some(k) = self.keys.get(target) {
            return k.clone();
        }
        let key = match self.shared.store.get_target(target).await {
            Ok(row) => row.credential_hash.and_then(|h| hex::decode(h).ok()),
            Err(_) => None,
        };
        self.keys.insert(target.to_string(), key.clone());
        key
    }

    async fn refuse(&self, topic_target: &str, msg: &AgentMessage, why: &str) {
        tracing::warn!(
            topic_target,
            claimed = msg.target(),
            why,
            "agent message refused"
        );
        let _ = self
            .shared
            .store
            .append_audit(&NewAuditEntry {
                actor: format!("target:{topic_target}"),
                action: "agent.message.refused".into(),
                subject: msg.target().to_string(),
                source_ip: None,
                result: "denied".into(),
                details: json!({ "reason": why, "topic_target": topic_target, "claimed_target": msg.target() }),
                at: None,
            })
            .await;
        if let AgentMessage::Status(s) = msg {
            self.shared.send(
                topic_target,
                ServerMessage::Nack {
                    v: PROTOCOL_VERSION,
                    key: s.key(),
                    reason: why.to_string(),
                },
            );
        }
    }

    async fn inbound(&mut self, m: Inbound, pending: &mut HashMap<String, Pending>) {
        let Inbound {
            topic_target,
            message,
        } = m;
        match &message {
            AgentMessage::Hello(_) => {
                let _ = self.shared.inventory.send(super::inventory::Job::Hello {
                    topic_target,
                    message,
                });
                return;
            }
            AgentMessage::Heartbeat { .. } => return,
            _ => {}
        }
        if message.version() != PROTOCOL_VERSION {
            return self
                .refuse(&topic_target, &message, "unsupported protocol version")
                .await;
        }
        if message.target() != topic_target {
            return self
                .refuse(
                    &topic_target,
                    &message,
                    "message claims another target than its topic",
                )
                .await;
        }
        let Some(key) = self.target_key(&topic_target).await else {
            return self
                .refuse(
                    &topic_target,
                    &message,
                    "unknown target or no credential enrolled",
                )
                .await;
        };
        if !mac::verify_message(&message, &key) {
            return self
                .refuse(&topic_target, &message, "bad message authentication code")
                .await;
        }
        match message {
            AgentMessage::Hello(h) => {
                let inventory = json!({
                    "kind": h.kind, "hardware_model": h.hardware_model, "slots": h.slots,
                    "agent_version": h.agent_version, "environment": h.environment,
                });
                let _ = self
                    .shared
                    .store
                    .update_target_inventory(&h.target, &h.running_version, &inventory, Utc::now())
                    .await;
                self.shared.send(
                    &h.target,
                    ServerMessage::HelloAck {
                        v: PROTOCOL_VERSION,
                    },
                );
            }
            AgentMessage::Heartbeat { .. } => {}
            AgentMessage::Refused {
                target,
                key,
                reason,
                ..
            } => {
                tracing::warn!(
                    target,
                    execution = key.execution,
                    reason,
                    "agent refused a command"
                );
                let _ = self
                    .shared
                    .store
                    .append_audit(&NewAuditEntry {
                        actor: format!("target:{target}"),
                        action: "agent.command.refused".into(),
                        subject: target.clone(),
                        source_ip: None,
                        result: "denied".into(),
                        details: json!({ "reason": reason, "execution": key.execution, "action": key.action, "sequence": key.sequence }),
                        at: None,
                    })
                    .await;
            }
            AgentMessage::Ack { key, .. } => {
                if let Some(run) = self.runs.get_mut(&key.execution)
                    && let Some(&t) = run.action_index.get(&key.action)
                    && run.unacked.get(&t).is_some_and(|(m, _)| matches!(m, ServerMessage::Command(c) if c.attempt == key.sequence))
                {
                    run.unacked.remove(&t);
                }
            }
            AgentMessage::Status(s) => {
                let key = s.key();
                let Some(run) = self.runs.get_mut(&s.execution) else {
                    // Not ours (finished, or another replica's): acknowledge a
                    // finished execution so the agent stops re-sending.
                    let finished = self.finished.contains(&s.execution)
                        || matches!(
                            self.shared.store.execution_status(&s.execution).await,
                            Ok(status) if !["pending", "running", "paused"].contains(&status.as_str())
                        );
                    if finished {
                        self.shared.send(
                            &s.target,
                            ServerMessage::Ack {
                                v: PROTOCOL_VERSION,
                                key,
                            },
                        );
                    }
                    return;
                };
                let Some(&t) = run.action_index.get(&s.action) else {
                    self.shared.send(
                        &s.target,
                        ServerMessage::Nack {
                            v: PROTOCOL_VERSION,
                            key,
                            reason: "unknown action".into(),
                        },
                    );
                    return;
                };
                if run.targets[t as usize] != s.target {
                    return self
                        .refuse(
                            &topic_target,
                            &AgentMessage::Status(s),
                            "action belongs to another target",
                        )
                        .await;
                }
                let p = pending.entry(run.id.clone()).or_default();
                // A final report is acknowledged always. A progress report is
                // acknowledged only when it comes again (its stage lasts): the
                // agent drops it anyway once the next report supersedes it.
                let first = run.seen_reports.insert(key.clone());
                if s.stage.is_final() || !first {
                    p.acks.push((s.target.clone(), key));
                }
                if !first {
                    return;
                }
                // A report proves the command arrived.
                if run.unacked.get(&t).is_some_and(
                    |(m, _)| matches!(m, ServerMessage::Command(c) if c.attempt <= s.attempt),
                ) {
                    run.unacked.remove(&t);
                }
                let stage = match s.stage {
                    Stage::Downloading => Some(ActionStage::Downloading),
                    Stage::Installing => Some(ActionStage::Installing),
                    Stage::Verifying => Some(ActionStage::Verifying),
                    Stage::Succeeded => Some(ActionStage::Succeeded),
                    Stage::RolledBack => Some(ActionStage::RolledBack),
                    Stage::Failed => Some(ActionStage::Failed {
                        transient: s.failed_step == Some(FailedStep::Download),
                        reason: s.reason.clone(),
                    }),
                    Stage::Received | Stage::Rebooting | Stage::Canceled => None,
                };
                let now = now_ms();
                if s.stage == Stage::Failed {
                    run.failures.insert(t, s.reason.clone());
                }
                let w = run.rollout.wave_of(t) as usize;
                if let Some(h) = run.wave_health.get_mut(w) {
                    match (s.stage, &s.health, s.failed_step) {
                        (Stage::Succeeded, Some(health), _) if health.healthy => h[0] += 1,
                        (Stage::Succeeded, Some(_), _) => h[1] += 1,
                        (Stage::Failed, _, Some(FailedStep::Incompatible)) => h[2] += 1,
                        _ => {}
                    }
                }
                p.action_events.push(NewActionEvent {
                    execution_id: run.id.clone(),
                    action_id: s.action.clone(),
                    target_id: s.target.clone(),
                    seq: i64::from(s.attempt) * 16 + i64::from(s.stage.ordinal()),
                    kind: s.stage.as_str().to_string(),
                    at: at(now),
                    detail: json!({
                        "attempt": s.attempt, "reason": s.reason, "failed_step": s.failed_step,
                        "running_version": s.running_version, "elapsed_ms": s.elapsed_ms,
                    }),
                });
                if matches!(
                    s.stage,
                    Stage::Succeeded | Stage::RolledBack | Stage::Failed
                ) {
                    // The version it really runs now, written off this path.
                    let _ = self.shared.inventory.send(super::inventory::Job::Version {
                        target: s.target.clone(),
                        version: s.running_version.clone(),
                    });
                }
                if let Some(stage) = stage {
                    p.events.push((
                        Event::Report {
                            target: t,
                            attempt: s.attempt as u16,
                            stage,
                        },
                        now,
                        Value::Null,
                    ));
                    p.touched.insert(t);
                }
            }
        }
    }

    /// Steps the engine with the batch's events and hands their writes to the
    /// committer, which sends the commands and acknowledgements once they are
    /// stored. Rollbacks and cancellations leave at once: they stop harm, are
    /// idempotent on the agent, and after a crash the engine decides them
    /// again from the reports re-sent because they were not acknowledged.
    async fn apply(&mut self, id: &str, p: Pending) -> anyhow::Result<()> {
        let owner = self.shared.settings.owner.clone();
        let Some(run) = self.runs.get_mut(id) else {
            return Ok(());
        };
        let Pending {
            verdicts,
            events,
            mut action_events,
            mut touched,
            mut bumped,
            commands: mut out,
            acks,
        } = p;
        // The batch's engine inputs go into one row (`events`, in order): a
        // row per report was half the rows a large rollout writes. An input
        // with extra fields (the start's previous versions) keeps a row of
        // its own, as does a lone input.
        let mut exec_events = Vec::new();
        let mut steps: Vec<Value> = Vec::new();
        let mut last_at = 0;
        for (ev, now, extra) in events {
            run.rollout.step_into(ev.clone(), now, &mut out);
            let step = json!({ "event": ev, "now": now });
            match extra {
                Value::Object(extra) => {
                    flush_steps(run, &mut steps, last_at, &mut exec_events);
                    let mut payload = step;
                    if let Some(obj) = payload.as_object_mut() {
                        obj.insert("type".into(), "engine".into());
                        obj.extend(extra);
                    }
                    run.last_seq += 1;
                    exec_events.push(NewExecutionEvent {
                        execution_id: run.id.clone(),
                        seq: run.last_seq,
                        kind: "engine".into(),
                        payload,
                        at: at(now),
                    });
                }
                _ => {
                    steps.push(step);
                    last_at = now;
                }
            }
        }
        flush_steps(run, &mut steps, last_at, &mut exec_events);
        // Gates decided from what the server measured are answered in the same
        // step; those that run commands or requests answer later, off this loop.
        let mut gate_results = Vec::new();
        let mut decided: Vec<(u32, super::gates::Verdict)> = verdicts;
        let mut i = 0;
        loop {
            for (wave, verdict) in decided.drain(..) {
                if awaiting_gate(&run.rollout) != Some(wave) {
                    continue; // decided, or moved on (canceled, rolled back) meanwhile
                }
                let now = now_ms();
                for r in &verdict.results {
                    gate_results.push(NewGateResult {
                        execution_id: run.id.clone(),
                        wave_index: Some(i64::from(wave)),
                        gate: r.gate.clone(),
                        kind: r.kind.to_string(),
                        phase: "after".into(),
                        passed: r.passed,
                        detail: json!({ "reason": r.reason, "measured": r.measured, "waits_for_person": r.hold }),
                        at: at(now),
                    });
                }
                let ev = Event::GateResult {
                    wave,
                    passed: verdict.passed,
                    reason: verdict.reason,
                    hold: verdict.hold,
                };
                run.rollout.step_into(ev.clone(), now, &mut out);
                run.last_seq += 1;
                exec_events.push(NewExecutionEvent {
                    execution_id: run.id.clone(),
                    seq: run.last_seq,
                    kind: "engine".into(),
                    payload: json!({ "type": "engine", "event": ev, "now": now }),
                    at: at(now),
                });
            }
            if i >= out.len() {
                break;
            }
            if let engine::Command::RunGate { wave } = out[i] {
                if super::gates::needs_io(&run.gates) {
                    spawn_gates(&self.gates_tx, &self.http, run, wave);
                } else {
                    decided.push((wave, super::gates::evaluate(&run.gates, &run.measure(wave))));
                }
            }
            i += 1;
        }
        let mut urgent: Vec<(u32, ServerMessage)> = Vec::new();
        let mut messages: Vec<(u32, ServerMessage)> = Vec::new();
        let mut decisions = Vec::new();
        for c in &out {
            match c {
                engine::Command::Dispatch {
                    target,
                    attempt,
                    mode,
                    ..
                } => {
                    touched.insert(*target);
                    if *attempt > 1 {
                        bumped.insert(*target);
                    }
                    messages.push((
                        *target,
                        command(
                            run,
                            *target,
                            u32::from(*attempt),
                            CommandKind::Install {
                                artifact: run.artifact.clone(),
                                stage_only: *mode == DispatchMode::Stage,
                            },
                        ),
                    ));
                }
                engine::Command::Activate { target } => {
                    touched.insert(*target);
                    let attempt = u32::from(run.rollout.target_attempt(*target));
                    messages.push((
                        *target,
                        command(run, *target, attempt, CommandKind::Activate),
                    ));
                }
                engine::Command::Rollback {
                    target, attempt, ..
                } => {
                    touched.insert(*target);
                    bumped.insert(*target);
                    let previous = run.previous.get(*target as usize).cloned().flatten();
                    urgent.push((
                        *target,
                        command(
                            run,
                            *target,
                            u32::from(*attempt),
                            CommandKind::Rollback {
                                previous_version: previous,
                            },
                        ),
                    ));
                }
                engine::Command::CancelAction {
                    target, attempt, ..
                } => {
                    touched.insert(*target);
                    urgent.push((
                        *target,
                        command(
                            run,
                            *target,
                            u32::from(*attempt) + 1000,
                            CommandKind::Cancel,
                        ),
                    ));
                }
                engine::Command::RunGate { .. } => {}
                engine::Command::Notify { decision } => decisions.push(decision.to_string()),
            }
        }
        let sent = Instant::now();
        for (t, msg) in urgent {
            self.shared.send(&run.targets[t as usize], msg.clone());
            run.unacked.insert(t, (msg, Some(sent)));
        }
        let now = Utc::now();
        let status = run.rollout.status();
        let status_str = execution_status(status);
        let terminal = is_terminal(status);
        let mut action_updates = Vec::with_capacity(touched.len());
        let mut waves_touched = HashSet::new();
        for t in &touched {
            let state = run.rollout.target_state(*t);
            waves_touched.insert(run.rollout.wave_of(*t));
            action_updates.push(ActionUpdate {
                action_id: run.actions[*t as usize].clone(),
                status: action_status(state).to_string(),
                last_seq: None,
                error: if matches!(
                    state,
                    TargetState::Failed | TargetState::RollbackFailed | TargetState::TimedOut
                ) {
                    Some(
                        run.failures
                            .get(t)
                            .cloned()
                            .unwrap_or_else(|| action_status(state).to_string()),
                    )
                } else {
                    None
                },
                bump_attempt: bumped.contains(t),
                at: now,
            });
        }
        if terminal {
            waves_touched.extend(0..run.rollout.wave_count());
        }
        let mut wave_updates = Vec::new();
        if !waves_touched.is_empty() {
            let progress = run.rollout.progress();
            for w in waves_touched {
                let wp = &progress.waves[w as usize];
                let new = wave_status(&wp.counts, wp.size, status);
                let old = run.wave_status[w as usize];
                if new != old {
                    run.wave_status[w as usize] = new;
                    wave_updates.push(WaveUpdate {
                        execution_id: run.id.clone(),
                        wave_index: i64::from(w),
                        status: new.to_string(),
                        started_at: (old == "pending").then_some(now),
                        finished_at: wave_finished(new).then_some(now),
                    });
                }
            }
        }
        for d in &decisions {
            action_events.push(NewActionEvent {
                execution_id: run.id.clone(),
                action_id: String::new(),
                target_id: String::new(),
                seq: run.last_seq,
                kind: "decision".into(),
                at: now,
                detail: json!({ "message": d }),
            });
        }
        let status_changed = status_str != run.status;
        let batch = StepBatch {
            fence: Some(LeaseFence {
                resource: execution_lease_resource(&run.id),
                owner,
            }),
            execution_events: exec_events,
            action_updates,
            wave_updates,
            execution_update: (status_changed || terminal).then(|| ExecutionUpdate {
                execution_id: run.id.clone(),
                status: Some(status_str.to_string()),
                state: Some(json!({
                    "progress": run.rollout.progress(),
                    "failures": summary(&run.failures),
                    "held": held_reason(&run.rollout),
                })),
                started_at: (run.status == "pending").then_some(now),
                finished_at: terminal.then_some(now),
                at: now,
            }),
            action_events,
            gate_results,
            ..Default::default()
        };
        run.status = status_str;
        let mut after = Vec::with_capacity(messages.len() + acks.len());
        let mut commands = Vec::with_capacity(messages.len());
        for (t, msg) in messages {
            after.push((run.targets[t as usize].clone(), msg.clone()));
            // The re-send clock starts when the committer has sent it. If the
            // commit fails, the execution is read again and what is in flight
            // rebuilt from its events.
            run.unacked.insert(t, (msg, None));
            commands.push(t);
        }
        for (target, key) in acks {
            after.push((
                target,
                ServerMessage::Ack {
                    v: PROTOCOL_VERSION,
                    key,
                },
            ));
        }
        let progress = ProgressEvent::Execution {
            execution_id: id.to_string(),
            status: status_str.to_string(),
            progress: serde_json::to_value(run.rollout.totals()).unwrap_or(Value::Null),
        };
        let finish = terminal.then(|| {
            let plan_status = match status {
                ExecutionStatus::Succeeded => "completed",
                ExecutionStatus::Canceled => "canceled",
                _ => "failed",
            };
            (run.plan_id.clone(), plan_status)
        });
        let job = CommitJob {
            id: id.to_string(),
            generation: run.generation,
            batch,
            after,
            commands,
            decisions,
            progress: Some(progress),
            finish,
        };
        if terminal {
            self.runs.remove(id);
            self.finished.insert(id.to_string());
        }
        self.commits
            .send(job)
            .map_err(|_| anyhow::anyhow!("the committer stopped"))?;
        Ok(())
    }

    /// Sends again every command not acknowledged within `resend_ms`.
    fn resend(&mut self) {
        let every = Duration::from_millis(self.shared.settings.resend_ms);
        let now = Instant::now();
        for run in self.runs.values_mut() {
            for (t, (msg, sent)) in run.unacked.iter_mut() {
                if sent.is_some_and(|at| now.duration_since(at) >= every) {
                    *sent = Some(now);
                    self.shared.send(&run.targets[*t as usize], msg.clone());
                }
            }
        }
    }
}

/// One step's writes, and what to do once they are stored.
struct CommitJob {
    id: String,
    generation: u64,
    batch: StepBatch,
    /// Commands and acknowledgements, sent after the commit.
    after: Vec<(String, ServerMessage)>,
    /// The targets (by index) whose commands are in `after`.
    commands: Vec<u32>,
    decisions: Vec<String>,
    progress: Option<ProgressEvent>,
    /// A finished execution: its plan's new status; the lease is released.
    finish: Option<(String, &'static str)>,
}

impl CommitJob {
    /// Appends a later job of the same execution: one transaction for both.
    fn merge(&mut self, later: CommitJob) {
        let b = &mut self.batch;
        let l = later.batch;
        b.execution_events.extend(l.execution_events);
        b.action_updates.extend(l.action_updates);
        b.wave_updates.extend(l.wave_updates);
        b.action_events.extend(l.action_events);
        b.outbox.extend(l.outbox);
        b.gate_results.extend(l.gate_results);
        b.execution_update = match (b.execution_update.take(), l.execution_update) {
            (Some(mut x), Some(y)) => {
                x.status = y.status.or(x.status);
                x.state = y.state.or(x.state);
                x.started_at = x.started_at.or(y.started_at);
                x.finished_at = y.finished_at.or(x.finished_at);
                x.at = y.at;
                Some(x)
            }
            (x, y) => y.or(x),
        };
        self.after.extend(later.after);
        self.commands.extend(later.commands);
        self.decisions.extend(later.decisions);
        self.progress = later.progress.or(self.progress.take());
        self.finish = later.finish.or(self.finish.take());
    }
}

/// Commits the orchestrator's steps in order, merging those of one execution
/// that queued up meanwhile into one transaction, so the engine never waits
/// for the store. After a failed commit the later writes of that load of the
/// execution are dropped and the orchestrator reads it again from the store;
/// the agents re-send what was not acknowledged.
async fn committer(
    shared: Arc<Shared>,
    mut jobs: mpsc::UnboundedReceiver<CommitJob>,
    reload: mpsc::UnboundedSender<(String, u64)>,
    sent: mpsc::UnboundedSender<Sent>,
) {
    let owner = shared.settings.owner.clone();
    let mut poisoned: HashSet<(String, u64)> = HashSet::new();
    let mut queue: Vec<CommitJob> = Vec::new();
    while let Some(first) = jobs.recv().await {
        queue.push(first);
        while let Ok(j) = jobs.try_recv() {
            match queue
                .iter_mut()
                .find(|q| q.id == j.id && q.generation == j.generation)
            {
                Some(q) => q.merge(j),
                None => queue.push(j),
            }
        }
        for job in queue.drain(..) {
            let key = (job.id.clone(), job.generation);
            if poisoned.contains(&key) {
                continue;
            }
            let started = Instant::now();
            let committed = shared.store.commit_step(&job.batch).await;
            tracing::debug!(
                execution = job.id,
                actions = job.batch.action_updates.len(),
                events = job.batch.execution_events.len() + job.batch.action_events.len(),
                ms = started.elapsed().as_millis() as u64,
                "step committed"
            );
            if let Err(e) = committed {
                match e {
                    StoreError::Conflict(why) => {
                        tracing::info!(execution = job.id, why, "event log moved")
                    }
                    e => tracing::warn!(execution = job.id, error = %e, "cannot commit step"),
                }
                poisoned.insert(key.clone());
                let _ = reload.send(key);
                continue;
            }
            for d in job.decisions {
                tracing::info!(execution = job.id, "{d}");
                let _ = shared.progress.send(ProgressEvent::Decision {
                    execution_id: job.id.clone(),
                    message: d,
                });
            }
            for (target, msg) in job.after {
                shared.send(&target, msg);
            }
            if !job.commands.is_empty() {
                let _ = sent.send(Sent {
                    execution: job.id.clone(),
                    generation: job.generation,
                    targets: job.commands,
                    at: Instant::now(),
                });
            }
            if let Some(p) = job.progress {
                let _ = shared.progress.send(p);
            }
            if let Some((plan_id, plan_status)) = job.finish {
                let _ = shared
                    .store
                    .transition_plan(&plan_id, &["executing"], plan_status)
                    .await;
                let _ = shared
                    .store
                    .release_lease(&execution_lease_resource(&job.id), &owner)
                    .await;
            }
        }
    }
}

/// A wave row's status from its targets' states.
fn wave_status(
    c: &cutover_core::engine::StateCounts,
    size: u32,
    execution: ExecutionStatus,
) -> &'static str {
    let in_flight = c.dispatched
        + c.downloading
        + c.installing
        + c.verifying
        + c.awaiting_retry
        + c.rolling_back;
    if c.pending == size {
        return if is_terminal(execution) && execution != ExecutionStatus::Succeeded {
            "canceled"
        } else {
            "pending"
        };
    }
    if in_flight > 0 || (c.pending > 0 && !is_terminal(execution)) {
        return "running";
    }
    if c.rolled_back > 0 || c.rollback_failed > 0 {
        "rolled_back"
    } else if c.failed > 0 || c.timed_out > 0 {
        "failed"
    } else if c.canceled > 0 || c.pending > 0 {
        "canceled"
    } else {
        "succeeded"
    }
}

fn wave_finished(status: &str) -> bool {
    !matches!(status, "pending" | "running")
}

fn summary(failures: &HashMap<u32, String>) -> Value {
    let mut reasons: HashMap<&str, u32> = HashMap::new();
    for r in failures.values() {
        *reasons.entry(r.as_str()).or_default() += 1;
    }
    json!(reasons)
}

/// A command for one target, signed with its key (a target without an
/// enrolled credential gets an unsigned one, which its agent refuses).
fn command(run: &Run, target: u32, attempt: u32, kind: CommandKind) -> ServerMessage {
    let mut cmd = Command {
        v: PROTOCOL_VERSION,
        execution: run.id.clone(),
        action: run.actions[target as usize].clone(),
        attempt,
        kind,
        mac: String::new(),
    };
    if let Some(Some(key)) = run.keys.get(target as usize) {
        mac::sign_command(&mut cmd, &run.targets[target as usize], key);
    }
    ServerMessage::Command(cmd)
}

/// The command a target in flight is waiting for, rebuilt after a restart.
fn in_flight_command(run: &Run, t: u32) -> Option<ServerMessage> {
    let attempt = u32::from(run.rollout.target_attempt(t));
    match run.rollout.target_state(t) {
        TargetState::Dispatched
        | TargetState::Downloading
        | TargetState::Installing
        | TargetState::Verifying => Some(command(
            run,
            t,
            attempt,
            CommandKind::Install {
                artifact: run.artifact.clone(),
                stage_only: false,
            },
        )),
        TargetState::RollingBack => Some(command(
            run,
            t,
            attempt,
            CommandKind::Rollback {
                previous_version: run.previous.get(t as usize).cloned().flatten(),
            },
        )),
        _ => None,
    }
}

/// Stores the engine inputs gathered in `steps` as one execution event: a
/// lone input as `{type, event, now}`, several as `{type, events: [{event, now}]}`.
fn flush_steps(
    run: &mut Run,
    steps: &mut Vec<Value>,
    at_ms: i64,
    out: &mut Vec<NewExecutionEvent>,
) {
    let payload = match steps.len() {
        0 => return,
        1 => {
            let mut step = steps.pop().expect("one step");
            if let Some(obj) = step.as_object_mut() {
                obj.insert("type".into(), "engine".into());
            }
            step
        }
        _ => json!({ "type": "engine", "events": std::mem::take(steps) }),
    };
    run.last_seq += 1;
    out.push(NewExecutionEvent {
        execution_id: run.id.clone(),
        seq: run.last_seq,
        kind: "engine".into(),
        payload,
        at: at(at_ms),
    });
}

/// The engine inputs of a stored execution event (engine or operator), in order.
fn stored_events(kind: &str, payload: &Value, at_ms: i64) -> Vec<(Event, i64)> {
    match payload.get("events").and_then(|e| e.as_array()) {
        Some(steps) if kind == "engine" => steps
            .iter()
            .filter_map(|step| stored_event(kind, step, at_ms))
            .collect(),
        _ => stored_event(kind, payload, at_ms).into_iter().collect(),
    }
}

/// An engine input from one stored step (engine or operator).
fn stored_event(kind: &str, payload: &Value, at_ms: i64) -> Option<(Event, i64)> {
    match kind {
        "engine" => {
            let ev: Event = serde_json::from_value(payload.get("event")?.clone()).ok()?;
            let now = payload.get("now").and_then(|v| v.as_i64()).unwrap_or(at_ms);
            Some((ev, now))
        }
        "operator" => {
            let cmd = payload.get("command")?.as_str()?;
            let command = match cmd {
                "pause" => OperatorCommand::Pause,
                "resume" => OperatorCommand::Resume,
                "cancel" => OperatorCommand::Cancel,
                "rollback" => OperatorCommand::Rollback,
                "promote" => OperatorCommand::Promote,
                "retry_failed" | "retry" => OperatorCommand::RetryFailed,
                _ => return None,
            };
            Some((Event::Operator { command }, at_ms))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::engine::StateCounts;

    #[test]
    fn engine_inputs_stored_one_per_row_or_batched_replay_in_order() {
        let lone = json!({ "type": "engine", "event": Event::Tick, "now": 5 });
        let batch = json!({ "type": "engine", "events": [
            { "event": Event::Start, "now": 1 },
            { "event": Event::Tick, "now": 2 },
        ] });
        let operator = json!({ "type": "operator", "command": "pause" });
        let got = |kind, p: &Value| -> Vec<(Value, i64)> {
            stored_events(kind, p, 99)
                .into_iter()
                .map(|(e, ms)| (serde_json::to_value(e).unwrap(), ms))
                .collect()
        };
        let v = |e: Event| serde_json::to_value(e).unwrap();
        assert_eq!(got("engine", &lone), [(v(Event::Tick), 5)]);
        assert_eq!(
            got("engine", &batch),
            [(v(Event::Start), 1), (v(Event::Tick), 2)]
        );
        assert_eq!(
            got("operator", &operator),
            [(
                v(Event::Operator {
                    command: OperatorCommand::Pause
                }),
                99
            )]
        );
    }

    #[test]
    fn wave_status_follows_its_targets() {
        let running = ExecutionStatus::Running;
        let c = |pending, dispatched, succeeded, failed, rolled_back| StateCounts {
            pending,
            dispatched,
            succeeded,
            failed,
            rolled_back,
            ..Default::default()
        };
        assert_eq!(wave_status(&c(3, 0, 0, 0, 0), 3, running), "pending");
        assert_eq!(wave_status(&c(1, 1, 1, 0, 0), 3, running), "running");
        assert_eq!(wave_status(&c(0, 0, 3, 0, 0), 3, running), "succeeded");
        assert_eq!(wave_status(&c(0, 0, 2, 1, 0), 3, running), "failed");
        assert_eq!(
            wave_status(&c(0, 0, 0, 0, 3), 3, ExecutionStatus::RolledBack),
            "rolled_back"
        );
        assert_eq!(
            wave_status(&c(3, 0, 0, 0, 0), 3, ExecutionStatus::RolledBack),
            "canceled"
        );
    }
}
