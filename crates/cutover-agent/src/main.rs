//! `cutover-agent`: runs on a device, receives commands over MQTT (or HTTP
//! polling), installs signed firmware on A/B slots and reports.
//!
//! Usage: `cutover-agent --config /etc/cutover/agent.yaml`, or
//! `cutover-agent --config FILE status` to print the slots and exit.

use anyhow::Context;
use cutover_agent::device::agent::{Agent, Identity};
use cutover_agent::device::mqtt::{MqttSettings, run_connection};
use cutover_agent::device::slot_device::{SlotDevice, settle_orphan_boot};
use cutover_agent::device::{AgentConfig, mac, poll};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str =
    "usage: cutover-agent --config FILE [run|status]\n       cutover-agent --version";

fn main() -> std::process::ExitCode {
    let filter = std::env::var("CUTOVER_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config: Option<PathBuf> = None;
    let mut command = "run".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                config = Some(args.next().context("--config needs a file")?.into())
            }
            "--version" | "-V" => {
                println!("cutover-agent {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            "run" | "status" => command = a,
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let path = config
        .or_else(|| std::env::var_os("CUTOVER_AGENT_CONFIG").map(PathBuf::from))
        .context(USAGE)?;
    let cfg = AgentConfig::load(&path)?;
    let device = SlotDevice::open(cfg.clone())
        .map_err(anyhow::Error::msg)
        .context("opening the slots")?;
    if command == "status" {
        println!(
            "{}",
            serde_json::json!({
                "target": cfg.target_id,
                "running_version": cutover_agent::device::Device::running_version(&device),
                "slots": cutover_agent::device::Device::slots(&device),
                "last_fallback": device.last_fallback(),
            })
        );
        return Ok(());
    }
    settle_orphan_boot(&device).await;
    let identity = Identity {
        target: cfg.target_id.clone(),
        key: mac::target_key(&cfg.credential),
        kind: cfg.kind.clone(),
        environment: cfg.environment.clone(),
        hardware_model: cfg.hardware_model.clone(),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = Agent::new(
        identity,
        Arc::new(device),
        tx,
        Duration::from_millis(cfg.resend_ms),
    );
    agent.start();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        let _ = stop_tx.send(true);
    });
    tracing::info!(target = cfg.target_id, "agent started");
    if let Some(url) = &cfg.mqtt_url {
        let mut settings = MqttSettings::new(url, &format!("cutover-agent-{}", cfg.target_id));
        settings.username = cfg.mqtt_username.clone();
        settings.password = cfg.mqtt_password.clone();
        if let Some(ca) = &cfg.mqtt_ca_file {
            settings.ca_pem =
                Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
        }
        let agents = Arc::new(HashMap::from([(cfg.target_id.clone(), agent)]));
        run_connection(
            settings,
            agents,
            rx,
            Duration::from_secs(cfg.heartbeat_s),
            stop_rx,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    } else {
        let server = cfg
            .server_url
            .clone()
            .context("server_url is needed without mqtt_url")?;
        poll::run_polling(
            server,
            cfg.credential.clone(),
            agent,
            rx,
            Duration::from_millis(cfg.poll_interval_ms),
            stop_rx,
        )
        .await;
    }
    Ok(())
}
