//! `cutover bench fleet`: the server's fleet plane (store, orchestrator,
//! broker) and the fleet simulator in one process. A rolling rollout in 10
//! waves over N simulated devices, timed end to end; the broker's raw QoS 1
//! rate measured in the same run so the result is a ratio; and the abort
//! reaction: from the failure report that crosses the error threshold
//! leaving a device to the first rollback command reaching a device.

use crate::cmd::GlobalArgs;
use crate::cmd::fleet::sim::{FailStage, FleetSimArgs, SimFleet, credential, targets};
use crate::output::OutputFormat;
use anyhow::Context;
use clap::Args;
use cutover_agent::device::mqtt::rumqttc::{Event, Packet, QoS};
use cutover_core::engine::{RolloutSpec, Strategy, Threshold};
use cutover_server::fleet::{FleetPlane, FleetSettings, artifacts, enroll_targets};
use cutover_store::{NewArtifact, NewExecution, NewPlan, Store};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u32,
    /// The store (default: a SQLite file in a temporary directory).
    #[arg(long)]
    pub database: Option<String>,
    /// An external broker (default: the embedded one).
    #[arg(long)]
    pub mqtt_url: Option<String>,
    /// MQTT connections of the simulated fleet.
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// Abort rollouts measured for the reaction time.
    #[arg(long, default_value_t = 5)]
    pub abort_runs: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Reports the orchestrator reads before it steps the engine (the
    /// server's default unless given): smaller reacts sooner, larger costs
    /// less per report.
    #[arg(long)]
    pub batch_max: Option<usize>,
}

#[derive(Debug, serde::Serialize)]
struct Line {
    devices: u32,
    succeeded: u64,
    wall_s: f64,
    msgs_per_s: f64,
    broker_raw_msgs_per_s: f64,
    broker_ratio: f64,
    abort_reaction_p99_ms: f64,
    abort_samples: usize,
    /// Reports the devices sent again for want of an acknowledgement, and
    /// commands they received again, during the timed rollout: how much of
    /// the traffic was repetition.
    device_resends: u64,
    repeated_commands: u64,
    backend: String,
    broker: String,
}

