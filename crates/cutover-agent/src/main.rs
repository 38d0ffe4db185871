//! `cutover-agent`: runs on a device or a host, receives commands over MQTT
//! (or HTTP polling), installs signed firmware on A/B slots (`kind: device`)
//! or application bundles as releases (`kind: host`) and reports.
//!
//! Usage: `cutover-agent --config /etc/cutover/agent.yaml`, or
//! `cutover-agent --config FILE status` to print the slots (or releases) and
//! exit; `cutover-agent host-daemon --deployments-dir DIR` runs the per-host
//! daemon a host agent starts when none answers.

use anyhow::Context;
use cutover_agent::device::agent::{Agent, Device, Identity};
use cutover_agent::device::mqtt::{Listen, MqttSettings, run_connection};
use cutover_agent::device::slot_device::{SlotDevice, settle_orphan_boot};
use cutover_agent::device::{AgentConfig, mac, poll};
use cutover_agent::host::HostDevice;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: cutover-agent --config FILE [run|status]\n       \
     cutover-agent host-daemon --deployments-dir DIR [--bind-host ADDR] [--keep-warm SECONDS]\n       \
     cutover-agent --version";

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

/// `host-daemon --deployments-dir DIR [--bind-host ADDR] [--keep-warm SECONDS]`.
async fn host_daemon(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut dir: Option<PathBuf> = None;
    let mut bind_host = "127.0.0.1".to_string();
    let mut keep_warm = 300u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--deployments-dir" => {
                dir = Some(
                    args.next()
                        .context("--deployments-dir needs a directory")?
                        .into(),
                )
            }
            "--bind-host" => bind_host = args.next().context("--bind-host needs an address")?,
            "--keep-warm" => {
                keep_warm = args
                    .next()
                    .context("--keep-warm needs seconds")?
                    .parse()
                    .context("--keep-warm needs whole seconds")?
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let dir = dir.context("host-daemon needs --deployments-dir")?;
    cutover_agent::host::daemon::run(&dir, &bind_host, Duration::from_secs(keep_warm))
        .await
        .with_context(|| format!("host daemon in {} failed", dir.display()))
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("host-daemon") {
        args.next();
        return host_daemon(args).await;
    }
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
    if cfg.is_host() {
        let host = cfg.host.clone().context("host section")?;
        let launcher = HostDevice::own_launcher(&host).map_err(anyhow::Error::msg)?;
        let device = HostDevice::open(cfg.clone(), launcher)
            .map_err(anyhow::Error::msg)
            .context("opening the host's deployments")?;
        if command == "status" {
            println!(
                "{}",
                serde_json::json!({
                    "target": cfg.target_id,
                    "kind": "host",
                    "app": host.app,
                    "running_version": device.running_version(),
                    "current": device.current_release(),
                    "releases": device.slots(),
                })
            );
            return Ok(());
        }
        return serve(cfg, device).await;
    }
    let device = SlotDevice::open(cfg.clone())
        .map_err(anyhow::Error::msg)
        .context("opening the slots")?;
    if command == "status" {
        println!(
            "{}",
            serde_json::json!({
                "target": cfg.target_id,
                "running_version": device.running_version(),
                "slots": device.slots(),
                "last_fallback": device.last_fallback(),
            })
        );
        return Ok(());
    }
    settle_orphan_boot(&device).await;
    serve(cfg, device).await
}

/// Runs the agent's state machine over MQTT, or HTTP polling without a broker.
async fn serve<D: Device>(cfg: AgentConfig, device: D) -> anyhow::Result<()> {
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
            Listen::Own,
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
