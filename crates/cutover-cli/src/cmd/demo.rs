//! `cutover demo`: one command, nothing to set up. It starts the whole system
//! in this process (the API server on SQLite, the embedded MQTT broker, the
//! fleet plane), simulates a fleet of devices across development, staging and
//! production, and tells a rollout story through the REST API: firmware 1.1.0
//! signed, uploaded and canaried to staging, promoted to production with an
//! approval, then 1.2.0 with a fault that trips automatic rollback. It then
//! keeps serving so the API can be tried by hand.

use super::GlobalArgs;
use anyhow::Context;
use clap::Args;
use cutover_agent::device::agent::{Agent, Device, Failure, Identity, JobRecord, Outgoing};
use cutover_agent::device::mac;
use cutover_agent::device::mqtt::{Listen, MqttSettings, run_connection};
use cutover_agent::device::sim::{SimDevice, SimProfile};
use cutover_core::protocol::{ArtifactRef, FailedStep, Health, SlotInfo};
use cutover_server::auth::Role;
use cutover_server::fleet::{FleetPlane, FleetSettings, ProgressEvent, artifacts, enroll_target};
use cutover_server::settings::{RateLimitSettings, ServerSettings};
use cutover_store::{NewTarget, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated devices, spread over development, staging and production.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Keep the database, keys and artifacts here (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stop once the story is told instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
}

/// The port the demo prefers for the API, the seed's default.
const PREFERRED_PORT: u16 = 5001;
/// The hardware model of every simulated device.
const HARDWARE: &str = "sim-board";
/// The version every simulated device runs at start.
const FACTORY_VERSION: &str = "1.0.0";
/// The version the simulated devices cannot confirm after booting it.
const FAULTY_VERSION: &str = "1.2.0";
/// Each execution must end within this.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// A simulated device that behaves like [`SimDevice`] except that some
/// versions never pass their health check after boot: the fault the story's
/// last act rolls back.
struct DemoDevice {
    inner: SimDevice,
    faulty: Arc<HashSet<String>>,
    staged: Mutex<Option<String>>,
}

impl Device for DemoDevice {
    type Fetched = ();

    fn running_version(&self) -> String {
        self.inner.running_version()
    }

    fn slots(&self) -> Vec<SlotInfo> {
        self.inner.slots()
    }

    async fn fetch(&self, artifact: &ArtifactRef) -> Result<(), Failure> {
        self.inner.fetch(artifact).await
    }

    async fn verify(&self, artifact: &ArtifactRef, fetched: &()) -> Result<(), Failure> {
        self.inner.verify(artifact, fetched).await
    }

    async fn install(
        &self,
        artifact: &ArtifactRef,
        fetched: (),
        stage_only: bool,
    ) -> Result<(), Failure> {
        self.inner.install(artifact, fetched, stage_only).await?;
        *self.staged.lock().expect("demo device lock") = Some(artifact.version.clone());
        Ok(())
    }

    async fn boot_new(&self, job: &JobRecord) -> Result<String, Failure> {
        let staged = self.staged.lock().expect("demo device lock").take();
        if let Some(version) = staged.filter(|v| self.faulty.contains(v)) {
            // The new slot boots but never confirms; the bootloader falls back.
            self.inner.cancel().await;
            return Err(Failure::new(
                FailedStep::Health,
                format!(
                    "version {version} was not confirmed after 3 boots; fell back to {}",
                    self.inner.running_version()
                ),
            ));
        }
        self.inner.boot_new(job).await
    }

    async fn activate(&self) -> Result<(), Failure> {
        self.inner.activate().await
    }

    async fn rollback(&self, previous: Option<&str>) -> Result<String, Failure> {
        self.staged.lock().expect("demo device lock").take();
        self.inner.rollback(previous).await
    }

    async fn cancel(&self) {
        self.staged.lock().expect("demo device lock").take();
        self.inner.cancel().await
    }

    async fn resume_boot(&self, job: &JobRecord) -> Result<String, Failure> {
        self.boot_new(job).await
    }

    fn save_job(&self, job: Option<&JobRecord>) {
        self.inner.save_job(job)
    }

    fn load_job(&self) -> Option<JobRecord> {
        self.inner.load_job()
    }

    fn health(&self) -> Option<Health> {
        self.inner.health()
    }
}

/// The simulated fleet: a few shared MQTT connections, as a gateway would.
struct DemoFleet {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl DemoFleet {
    fn start(broker: &str, targets: &[NewTarget], seed: &str) -> anyhow::Result<DemoFleet> {
        let profile = Arc::new(SimProfile {
            latency: Duration::from_millis(20),
            ..SimProfile::default()
        });
        let faulty = Arc::new(HashSet::from([FAULTY_VERSION.to_string()]));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let connections = 4usize;
        let per = targets.len().div_ceil(connections).max(1);
        let mut tasks = Vec::new();
        for (c, chunk) in targets.chunks(per).enumerate() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
            let mut group = HashMap::new();
            for t in chunk {
                let identity = Identity {
                    target: t.id.clone(),
                    key: mac::target_key(&credential(seed, &t.id)),
                    kind: "device".into(),
                    environment: t.environment.clone(),
                    hardware_model: HARDWARE.into(),
                };
                let device = Arc::new(DemoDevice {
                    inner: SimDevice::new(&t.id, FACTORY_VERSION, profile.clone()),
                    faulty: faulty.clone(),
                    staged: Mutex::new(None),
                });
                let agent = Agent::new(identity, device, tx.clone(), Duration::from_secs(2));
                group.insert(t.id.clone(), agent);
            }
            let mut settings = MqttSettings::new(broker, &format!("cutover-demo-fleet-{c}"));
            settings.inflight = 1000;
            settings.options().map_err(anyhow::Error::msg)?;
            tasks.push(tokio::spawn(run_connection(
                settings,
                Arc::new(group),
                Listen::Own,
                rx,
                Duration::from_secs(60),
                stop_rx.clone(),
            )));
        }
        Ok(DemoFleet { stop, tasks })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

fn credential(seed: &str, id: &str) -> String {
    format!("{seed}-{id}")
}

/// The simulated devices: 10 % in development, 30 % in staging, the rest in production.
fn fleet_targets(devices: u32) -> Vec<NewTarget> {
    let dev = (devices / 10).max(1);
    let staging = (devices * 3 / 10).max(1);
    let production = devices.saturating_sub(dev + staging).max(1);
    let mut out = Vec::new();
    for (env, prefix, n) in [
        ("development", "dev", dev),
        ("staging", "stg", staging),
        ("production", "prod", production),
    ] {
        for i in 0..n {
            let id = format!("{prefix}-{i:04}");
            out.push(NewTarget {
                name: id.clone(),
                id,
                environment: env.into(),
                kind: "device".into(),
                hardware_model: Some(HARDWARE.into()),
                current_version: Some(FACTORY_VERSION.into()),
                ..Default::default()
            });
        }
    }
    out
}

/// The REST API as the story's steps call it.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-API-Key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path} failed"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// A call that must succeed (2xx); anything else is an error naming the route.
    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, key, body).await?;
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "{method} {path} answered {status}: {}",
                problem_text(&value)
            );
        }
        Ok(value)
    }
}

