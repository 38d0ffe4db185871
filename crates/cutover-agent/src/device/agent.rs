//! The agent's state machine, shared by the real agent and the fleet simulator.
//!
//! It turns server messages into work on a [`Device`] and reports each stage.
//! Reliability is its job, not the transport's: every command is answered
//! (a new install by its `downloading` report, anything else and every repeat
//! by an acknowledgement), a command already seen is not run twice, a later
//! attempt supersedes an earlier one, and the latest report of an action is
//! sent again every `resend_after` until the server acknowledges it (a report
//! supersedes the earlier ones of the same attempt, so only the latest is
//! re-sent). The transport only moves [`Outgoing`] messages out and
//! [`ServerMessage`]s in.

use cutover_core::protocol::{
    AgentMessage, ArtifactRef, Channel, Command, CommandKind, FailedStep, Health, Hello,
    MessageKey, PROTOCOL_VERSION, ServerMessage, SlotInfo, Stage, StatusReport,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A step that failed, with the reason reported to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: FailedStep,
    pub reason: String,
}

impl Failure {
    pub fn new(step: FailedStep, reason: impl Into<String>) -> Self {
        Self {
            step,
            reason: reason.into(),
        }
    }
}

/// An action in progress, persisted so that a restart finishes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub command: Command,
    /// The device was rebooting into the new slot.
    #[serde(default)]
    pub rebooting: bool,
    /// The final report, kept until the server acknowledges it.
    #[serde(default)]
    pub final_report: Option<StatusReport>,
}

/// Writes the job record atomically (temporary file, fsync, rename), or removes it for
/// `None`: what every `Device` keeps so a restart resumes its job.
pub fn save_job_file(path: &std::path::Path, job: Option<&JobRecord>) {
    match job {
        None => {
            let _ = std::fs::remove_file(path);
        }
        Some(job) => {
            let tmp = path.with_extension("json.tmp");
            let bytes = serde_json::to_vec(job).expect("job serializes");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::File::open(&tmp).and_then(|f| f.sync_all());
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

/// Reads the job record [`save_job_file`] wrote; none when absent or unreadable.
pub fn load_job_file(path: &std::path::Path) -> Option<JobRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What the agent does to the device. The real agent writes slots on disk;
/// the simulator only waits and rolls dice.
pub trait Device: Send + Sync + 'static {
    type Fetched: Send + 'static;

    fn running_version(&self) -> String;
    fn slots(&self) -> Vec<SlotInfo>;
    /// Downloads the artifact (resuming what is already there).
    fn fetch(
        &self,
        artifact: &ArtifactRef,
    ) -> impl Future<Output = Result<Self::Fetched, Failure>> + Send;
    /// Checks size, digest and signature before anything is written.
    fn verify(
        &self,
        artifact: &ArtifactRef,
        fetched: &Self::Fetched,
    ) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Writes the verified artifact to the inactive slot (or runs the installer).
    fn install(
        &self,
        artifact: &ArtifactRef,
        fetched: Self::Fetched,
        stage_only: bool,
    ) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Reboots into the pending slot, checks health, confirms it, or falls
    /// back; returns the version running afterwards.
    fn boot_new(&self, job: &JobRecord) -> impl Future<Output = Result<String, Failure>> + Send;
    /// Blue-green: marks the staged slot to boot next.
    fn activate(&self) -> impl Future<Output = Result<(), Failure>> + Send;
    /// Restores `previous` (or the other slot); returns the running version.
    fn rollback(
        &self,
        previous: Option<&str>,
    ) -> impl Future<Output = Result<String, Failure>> + Send;
    /// Forgets a written but unconfirmed slot.
    fn cancel(&self) -> impl Future<Output = ()> + Send;
    /// At start, after a reboot during `job`: finishes the boot.
    fn resume_boot(&self, job: &JobRecord) -> impl Future<Output = Result<String, Failure>> + Send;
    fn save_job(&self, job: Option<&JobRecord>);
    fn load_job(&self) -> Option<JobRecord>;
    /// Health of the running version, for reports.
    fn health(&self) -> Option<Health> {
        None
    }
}

/// Who this agent is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub target: String,
    pub key: [u8; 32],
    pub kind: String,
    pub environment: String,
    pub hardware_model: String,
}

/// One message for the transport to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub target: Arc<str>,
    pub channel: Channel,
    pub message: AgentMessage,
}

impl Outgoing {
    pub fn topic(&self) -> String {
        cutover_core::protocol::topic(&self.target, self.channel)
    }
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(&self.message).expect("agent messages serialize")
    }
}

