//! `cutover fleet-sim`: many simulated devices in one process, speaking the
//! real protocol through the agent's own state machine
//! (`cutover_agent::device::Agent` over `SimDevice`), sharing a few MQTT
//! connections as a gateway would, with injected failures and latency, and
//! metrics (boot time, error rate) at the end.

use crate::cmd::GlobalArgs;
use crate::output::OutputFormat;
use anyhow::Context;
use clap::{Args, ValueEnum};
use cutover_agent::device::agent::{Agent, Identity, Outgoing};
use cutover_agent::device::mac;
use cutover_agent::device::mqtt::{GATEWAY_AGENTS, Listen, MqttSettings, run_connection};
use cutover_agent::device::sim::{SimDevice, SimProfile};
use cutover_core::protocol::{AgentMessage, FailedStep, Stage};
use cutover_store::NewTarget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FailStage {
    Download,
    Verify,
    Install,
    Health,
}

impl From<FailStage> for FailedStep {
    fn from(s: FailStage) -> Self {
        match s {
            FailStage::Download => FailedStep::Download,
            FailStage::Verify => FailedStep::Verify,
            FailStage::Install => FailedStep::Install,
            FailStage::Health => FailedStep::Health,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct FleetSimArgs {
    /// How many devices.
    #[arg(long)]
    pub devices: u32,
    #[arg(long)]
    pub environment: String,
    /// Share of devices that fail, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Where failing devices fail.
    #[arg(long, value_enum, default_value = "health")]
    pub fail_stage: FailStage,
    /// Time each stage takes on a device.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// The broker.
    #[arg(
        long,
        env = "CUTOVER_MQTT_URL",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    pub mqtt_url: String,
    /// MQTT connections shared by the devices.
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// Device ids are PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Each device's credential is SEED-ID.
    #[arg(long, default_value = "fleet-sim-credential")]
    pub credential_seed: String,
    /// Enroll the devices (with their credentials) in this database first.
    #[arg(long)]
    pub enroll_database: Option<String>,
    /// The version the devices run at start.
    #[arg(long, default_value = "1.0.0")]
    pub initial_version: String,
    #[arg(long, default_value = "sim-board")]
    pub hardware_model: String,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<u64>,
}

/// What the simulated fleet reported.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SimMetrics {
    pub devices: u32,
    pub commands: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub rolled_back: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub resent: u64,
    /// Commands that arrived again after the device had them.
    pub duplicates: u64,
    pub boot_ms_p50: u64,
    pub boot_ms_p99: u64,
    pub error_rate: f64,
}

/// Final reports the devices sent.
#[derive(Default)]
struct Counts {
    succeeded: u64,
    boot_ms: Vec<u64>,
    failed: u64,
    rolled_back: u64,
    /// When the first failure report of each execution left a device.
    first_failed: HashMap<String, Instant>,
    /// Final reports already counted (re-sends count once).
    counted: std::collections::HashSet<(String, String, u32, Stage)>,
}

type Tally = Arc<Mutex<Counts>>;

/// A running simulated fleet.
pub struct SimFleet {
    pub agents: Vec<Arc<Agent<SimDevice>>>,
    stop: tokio::sync::watch::Sender<bool>,
    stats: Tally,
    sent: Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

/// The credential of a simulated device.
pub fn credential(seed: &str, id: &str) -> String {
    format!("{seed}-{id}")
}

/// The simulated devices' targets, for enrolling them.
pub fn targets(args: &FleetSimArgs) -> Vec<NewTarget> {
    (0..args.devices)
        .map(|i| {
            let id = format!("{}-{i}", args.prefix);
            NewTarget {
                name: id.clone(),
                id,
                environment: args.environment.clone(),
                kind: "device".into(),
                hardware_model: Some(args.hardware_model.clone()),
                current_version: Some(args.initial_version.clone()),
                ..Default::default()
            }
        })
        .collect()
}

impl SimFleet {
    /// Starts the devices on `connections` shared MQTT connections.
    pub fn start(args: &FleetSimArgs) -> anyhow::Result<SimFleet> {
        let profile = Arc::new(SimProfile {
            latency: Duration::from_millis(args.latency_ms),
            failure_rate: args.failure_rate.clamp(0.0, 1.0),
            fail_stage: args.fail_stage.into(),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stats: Tally = Arc::new(Mutex::new(Counts::default()));
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let conns = args.connections.max(1);
        let mut agents = Vec::with_capacity(args.devices as usize);
        let mut tasks = Vec::new();
        let per = args.devices.div_ceil(conns);
        let mut connections = Vec::new();
        for c in 0..conns {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
            let mut group = HashMap::new();
            for i in (c * per)..((c + 1) * per).min(args.devices) {
                let id = format!("{}-{i}", args.prefix);
                let identity = Identity {
                    target: id.clone(),
                    key: mac::target_key(&credential(&args.credential_seed, &id)),
                    kind: "device".into(),
                    environment: args.environment.clone(),
                    hardware_model: args.hardware_model.clone(),
                };
                let device = Arc::new(SimDevice::new(&id, &args.initial_version, profile.clone()));
                let agent = Agent::new(identity, device, tx.clone(), Duration::from_secs(3));
                agents.push(agent.clone());
                group.insert(id, agent);
            }
            if group.is_empty() {
                continue;
            }
            // Count what the devices say on its way out.
            let (fwd_tx, fwd_rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
            let (st, se) = (stats.clone(), sent.clone());
            tokio::spawn(async move {
                let mut rx = rx;
                while let Some(m) = rx.recv().await {
                    se.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let AgentMessage::Status(s) = &m.message {
                        let mut g = st.lock().expect("stats");
                        let first = !s.stage.is_final()
                            || g.counted.insert((
                                s.target.clone(),
                                s.execution.clone(),
                                s.attempt,
                                s.stage,
                            ));
                        match s.stage {
                            _ if !first => {}
                            Stage::Succeeded => {
                                g.succeeded += 1;
                                g.boot_ms.push(s.elapsed_ms);
                            }
                            Stage::Failed => {
                                g.failed += 1;
                                g.first_failed
                                    .entry(s.execution.clone())
                                    .or_insert_with(Instant::now);
                            }
                            Stage::RolledBack => g.rolled_back += 1,
                            _ => {}
                        }
                    }
                    if fwd_tx.send(m).is_err() {
                        break;
                    }
                }
            });
            let mut settings = MqttSettings::new(
                &args.mqtt_url,
                &format!("cutover-fleet-sim-{}-{c}", args.prefix),
            );
            settings.inflight = 1000;
            settings.options().map_err(anyhow::Error::msg)?;
            connections.push((settings, Arc::new(group), fwd_rx));
        }
        // A wildcard subscription on every connection would bring each of
        // them every command: one connection reads for the whole fleet.
        let one_reader = connections.len() > 1 && agents.len() > GATEWAY_AGENTS;
        let fleet: Arc<HashMap<String, Arc<Agent<SimDevice>>>> = Arc::new(
            agents
                .iter()
                .map(|a| (a.target().to_string(), a.clone()))
                .collect(),
        );
        let (subscribed, reader_subscribed) = tokio::sync::watch::channel(false);
        for (c, (settings, group, fwd_rx)) in connections.into_iter().enumerate() {
            let listen = match (one_reader, c) {
                (false, _) => Listen::Own,
                (true, 0) => Listen::Fleet {
                    agents: fleet.clone(),
                    subscribed: subscribed.clone(),
                },
                (true, _) => Listen::Nothing {
                    reader_subscribed: reader_subscribed.clone(),
                },
            };
            tasks.push(tokio::spawn(run_connection(
                settings,
                group,
                listen,
                fwd_rx,
                Duration::from_secs(60),
                stop_rx.clone(),
            )));
        }
        Ok(SimFleet {
            agents,
            stop,
            stats,
            sent,
            tasks,
        })
    }

    /// The metrics so far. Re-sent reports are counted once per report key
    /// by the server; here each final report counts as sent.
    pub fn metrics(&self) -> SimMetrics {
        let g = self.stats.lock().expect("stats");
        let mut boots = g.boot_ms.clone();
        boots.sort_unstable();
        let pct = |p: f64| -> u64 {
            if boots.is_empty() {
                0
            } else {
                boots[((boots.len() - 1) as f64 * p).round() as usize]
            }
        };
        let (mut commands, mut resent, mut received, mut duplicates) = (0, 0, 0, 0);
        for a in &self.agents {
            let s = a.stats();
            commands += s.commands - s.duplicates;
            duplicates += s.duplicates;
            resent += s.resent;
            received += s.received;
        }
        let finished = g.succeeded + g.failed;
        SimMetrics {
            devices: self.agents.len() as u32,
            commands,
            succeeded: g.succeeded,
            failed: g.failed,
            rolled_back: g.rolled_back,
            messages_sent: self.sent.load(std::sync::atomic::Ordering::Relaxed),
            messages_received: received,
            resent,
            duplicates,
            boot_ms_p50: pct(0.5),
            boot_ms_p99: pct(0.99),
            error_rate: if finished == 0 {
                0.0
            } else {
                g.failed as f64 / finished as f64
            },
        }
    }

    /// From the first failure report of `execution` leaving a device to the
    /// first rollback command arriving at any device.
    pub fn abort_reaction(&self, execution: &str) -> Option<Duration> {
        let failed = *self
            .stats
            .lock()
            .expect("stats")
            .first_failed
            .get(execution)?;
        let rollback = self
            .agents
            .iter()
            .filter_map(|a| a.first_rollback(execution))
            .min()?;
        Some(rollback.saturating_duration_since(failed))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

pub async fn run(args: FleetSimArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    if args.devices == 0 {
        anyhow::bail!("--devices must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.failure_rate) {
        anyhow::bail!(
            "--failure-rate {} must be between 0 and 1",
            args.failure_rate
        );
    }
    if let Some(url) = &args.enroll_database {
        let store = cutover_store::Store::connect(url)
            .await
            .with_context(|| format!("cannot open {url}"))?;
        for t in targets(&args) {
            cutover_server::fleet::enroll_target(
                &store,
                &t,
                &credential(&args.credential_seed, &t.id),
            )
            .await
            .with_context(|| format!("cannot enroll {}", t.id))?;
        }
        eprintln!(
            "enrolled {} devices in {}",
            args.devices,
            cutover_store::redact_url(url)
        );
    }
    let fleet = SimFleet::start(&args)?;
    eprintln!(
        "{} simulated devices on {} connections to {}; Ctrl-C to stop",
        args.devices, args.connections, args.mqtt_url
    );
    let started = Instant::now();
    match args.duration_s {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => {
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
        }
    }
    let m = fleet.metrics();
    fleet.stop().await;
    if matches!(global.output, OutputFormat::Json) {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!(
            "{} devices, {:.1} s: {} commands, {} succeeded, {} failed, {} rolled back; \
             error rate {:.1} %; boot time p50 {} ms, p99 {} ms; {} messages sent ({} re-sent)",
            m.devices,
            started.elapsed().as_secs_f64(),
            m.commands,
            m.succeeded,
            m.failed,
            m.rolled_back,
            m.error_rate * 100.0,
            m.boot_ms_p50,
            m.boot_ms_p99,
            m.messages_sent,
            m.resent
        );
    }
    Ok(0)
}
