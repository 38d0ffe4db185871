//! Shared fixture of the fleet tests: a SQLite store, the fleet plane with its
//! broker, an HTTP server on 127.0.0.1:0, signed artifacts, and real
//! `cutover-agent` processes with slot directories.
#![allow(dead_code)]

use cutover_core::engine::RolloutSpec;
use cutover_server::fleet::{FleetPlane, FleetSettings, artifacts, enroll_target};
use cutover_store::{NewExecution, NewPlan, NewTarget, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const CREDENTIAL_PREFIX: &str = "credential-of-";
/// The replica name of the fixture's orchestrator (a restarted server keeps it).
pub const OWNER: &str = "replica-test";

/// The agent binary, built once per test run.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "cutover-agent",
                "--bin",
                "cutover-agent",
            ])
            .status()
            .expect("running cargo build for the agent");
        assert!(status.success(), "building cutover-agent failed");
        let exe = std::env::current_exe().expect("test exe path");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        dir.join("cutover-agent")
    })
    .clone()
}

/// Which broker a test runs against.
#[derive(Debug, Clone)]
pub enum Broker {
    Embedded,
    External(String),
}

/// The external broker for CI, or None (skipping) outside CI.
pub fn external_broker() -> Option<String> {
    match std::env::var("CUTOVER_TEST_MQTT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but CUTOVER_TEST_MQTT_URL is not set: the Mosquitto stories must run"
                );
            }
            eprintln!("note: CUTOVER_TEST_MQTT_URL unset; skipping the Mosquitto variant");
            None
        }
    }
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub plane: FleetPlane,
    pub http_url: String,
    pub key: ed25519_dalek::SigningKey,
    pub public_hex: String,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub agents: Vec<AgentProc>,
}

pub struct AgentProc {
    pub id: String,
    pub config: PathBuf,
    pub slot_dir: PathBuf,
    pub child: Option<Child>,
}