/// Counters for the simulator's metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct AgentStats {
    pub commands: u64,
    pub duplicates: u64,
    pub resent: u64,
    /// Messages from the server (commands, acknowledgements).
    pub received: u64,
    /// Commands refused because their MAC did not verify.
    pub refused: u64,
}

struct Pending {
    channel: Channel,
    message: AgentMessage,
    sent_at: Instant,
}

struct Inner {
    unacked: HashMap<MessageKey, Pending>,
    /// Highest attempt seen per (execution, action).
    seen: HashMap<(String, String), u32>,
    job: Option<(MessageKey, tokio::task::JoinHandle<()>)>,
    stats: AgentStats,
    /// When the first rollback command of each execution arrived (for
    /// measuring the server's abort reaction).
    first_rollback: HashMap<String, Instant>,
}

/// The state machine of one target.
pub struct Agent<D: Device> {
    id: Identity,
    target: Arc<str>,
    device: Arc<D>,
    out: mpsc::UnboundedSender<Outgoing>,
    resend_after: Duration,
    inner: Mutex<Inner>,
    /// `inner.unacked.len()`, readable without the lock: a simulator sweeps
    /// 100,000 agents for re-sends and most have nothing waiting.
    waiting: AtomicUsize,
}

fn hello_key() -> MessageKey {
    MessageKey {
        execution: String::new(),
        action: "hello".into(),
        sequence: 0,
    }
}

impl<D: Device> Agent<D> {
    pub fn new(
        id: Identity,
        device: Arc<D>,
        out: mpsc::UnboundedSender<Outgoing>,
        resend_after: Duration,
    ) -> Arc<Self> {
        let target: Arc<str> = Arc::from(id.target.as_str());
        Arc::new(Self {
            id,
            target,
            device,
            out,
            resend_after,
            inner: Mutex::new(Inner {
                unacked: HashMap::new(),
                seen: HashMap::new(),
                job: None,
                stats: AgentStats::default(),
                first_rollback: HashMap::new(),
            }),
            waiting: AtomicUsize::new(0),
        })
    }

    pub fn target(&self) -> &str {
        &self.id.target
    }

    pub fn device(&self) -> &Arc<D> {
        &self.device
    }

    pub fn stats(&self) -> AgentStats {
        self.inner.lock().expect("agent lock").stats
    }