pub async fn run(args: FleetBenchArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let json = args.json || matches!(global.output, OutputFormat::Json);
    if args.devices < 10 {
        anyhow::bail!("--devices must be at least 10 (ten waves)");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let db = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = Store::connect(&db)
        .await
        .with_context(|| format!("cannot open {}", cutover_store::redact_url(&db)))?;
    let env = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let now = chrono::Utc::now();
    store
        .upsert_environment(&cutover_store::EnvironmentRow {
            name: env.clone(),
            position: 9,
            approval_required: false,
            required_approvals: 0,
            auto_rollback: true,
            max_concurrent_deployments: None,
            config: serde_json::json!({}),
            created_at: now,
            updated_at: now,
        })
        .await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let settings = FleetSettings {
        artifact_dir: dir.path().join("artifacts"),
        mqtt_url: args.mqtt_url.clone(),
        claim_interval_ms: 100,
        ..Default::default()
    };
    let settings = FleetSettings {
        batch_max: args.batch_max.unwrap_or(settings.batch_max),
        ..settings
    };
    let plane = FleetPlane::start(settings, store.clone(), stop_rx).await?;
    let broker = plane.broker_url().to_string();

    // The broker's raw QoS 1 rate, same machine, same run.
    let raw = raw_broker_rate(&broker, args.devices.clamp(10_000, 200_000)).await?;

    let prefix = format!("b{}", &env[6..14]);
    let sim_args = FleetSimArgs {
        devices: args.devices,
        environment: env.clone(),
        failure_rate: 0.0,
        fail_stage: FailStage::Health,
        latency_ms: 0,
        mqtt_url: broker.clone(),
        connections: args.connections,
        prefix: prefix.clone(),
        credential_seed: "bench".into(),
        enroll_database: None,
        initial_version: "1.0.0".into(),
        hardware_model: "sim-board".into(),
        duration_s: None,
    };
    enroll_targets(
        &store,
        targets(&sim_args).into_iter().map(|t| {
            let c = credential("bench", &t.id);
            (t, c)
        }),
    )
    .await?;
    let ids: Vec<String> = targets(&sim_args).into_iter().map(|t| t.id).collect();
    let fleet = SimFleet::start(&sim_args)?;
    let art = artifact(&plane, &store, "2.0.0").await?;
    settle(&fleet, Duration::from_secs(120)).await?;

    // The rolling rollout in 10 waves.
    let mut spec = RolloutSpec::new(Strategy::Rolling {
        batch_size: Threshold::Count(args.devices.div_ceil(10)),
    });
    spec.min_finished_for_error_rate = 10;
    let before = fleet.metrics();
    let started = Instant::now();
    let exec = execute(&store, &plane, &env, &art, spec, &ids).await?;
    let status = wait(&store, &exec, Duration::from_secs(args.timeout_s)).await?;
    let wall = started.elapsed().as_secs_f64();
    let after = fleet.metrics();
    let messages = (after.messages_sent - before.messages_sent)
        + (after.messages_received - before.messages_received);
    let msgs_per_s = messages as f64 / wall;
    let succeeded = store
        .list_actions(&exec)
        .await?
        .iter()
        .filter(|a| a.status == "succeeded")
        .count() as u64;
    if status != "succeeded" {
        anyhow::bail!("the benchmark rollout ended {status}, not succeeded");
    }

    // Abort reaction: a first failure aborts (error threshold 0), over the
    // first 1,000 devices made to fail at health by a second simulated fleet.
    let mut samples = Vec::new();
    let abort_n = args.devices.min(1000);
    let abort_args = FleetSimArgs {
        devices: abort_n,
        failure_rate: 0.2,
        prefix: format!("{prefix}a"),
        ..sim_args.clone()
    };
    enroll_targets(
        &store,
        targets(&abort_args).into_iter().map(|t| {
            let c = credential("bench", &t.id);
            (t, c)
        }),
    )
    .await?;
    let abort_ids: Vec<String> = targets(&abort_args).into_iter().map(|t| t.id).collect();
    let abort_fleet = SimFleet::start(&abort_args)?;
    settle(&abort_fleet, Duration::from_secs(60)).await?;
    for r in 0..args.abort_runs {
        let art = artifact(&plane, &store, &format!("3.0.{r}")).await?;
        let mut spec = RolloutSpec::new(Strategy::Immediate);
        spec.error_threshold = Threshold::Count(0);
        spec.min_finished_for_error_rate = 1;
        let exec = execute(&store, &plane, &env, &art, spec, &abort_ids).await?;
        wait(&store, &exec, Duration::from_secs(args.timeout_s)).await?;
        if let Some(d) = abort_fleet.abort_reaction(&exec) {
            samples.push(d.as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let p99 = samples
        .get(((samples.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN);

    let line = Line {
        devices: args.devices,
        succeeded,
        wall_s: wall,
        msgs_per_s,
        broker_raw_msgs_per_s: raw,
        broker_ratio: msgs_per_s / raw,
        abort_reaction_p99_ms: p99,
        abort_samples: samples.len(),
        device_resends: after.resent - before.resent,
        repeated_commands: after.duplicates - before.duplicates,
        backend: format!("{:?}", store.backend()).to_lowercase(),
        broker: if args.mqtt_url.is_some() {
            "external".into()
        } else {
            "embedded".into()
        },
    };
    fleet.stop().await;
    abort_fleet.stop().await;
    let _ = stop.send(true);
    if json {
        println!("{}", serde_json::to_string(&line)?);
    } else {
        println!(
            "{} devices, rolling in 10 waves on {} with the {} broker: {} succeeded in {:.2} s; \
             {:.0} msgs/s = {:.2} of the broker's raw QoS 1 rate ({:.0} msgs/s); abort reaction p99 {:.1} ms over {} aborts",
            line.devices,
            line.backend,
            line.broker,
            line.succeeded,
            line.wall_s,
            line.msgs_per_s,
            line.broker_ratio,
            line.broker_raw_msgs_per_s,
            line.abort_reaction_p99_ms,
            line.abort_samples
        );
    }
    Ok(0)
}

async fn artifact(plane: &FleetPlane, store: &Store, version: &str) -> anyhow::Result<String> {
    let pair = artifacts::keygen();
    let key = artifacts::parse_secret(&pair.secret_hex)?;
    let (sha, size) = plane
        .blobs()
        .put(format!("bench firmware {version}").as_bytes())?;
    let row = store
        .insert_artifact(&NewArtifact {
            version: version.into(),
            kind: "firmware".into(),
            sha256: sha.clone(),
            size_bytes: size as i64,
            signature: Some(artifacts::sign(&key, &sha, version)),
            compatible_hardware: vec!["sim-board".into()],
            metadata: serde_json::json!({}),
            ..Default::default()
        })
        .await?;
    Ok(row.id)
}

async fn execute(
    store: &Store,
    plane: &FleetPlane,
    env: &str,
    artifact_id: &str,
    spec: RolloutSpec,
    ids: &[String],
) -> anyhow::Result<String> {
    let plan = store
        .insert_plan(&NewPlan {
            name: "bench".into(),
            artifact_id: Some(artifact_id.into()),
            version: "bench".into(),
            target_environment: env.into(),
            strategy: spec.strategy.name().into(),
            spec: serde_json::json!({}),
            status: "executing".into(),
            created_by: "bench".into(),
            ..Default::default()
        })
        .await?;
    let mut waves = Vec::new();
    let mut start = 0usize;
    for end in spec.wave_ends(ids.len() as u32) {
        waves.push(ids[start..end as usize].to_vec());
        start = end as usize;
    }
    let exec = store
        .insert_execution(&NewExecution {
            plan_id: plan.id,
            environment: env.into(),
            status: "pending".into(),
            spec: serde_json::json!({"artifact_id": artifact_id, "rollout": spec, "targets": ids}),
            waves,
            created_by: "bench".into(),
            ..Default::default()
        })
        .await?;
    plane.wake(&exec.id);
    Ok(exec.id)
}

/// Waits until every simulated device has its hello acknowledged, so the
/// timed rollout does not share the broker with the fleet connecting. A
/// device that has heard nothing yet may not have said hello at all.
async fn settle(fleet: &SimFleet, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let waiting = fleet
            .agents
            .iter()
            .filter(|a| a.unacked() > 0 || a.stats().received == 0)
            .count();
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{waiting} of {} simulated devices still wait for their hello to be acknowledged after {within:?}",
                fleet.agents.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait(store: &Store, exec: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        // The status alone: the row's spec lists every device.
        let status = store.execution_status(exec).await?;
        if ["succeeded", "failed", "rolled_back", "canceled"].contains(&status.as_str()) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            anyhow::bail!("execution {exec} still {status} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Messages per second from one QoS 1 publisher to one subscriber through the broker.
async fn raw_broker_rate(url: &str, n: u32) -> anyhow::Result<f64> {
    let mk = |id: &str, capacity| {
        let mut s = cutover_agent::device::mqtt::MqttSettings::new(url, id);
        s.inflight = 1000;
        s.client(capacity).map_err(anyhow::Error::msg)
    };
    let topic = format!("cutover/bench/raw/{}", uuid::Uuid::new_v4().simple());
    let (sub, mut sub_loop) = mk("bench-raw-sub", 10_000)?;
    sub.subscribe(&topic, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let (publ, mut pub_loop) = mk("bench-raw-pub", 10_000)?;
    let pub_task = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let payload = vec![b'x'; 200];
    let started = Instant::now();
    let t = topic.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            if publ
                .publish(&t, QoS::AtLeastOnce, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut got = 0u32;
    let deadline = started + Duration::from_secs(60);
    while got < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), sub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => got += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("raw broker measurement: {e}"),
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    sender.abort();
    pub_task.abort();
    Ok(f64::from(got) / elapsed)
}