impl AgentProc {
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.slot_dir.with_extension("log")).expect("agent log");
        let child = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("CUTOVER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting cutover-agent");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `cutover-agent status`: the slots as the device sees them after a power-on.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("status")
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.slot_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Fleet {
    pub async fn start(broker: Broker) -> Fleet {
        Fleet::start_with(broker, |_| {}).await
    }

    /// Like `start`, with the fleet plane's settings changed by `tweak` first.
    pub async fn start_with(broker: Broker, tweak: impl FnOnce(&mut FleetSettings)) -> Fleet {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
        let store = Store::connect(&url).await.expect("store");
        let now = chrono::Utc::now();
        store
            .upsert_environment(&cutover_store::EnvironmentRow {
                name: "staging".into(),
                position: 2,
                approval_required: false,
                required_approvals: 0,
                auto_rollback: true,
                max_concurrent_deployments: None,
                config: serde_json::json!({}),
                created_at: now,
                updated_at: now,
            })
            .await
            .expect("environment");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut settings = FleetSettings {
            artifact_dir: dir.path().join("artifacts"),
            mqtt_url: match &broker {
                Broker::Embedded => None,
                Broker::External(u) => Some(u.clone()),
            },
            owner: OWNER.into(),
            resend_ms: 1000,
            claim_interval_ms: 200,
            ..Default::default()
        };
        tweak(&mut settings);
        let plane = FleetPlane::start(settings, store.clone(), stop_rx)
            .await
            .expect("fleet plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let http_url = format!("http://{}", listener.local_addr().expect("addr"));
        let router = plane.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let pair = artifacts::keygen();
        let key = artifacts::parse_secret(&pair.secret_hex).expect("key");
        Fleet {
            dir,
            store,
            plane,
            http_url,
            key,
            public_hex: pair.public_hex,
            stop,
            agents: Vec::new(),
        }
    }

    /// Uploads `bytes` as `version` over HTTP, signed with `key` (or the fleet's key).
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        version: &str,
        key: Option<&ed25519_dalek::SigningKey>,
    ) -> String {
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let key = key.unwrap_or(&self.key);
        let sig = artifacts::sign(key, &sha, version);
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/api/artifacts/upload?version={version}&hardware=board-x&signature={sig}",
                self.http_url
            ))
            .body(bytes)
            .send()
            .await
            .expect("upload");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "upload: {}",
            resp.text().await.unwrap_or_default()
        );
        let row: serde_json::Value = resp.json().await.expect("artifact json");
        row["id"].as_str().expect("artifact id").to_string()
    }

    /// Enrolls a target and writes its agent config; `extra` is appended YAML.
    pub async fn add_agent(&mut self, id: &str, extra: &str) -> usize {
        self.add_agent_with(id, extra, true).await
    }

    /// Enrolls a `board-x` device on 1.0.0 in staging; returns its credential.
    pub async fn enroll(&self, id: &str) -> String {
        let credential = format!("{CREDENTIAL_PREFIX}{id}-0123456789");
        enroll_target(
            &self.store,
            &NewTarget {
                id: id.into(),
                name: id.into(),
                environment: "staging".into(),
                kind: "device".into(),
                hardware_model: Some("board-x".into()),
                current_version: Some("1.0.0".into()),
                ..Default::default()
            },
            &credential,
        )
        .await
        .expect("enroll");
        credential
    }

    /// Like `add_agent`; without `mqtt` the agent polls over HTTP.
    pub async fn add_agent_with(&mut self, id: &str, extra: &str, mqtt: bool) -> usize {
        let credential = self.enroll(id).await;
        let slot_dir = self.dir.path().join(format!("dev-{id}"));
        let config = self.dir.path().join(format!("{id}.yaml"));
        let text = format!(
            "target_id: {id}\nenvironment: staging\nhardware_model: board-x\ncredential: {credential}\n\
             {}server_url: {}\nslot_dir: {}\npublic_keys: [\"{}\"]\nfactory_version: 1.0.0\n\
             resend_ms: 500\nmax_boot_tries: 2\n{extra}",
            if mqtt {
                // Agents take the embedded broker's mqtts listener when it has one.
                let url = self
                    .plane
                    .tls_broker_url()
                    .unwrap_or(self.plane.broker_url());
                format!("mqtt_url: {url}\n")
            } else {
                "poll_interval_ms: 200\n".to_string()
            },
            self.http_url,
            slot_dir.display(),
            self.public_hex
        );
        std::fs::write(&config, text).expect("config");
        self.agents.push(AgentProc {
            id: id.into(),
            config,
            slot_dir,
            child: None,
        });
        self.agents.len() - 1
    }

    /// Creates an approved plan and a pending execution over `targets`, and wakes the orchestrator.
    pub async fn execute(
        &self,
        artifact_id: &str,
        version: &str,
        spec: RolloutSpec,
        targets: &[&str],
    ) -> String {
        self.execute_with(artifact_id, version, spec, targets, serde_json::json!({}))
            .await
    }

    /// Like `execute`, with `extra` merged into the execution's spec (e.g. `gates`).
    pub async fn execute_with(
        &self,
        artifact_id: &str,
        version: &str,
        spec: RolloutSpec,
        targets: &[&str],
        extra: serde_json::Value,
    ) -> String {
        let plan = self
            .store
            .insert_plan(&NewPlan {
                id: None,
                name: format!("roll {version}"),
                artifact_id: Some(artifact_id.into()),
                version: version.into(),
                source_environment: None,
                target_environment: "staging".into(),
                strategy: spec.strategy.name().into(),
                spec: serde_json::json!({}),
                status: "executing".into(),
                created_by: "test".into(),
            })
            .await
            .expect("plan");
        let ids: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        let mut waves = Vec::new();
        let mut start = 0usize;
        for end in spec.wave_ends(ids.len() as u32) {
            waves.push(ids[start..end as usize].to_vec());
            start = end as usize;
        }
        let exec = self
            .store
            .insert_execution(&NewExecution {
                id: None,
                plan_id: plan.id.clone(),
                environment: "staging".into(),
                status: "pending".into(),
                spec: {
                    let mut s = serde_json::json!({
                        "plan_id": plan.id, "version": version, "artifact_id": artifact_id,
                        "rollout": spec, "targets": ids,
                    });
                    if let (Some(s), serde_json::Value::Object(extra)) = (s.as_object_mut(), extra)
                    {
                        s.extend(extra);
                    }
                    s
                },
                state: serde_json::Value::Null,
                waves,
                created_by: "test".into(),
            })
            .await
            .expect("execution");
        self.plane.wake(&exec.id);
        exec.id
    }

    /// Appends an operator command (`resume`, `rollback`, …) to the execution's
    /// event log, as the API does, and wakes the orchestrator.
    pub async fn operator(&self, exec_id: &str, command: &str) {
        let events = self
            .store
            .load_execution_events(exec_id, 0)
            .await
            .expect("events");
        let seq = events.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
        self.store
            .commit_step(&cutover_store::StepBatch {
                execution_events: vec![cutover_store::NewExecutionEvent {
                    execution_id: exec_id.into(),
                    seq,
                    kind: "operator".into(),
                    payload: serde_json::json!({"type": "operator", "command": command, "by": "test"}),
                    at: chrono::Utc::now(),
                }],
                ..Default::default()
            })
            .await
            .expect("operator event");
        self.plane.wake(exec_id);
    }

    /// Waits until the execution has `status`; panics on a final status or after `within`.
    pub async fn wait_status(&self, exec_id: &str, status: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let e = self.store.get_execution(exec_id).await.expect("execution");
            if e.status == status {
                return;
            }
            let fin = ["succeeded", "failed", "rolled_back", "canceled"];
            assert!(
                !fin.contains(&e.status.as_str()) && Instant::now() < deadline,
                "execution {exec_id} is {} while waiting for {status}: {}",
                e.status,
                e.state
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the execution is finished; returns its status.
    pub async fn finish(&self, exec_id: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let e = self.store.get_execution(exec_id).await.expect("execution");
            if ["succeeded", "failed", "rolled_back", "canceled"].contains(&e.status.as_str()) {
                if e.status != "succeeded" {
                    // Shown only when the test fails: why it ended this way.
                    self.explain(exec_id, &e.status).await;
                }
                return e.status;
            }
            if Instant::now() > deadline {
                self.explain(exec_id, &e.status).await;
                panic!("execution {exec_id} still {} after {within:?}", e.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints an execution's events other than successes, every agent's log
    /// and each host daemon's log to the test's captured output, which the
    /// harness shows when the test fails.
    async fn explain(&self, exec_id: &str, status: &str) {
        let events = self
            .store
            .list_action_events(exec_id, None)
            .await
            .unwrap_or_default();
        eprintln!("execution {exec_id} is {status}");
        for e in events.iter().filter(|e| e.kind != "succeeded") {
            eprintln!("  {} {} {}", e.target_id, e.kind, e.detail);
        }
        for a in &self.agents {
            eprintln!("--- {}\n{}", a.id, a.log());
            // A host agent's daemon logs beside its releases.
            let daemon = a
                .slot_dir
                .with_file_name("deployments")
                .join(".cutover-host/host.log");
            if let Ok(log) = std::fs::read_to_string(&daemon) {
                eprintln!("--- {} host daemon\n{log}", a.id);
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub fn firmware(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn slot_len(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(name))
        .map(|m| m.len())
        .unwrap_or(0)
}