    /// How many reports still wait for an acknowledgement.
    pub fn unacked(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Drops a message that no longer waits for an acknowledgement.
    fn forget(&self, inner: &mut Inner, key: &MessageKey) -> Option<Pending> {
        let removed = inner.unacked.remove(key);
        self.waiting.store(inner.unacked.len(), Ordering::Relaxed);
        removed
    }

    /// Whether an action is running.
    pub fn busy(&self) -> bool {
        self.inner
            .lock()
            .expect("agent lock")
            .job
            .as_ref()
            .is_some_and(|(_, h)| !h.is_finished())
    }

    fn send(&self, channel: Channel, mut message: AgentMessage, key: Option<MessageKey>) {
        super::mac::sign_message(&mut message, &self.id.key);
        if let Some(key) = key {
            let mut inner = self.inner.lock().expect("agent lock");
            if let AgentMessage::Status(report) = &message {
                // A report supersedes the earlier ones of the same attempt:
                // only the latest is re-sent.
                let attempt = report.attempt;
                inner.unacked.retain(|k, p| {
                    !(k.execution == key.execution
                        && k.action == key.action
                        && matches!(&p.message, AgentMessage::Status(r) if r.attempt == attempt))
                });
            }
            inner.unacked.insert(
                key,
                Pending {
                    channel,
                    message: message.clone(),
                    sent_at: Instant::now(),
                },
            );
            self.waiting.store(inner.unacked.len(), Ordering::Relaxed);
        }
        let _ = self.out.send(Outgoing {
            target: self.target.clone(),
            channel,
            message,
        });
    }

    /// Sends the inventory; call on every (re)connect.
    pub fn hello(&self) {
        let hello = Hello {
            v: PROTOCOL_VERSION,
            target: self.id.target.clone(),
            kind: self.id.kind.clone(),
            environment: self.id.environment.clone(),
            hardware_model: self.id.hardware_model.clone(),
            running_version: self.device.running_version(),
            slots: self.device.slots(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            mac: String::new(),
        };
        self.send(
            Channel::Hello,
            AgentMessage::Hello(hello),
            Some(hello_key()),
        );
    }

    pub fn heartbeat(&self) {
        let msg = AgentMessage::Heartbeat {
            v: PROTOCOL_VERSION,
            target: self.id.target.clone(),
            running_version: self.device.running_version(),
        };
        self.send(Channel::Heartbeat, msg, None);
    }

    /// Sends again every report older than `resend_after`; returns how many.
    pub fn resend_due(&self, now: Instant) -> usize {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let due: Vec<(Channel, AgentMessage)> = {
            let mut inner = self.inner.lock().expect("agent lock");
            let mut due = Vec::new();
            for p in inner.unacked.values_mut() {
                if now.duration_since(p.sent_at) >= self.resend_after {
                    p.sent_at = now;
                    due.push((p.channel, p.message.clone()));
                }
            }
            inner.stats.resent += due.len() as u64;
            due
        };
        let n = due.len();
        for (channel, message) in due {
            let _ = self.out.send(Outgoing {
                target: self.target.clone(),
                channel,
                message,
            });
        }
        n
    }

    /// Finishes what a restart interrupted: re-sends a final report, finishes
    /// a boot into a new slot, or runs an unfinished command again (the
    /// download resumes).
    pub fn start(self: &Arc<Self>) {
        let Some(job) = self.device.load_job() else {
            return;
        };
        let key = job.command.key();
        self.inner
            .lock()
            .expect("agent lock")
            .seen
            .insert((key.execution.clone(), key.action.clone()), key.sequence);
        if let Some(report) = job.final_report.clone() {
            let rkey = report.key();
            self.send(Channel::Status, AgentMessage::Status(report), Some(rkey));
            return;
        }
        let me = self.clone();
        let started = Instant::now();
        let handle = tokio::spawn(async move {
            if job.rebooting {
                let result = me.device.resume_boot(&job).await;
                me.finish_install(&job, started, result);
            } else {
                me.run(job.command.clone(), started).await;
            }
        });
        self.inner.lock().expect("agent lock").job = Some((key, handle));
    }

    /// When the first rollback command of `execution` arrived here.
    pub fn first_rollback(&self, execution: &str) -> Option<Instant> {
        self.inner
            .lock()
            .expect("agent lock")
            .first_rollback
            .get(execution)
            .copied()
    }

    /// Handles one message from the server.
    pub fn handle(self: &Arc<Self>, msg: ServerMessage) {
        self.inner.lock().expect("agent lock").stats.received += 1;
        match msg {
            ServerMessage::Ack { key, .. } | ServerMessage::Nack { key, .. } => {
                let removed = {
                    let mut inner = self.inner.lock().expect("agent lock");
                    self.forget(&mut inner, &key)
                };
                if let Some(Pending {
                    message: AgentMessage::Status(report),
                    ..
                }) = removed
                    && report.stage.is_final()
                    && let Some(job) = self.device.load_job()
                    && job.command.execution == report.execution
                    && job.command.action == report.action
                    && job.command.attempt == report.attempt
                {
                    self.device.save_job(None);
                }
            }
            ServerMessage::HelloAck { .. } => {
                let mut inner = self.inner.lock().expect("agent lock");
                self.forget(&mut inner, &hello_key());
            }
            ServerMessage::Command(cmd) => self.command(cmd),
        }
    }

    fn command(self: &Arc<Self>, cmd: Command) {
        let key = cmd.key();
        if !super::mac::verify_command(&cmd, &self.id.target, &self.id.key) {
            // Not made with this target's credential: run nothing, tell the server.
            tracing::warn!(
                target = %self.id.target,
                execution = cmd.execution,
                action = cmd.action,
                kind = cmd.kind.name(),
                "command refused: bad message authentication code"
            );
            self.inner.lock().expect("agent lock").stats.refused += 1;
            self.send(
                Channel::Status,
                AgentMessage::Refused {
                    v: PROTOCOL_VERSION,
                    target: self.id.target.clone(),
                    key,
                    reason: "bad message authentication code".into(),
                    mac: String::new(),
                },
                None,
            );
            return;
        }
        let ack = || {
            self.send(
                Channel::Status,
                AgentMessage::Ack {
                    v: PROTOCOL_VERSION,
                    target: self.id.target.clone(),
                    key: key.clone(),
                    mac: String::new(),
                },
                None,
            )
        };
        let mut inner = self.inner.lock().expect("agent lock");
        inner.stats.commands += 1;
        if matches!(cmd.kind, CommandKind::Rollback { .. }) {
            inner
                .first_rollback
                .entry(cmd.execution.clone())
                .or_insert_with(Instant::now);
        }
        let slot = (cmd.execution.clone(), cmd.action.clone());
        if inner.seen.get(&slot).is_some_and(|a| *a >= cmd.attempt) {
            inner.stats.duplicates += 1;
            drop(inner);
            ack();
            return;
        }
        // A new install is answered by its `downloading` report, sent at once;
        // anything else is acknowledged first.
        if !matches!(cmd.kind, CommandKind::Install { .. }) {
            ack();
        }
        inner.seen.insert(slot, cmd.attempt);
        // One action at a time: a newer command supersedes the running one.
        if let Some((_, handle)) = inner.job.take() {
            handle.abort();
        }
        let me = self.clone();
        let started = Instant::now();
        let job = JobRecord {
            command: cmd,
            rebooting: false,
            final_report: None,
        };
        self.device.save_job(Some(&job));
        let handle = tokio::spawn(async move { me.run(job.command, started).await });
        inner.job = Some((key, handle));
    }

    fn report(
        &self,
        cmd: &Command,
        stage: Stage,
        failure: Option<&Failure>,
        started: Instant,
    ) -> StatusReport {
        let report = StatusReport {
            v: PROTOCOL_VERSION,
            target: self.id.target.clone(),
            execution: cmd.execution.clone(),
            action: cmd.action.clone(),
            attempt: cmd.attempt,
            stage,
            failed_step: failure.map(|f| f.step),
            reason: failure.map(|f| f.reason.clone()).unwrap_or_default(),
            running_version: self.device.running_version(),
            health: if stage == Stage::Succeeded {
                self.device.health()
            } else {
                None
            },
            elapsed_ms: started.elapsed().as_millis() as u64,
            mac: String::new(),
        };
        let key = report.key();
        if stage.is_final() {
            let mut signed = AgentMessage::Status(report.clone());
            super::mac::sign_message(&mut signed, &self.id.key);
            if let AgentMessage::Status(r) = signed {
                self.device.save_job(Some(&JobRecord {
                    command: cmd.clone(),
                    rebooting: false,
                    final_report: Some(r),
                }));
            }
        }
        self.send(
            Channel::Status,
            AgentMessage::Status(report.clone()),
            Some(key),
        );
        report
    }

    async fn run(self: Arc<Self>, cmd: Command, started: Instant) {
        match cmd.kind.clone() {
            CommandKind::Install {
                artifact,
                stage_only,
            } => {
                self.report(&cmd, Stage::Downloading, None, started);
                let fetched = match self.device.fetch(&artifact).await {
                    Ok(f) => f,
                    Err(f) => return self.fail(&cmd, &f, started),
                };
                if let Err(f) = self.device.verify(&artifact, &fetched).await {
                    return self.fail(&cmd, &f, started);
                }
                self.report(&cmd, Stage::Installing, None, started);
                if let Err(f) = self.device.install(&artifact, fetched, stage_only).await {
                    return self.fail(&cmd, &f, started);
                }
                if stage_only {
                    self.report(&cmd, Stage::Succeeded, None, started);
                    return;
                }
                self.reboot_and_finish(&cmd, started).await;
            }
            CommandKind::Activate => {
                if let Err(f) = self.device.activate().await {
                    return self.fail(&cmd, &f, started);
                }
                self.reboot_and_finish(&cmd, started).await;
            }
            CommandKind::Rollback { previous_version } => {
                match self.device.rollback(previous_version.as_deref()).await {
                    Ok(_) => {
                        self.report(&cmd, Stage::RolledBack, None, started);
                    }
                    Err(f) => self.fail(&cmd, &f, started),
                }
            }
            CommandKind::Cancel => {
                self.device.cancel().await;
                self.report(&cmd, Stage::Canceled, None, started);
            }
        }
    }

    async fn reboot_and_finish(&self, cmd: &Command, started: Instant) {
        self.report(cmd, Stage::Verifying, None, started);
        let job = JobRecord {
            command: cmd.clone(),
            rebooting: true,
            final_report: None,
        };
        self.device.save_job(Some(&job));
        let result = self.device.boot_new(&job).await;
        self.finish_install(&job, started, result);
    }

    fn finish_install(&self, job: &JobRecord, started: Instant, result: Result<String, Failure>) {
        match result {
            Ok(_) => {
                self.report(&job.command, Stage::Succeeded, None, started);
            }
            Err(f) => self.fail(&job.command, &f, started),
        }
    }

    fn fail(&self, cmd: &Command, failure: &Failure, started: Instant) {
        self.report(cmd, Stage::Failed, Some(failure), started);
    }
}