fn problem_text(v: &Value) -> String {
    v.get("detail")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Prints a line above the progress bar when there is one.
struct Screen {
    tty: bool,
}

impl Screen {
    fn say(&self, bar: Option<&ProgressBar>, line: impl AsRef<str>) {
        match bar {
            Some(b) if self.tty => b.println(line.as_ref()),
            _ => println!("{}", line.as_ref()),
        }
    }
}

pub async fn run(args: DemoArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    if args.devices < 3 {
        anyhow::bail!("--devices must be at least 3 (one per environment)");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let screen = Screen {
        tty: std::io::stdout().is_terminal(),
    };
    let temp;
    let dir: PathBuf = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create --data-dir {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let started = Instant::now();
    println!("cutover demo: data in {}", dir.display());

    // The store, the API's key secret, the fleet plane and the server.
    let database = format!("sqlite://{}", dir.join("cutover.db").display());
    let store = Store::connect(&database)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;
    let secret = cutover_server::auth::resolve_secret(Some(&dir.join("api-key.secret")), &database)
        .context("cannot read or create the api key secret")?;
    let mut settings = ServerSettings::new(secret.clone());
    // The story polls progress often; the demo's limit stays on but is roomy.
    settings.security.rate_limit = Some(RateLimitSettings {
        max_requests: 100_000,
        window: Duration::from_secs(60),
    });
    let listener = bind_api().await?;
    let addr = listener.local_addr()?;
    let (stop_fleet, fleet_shutdown) = tokio::sync::watch::channel(false);
    let plane = FleetPlane::start(
        FleetSettings {
            artifact_dir: dir.join("artifacts"),
            claim_interval_ms: 200,
            resend_ms: 1000,
            ..FleetSettings::default()
        },
        store.clone(),
        fleet_shutdown,
    )
    .await
    .context("cannot start the fleet plane (embedded mqtt broker and orchestrator)")?;
    let mut decisions = plane.progress();
    let (stop_api, mut api_shutdown) = tokio::sync::watch::channel(false);
    let server = cutover_server::Server::new(settings, store.clone()).with_fleet(&plane);
    let server_task = tokio::spawn(server.serve(listener, async move {
        let _ = api_shutdown.wait_for(|s| *s).await;
    }));
    let base = format!("http://{addr}");
    println!(
        "API on {base}, embedded mqtt broker on {}",
        plane.broker_url()
    );

    // Keys: an admin who makes the plans, and an approver for production.
    let (_, admin) = cutover_server::auth::create_key(
        &store,
        &secret,
        "demo-admin",
        Role::Admin,
        Some("demo"),
        None,
    )
    .await
    .context("cannot create the demo admin key")?;
    let (_, approver) = cutover_server::auth::create_key(
        &store,
        &secret,
        "demo-approver",
        Role::Approver,
        Some("demo"),
        None,
    )
    .await
    .context("cannot create the demo approver key")?;
    let api = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: base.clone(),
    };
    wait_healthy(&api).await?;

    // The fleet: enrolled with their own credentials, then connected.
    let seed = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let targets = fleet_targets(args.devices);
    for t in &targets {
        enroll_target(&store, t, &credential(&seed, &t.id))
            .await
            .with_context(|| format!("cannot enroll {}", t.id))?;
    }
    let fleet = DemoFleet::start(plane.broker_url(), &targets, &seed)?;
    let mut per_env: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &targets {
        *per_env.entry(t.environment.as_str()).or_default() += 1;
    }
    println!(
        "{} simulated devices running {FACTORY_VERSION}: {}",
        targets.len(),
        per_env
            .iter()
            .map(|(e, n)| format!("{n} in {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    let story = tell_story(
        &store,
        &api,
        &admin,
        &approver,
        &dir,
        &screen,
        &mut decisions,
    )
    .await;
    let ids = match story {
        Ok(ids) => ids,
        Err(e) => {
            fleet.stop().await;
            let _ = stop_fleet.send(true);
            let _ = stop_api.send(true);
            return Err(e);
        }
    };
    println!();
    println!(
        "the story took {:.1} s; cutover keeps serving:",
        started.elapsed().as_secs_f64()
    );
    println!("  API:            {base}  (web UI at {base}/)");
    println!("  admin API key:  {admin}");
    println!("  approver key:   {approver}");
    println!("try:");
    println!("  curl -s -H 'X-API-Key: {admin}' {base}/api/deployments");
    println!("  curl -s -H 'X-API-Key: {admin}' {base}/api/environments/production");
    println!(
        "  curl -s -H 'X-API-Key: {admin}' {base}/api/reports/deployment/{}",
        ids.last().map(String::as_str).unwrap_or("ID")
    );
    println!("  curl -s -H 'X-API-Key: {admin}' {base}/api/audit");
    println!("  curl -s {base}/metrics");

    if !args.exit_when_done {
        println!("Ctrl-C to stop");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
    }
    fleet.stop().await;
    let _ = stop_fleet.send(true);
    let _ = stop_api.send(true);
    match tokio::time::timeout(Duration::from_secs(5), server_task).await {
        Ok(Ok(r)) => r.context("the api server failed")?,
        Ok(Err(e)) => anyhow::bail!("the api server task failed: {e}"),
        Err(_) => eprintln!("warning: the api server did not stop within 5 s"),
    }
    Ok(0)
}

/// 127.0.0.1:5001 when it is free, any free port otherwise.
async fn bind_api() -> anyhow::Result<tokio::net::TcpListener> {
    let preferred = SocketAddr::from(([127, 0, 0, 1], PREFERRED_PORT));
    match tokio::net::TcpListener::bind(preferred).await {
        Ok(l) => Ok(l),
        Err(_) => tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot listen on a free port of 127.0.0.1"),
    }
}

async fn wait_healthy(api: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = api.http.get(format!("{}/healthz", api.base)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the api at {} did not answer /healthz within 10 s",
                api.base
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The three acts; returns the execution ids.
async fn tell_story(
    store: &Store,
    api: &Client,
    admin: &str,
    approver: &str,
    dir: &Path,
    screen: &Screen,
    decisions: &mut tokio::sync::broadcast::Receiver<ProgressEvent>,
) -> anyhow::Result<Vec<String>> {
    use reqwest::Method;
    let mut ids = Vec::new();

    // The signing key, as `cutover artifact keygen` writes it.
    let pair = artifacts::keygen();
    let key_file = dir.join("demo-signing.key");
    write_private(&key_file, &pair.secret_hex)
        .with_context(|| format!("cannot write {}", key_file.display()))?;
    std::fs::write(
        dir.join("demo-signing.key.pub"),
        format!("{}\n", pair.public_hex),
    )
    .context("cannot write the public key")?;
    let key = artifacts::parse_secret(&pair.secret_hex)?;
    println!(
        "\n== generated an ed25519 signing key {} ({})",
        artifacts::key_id(&key),
        key_file.display()
    );

    // Act 1: 1.1.0 canaried to staging.
    upload(api, admin, dir, &pair.secret_hex, "1.1.0").await?;
    let plan = api
        .ok(
            Method::POST,
            "/api/deployment-plans",
            admin,
            Some(json!({
                "name": "Staging canary v1.1.0",
                "firmware_version": "1.1.0",
                "target_environment": "staging",
                "strategy": "canary",
                "canary_percentage": 10,
                "canary_steps": [10, 50, 100],
                "bake_seconds": 1,
                "success_threshold": "95%",
                "error_threshold": "10%",
            })),
        )
        .await?;
    let plan_id = str_field(&plan, "id")?;
    println!(
        "\n== act 1: canary of 1.1.0 to staging (plan {plan_id}, status {})",
        plan["status"].as_str().unwrap_or("?")
    );
    let exec = execute(api, admin, &plan_id).await?;
    let (status, _) = follow(api, admin, &exec, "staging 1.1.0", screen, decisions).await?;
    ids.push(exec.clone());
    if status != "succeeded" {
        anyhow::bail!("the staging canary of 1.1.0 ended {status}, not succeeded");
    }
    println!("staging: 1.1.0 succeeded ({exec})");

    // Act 2: promoted to production, which needs an approval.
    let plan = api
        .ok(
            Method::POST,
            "/api/deployment-plans",
            admin,
            Some(json!({
                "name": "Production rollout v1.1.0",
                "firmware_version": "1.1.0",
                "source_environment": "staging",
                "target_environment": "production",
                "strategy": "rolling",
                "batch_size": "25%",
                "success_threshold": "95%",
                "error_threshold": "5%",
            })),
        )
        .await?;
    let plan_id = str_field(&plan, "id")?;
    println!(
        "\n== act 2: promote 1.1.0 from staging to production (plan {plan_id}, status {})",
        plan["status"].as_str().unwrap_or("?")
    );
    let (code, refused) = api
        .call(
            Method::POST,
            "/api/deployments/execute",
            admin,
            Some(json!({"plan_id": plan_id})),
        )
        .await?;
    println!(
        "executing before approval: {code} {}",
        problem_text(&refused)
    );
    let (code, refused) = api
        .call(
            Method::POST,
            &format!("/api/deployment-plans/{plan_id}/approve"),
            admin,
            Some(json!({"comment": "my own plan"})),
        )
        .await?;
    println!(
        "the plan's creator approving it: {code} {}",
        problem_text(&refused)
    );
    let approved = api
        .ok(
            Method::POST,
            &format!("/api/deployment-plans/{plan_id}/approve"),
            approver,
            Some(json!({"comment": "staging canary looked good"})),
        )
        .await?;
    println!(
        "approved by demo-approver: {} of {} approvals, plan {}",
        approved["approvals_counted"],
        approved["approvals_needed"],
        approved["plan"]["status"].as_str().unwrap_or("?")
    );
    let exec = execute(api, admin, &plan_id).await?;
    let (status, _) = follow(api, admin, &exec, "production 1.1.0", screen, decisions).await?;
    ids.push(exec.clone());
    if status != "succeeded" {
        anyhow::bail!("the production rollout of 1.1.0 ended {status}, not succeeded");
    }
    println!("production: 1.1.0 succeeded ({exec})");

    // Act 3: 1.2.0 never confirms its boot; the canary trips automatic rollback.
    upload(api, admin, dir, &pair.secret_hex, FAULTY_VERSION).await?;
    let plan = api
        .ok(
            Method::POST,
            "/api/deployment-plans",
            admin,
            Some(json!({
                "name": "Staging canary v1.2.0",
                "firmware_version": FAULTY_VERSION,
                "target_environment": "staging",
                "strategy": "canary",
                "canary_percentage": 20,
                "canary_steps": [20, 100],
                "bake_seconds": 1,
                "error_threshold": "10%",
            })),
        )
        .await?;
    let plan_id = str_field(&plan, "id")?;
    println!(
        "\n== act 3: canary of {FAULTY_VERSION} to staging; its new slot never passes health (plan {plan_id})"
    );
    let exec = execute(api, admin, &plan_id).await?;
    let (status, said) = follow(api, admin, &exec, "staging 1.2.0", screen, decisions).await?;
    ids.push(exec.clone());
    if status != "rolled_back" {
        anyhow::bail!("the faulty {FAULTY_VERSION} canary ended {status}, not rolled_back");
    }
    println!("staging: {FAULTY_VERSION} rolled back automatically ({exec})");
    match said.iter().find(|d| d.contains("aborted")) {
        Some(d) => println!("rollback reason: {d}"),
        None => println!("rollback reason: not seen on the progress stream; see the report"),
    }
    // What the devices said when they failed, as their status reports recorded it.
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for e in store.list_action_events(&exec, None).await? {
        if e.kind == "failed"
            && let Some(r) = e.detail["reason"].as_str()
        {
            *reasons.entry(r.to_string()).or_default() += 1;
        }
    }
    for (reason, n) in reasons.iter().take(3) {
        println!("  {n} device(s) reported: {reason}");
    }
    let environment = api
        .ok(Method::GET, "/api/environments/staging", admin, None)
        .await?;
    println!("staging now runs: {}", environment["versions"]);
    Ok(ids)
}

async fn upload(
    api: &Client,
    admin: &str,
    dir: &Path,
    secret_hex: &str,
    version: &str,
) -> anyhow::Result<()> {
    let key = &artifacts::parse_secret(secret_hex)?;
    // A firmware image: 256 KiB of bytes that differ per version.
    let file = dir.join(format!("firmware-{version}.bin"));
    let mut bytes = Vec::with_capacity(256 * 1024);
    let mut x: u32 = version.bytes().fold(2_166_136_261, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    while bytes.len() < 256 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&file, &bytes).with_context(|| format!("cannot write {}", file.display()))?;
    let (sha256, size) =
        artifacts::digest_file(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let signature = artifacts::sign(key, &sha256, version);
    let mut url = reqwest::Url::parse(&format!("{}/api/artifacts/upload", api.base))?;
    url.query_pairs_mut()
        .append_pair("version", version)
        .append_pair("kind", "firmware")
        .append_pair("hardware", HARDWARE)
        .append_pair("signature", &signature)
        .append_pair("key_id", &artifacts::key_id(key));
    let resp = api
        .http
        .post(url)
        .header("X-API-Key", admin)
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot upload firmware {version}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() == 409 {
        println!("firmware {version} was already uploaded to this data directory");
        return Ok(());
    }
    if !status.is_success() {
        anyhow::bail!(
            "uploading firmware {version} answered {status}: {}",
            problem_text(&body)
        );
    }
    println!(
        "signed and uploaded firmware {version}: {size} bytes, sha256 {}…, artifact {}",
        &sha256[..16],
        body["id"].as_str().unwrap_or("?")
    );
    Ok(())
}

async fn execute(api: &Client, admin: &str, plan_id: &str) -> anyhow::Result<String> {
    let exec = api
        .ok(
            reqwest::Method::POST,
            "/api/deployments/execute",
            admin,
            Some(json!({"plan_id": plan_id})),
        )
        .await?;
    str_field(&exec, "id")
}

fn str_field(v: &Value, field: &str) -> anyhow::Result<String> {
    v[field]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("the api's answer has no {field}: {v}"))
}

const TERMINAL: [&str; 4] = ["succeeded", "failed", "rolled_back", "canceled"];

/// Polls the execution over the API until it ends, with a bar on a terminal
/// and plain lines otherwise; prints the engine's decisions as they come.
async fn follow(
    api: &Client,
    admin: &str,
    exec: &str,
    label: &str,
    screen: &Screen,
    decisions: &mut tokio::sync::broadcast::Receiver<ProgressEvent>,
) -> anyhow::Result<(String, Vec<String>)> {
    let path = format!("/api/deployments/{exec}");
    let mut said = Vec::new();
    let deadline = Instant::now() + PHASE_LIMIT;
    let bar = screen.tty.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix:>18} [{bar:40.cyan/blue}] {pos:>5}/{len:5} {msg}",
            )
            .expect("a fixed template parses")
            .progress_chars("=> "),
        );
        b.set_prefix(label.to_string());
        b
    });
    let mut last_line = String::new();
    loop {
        loop {
            match decisions.try_recv() {
                Ok(ProgressEvent::Decision {
                    execution_id,
                    message,
                }) if execution_id == exec => {
                    screen.say(bar.as_ref(), format!("  · {message}"));
                    said.push(message);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let v = api.ok(reqwest::Method::GET, &path, admin, None).await?;
        let status = v["status"].as_str().unwrap_or("?").to_string();
        let p = &v["progress"];
        let n = |k: &str| p[k].as_i64().unwrap_or(0);
        let waves = v["waves"].as_array().cloned().unwrap_or_default();
        let wave = waves
            .iter()
            .filter(|w| w["progress"]["pending"].as_i64() < w["target_count"].as_i64())
            .count();
        let msg = format!(
            "{status}, wave {wave}/{}: {} ok, {} failed, {} rolled back",
            waves.len(),
            n("succeeded"),
            n("failed"),
            n("rolled_back")
        );
        let done = n("succeeded") + n("failed") + n("rolled_back") + n("canceled");
        match &bar {
            Some(b) => {
                b.set_length(n("total").max(0) as u64);
                b.set_position(done.max(0) as u64);
                b.set_message(msg.clone());
            }
            None => {
                if msg != last_line {
                    println!("  {label}: {msg}");
                    last_line = msg;
                }
            }
        }
        if TERMINAL.contains(&status.as_str()) {
            // The last decisions may still be on their way.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Ok(ev) = decisions.try_recv() {
                if let ProgressEvent::Decision {
                    execution_id,
                    message,
                } = ev
                    && execution_id == exec
                {
                    screen.say(bar.as_ref(), format!("  · {message}"));
                    said.push(message);
                }
            }
            if let Some(b) = bar {
                // Only a success fills the bar; a rollback leaves it where it stopped.
                if status == "succeeded" {
                    b.finish();
                } else {
                    b.abandon();
                }
            }
            return Ok((status, said));
        }
        if Instant::now() > deadline {
            if let Some(b) = bar {
                b.abandon();
            }
            anyhow::bail!("{label}: execution {exec} still {status} after {PHASE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{text}\n").as_bytes())
}
