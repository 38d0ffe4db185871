//! The real `cutover` binary against a real `cutover serve` process: bootstrap a key with no
//! server, then the seed's CLI flow (env list, plan create --interactive and --config,
//! approve, deploy execute, status, --watch), audit verify after tampering, and the one-line
//! errors for an unreachable server and a rejected key.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

/// Runs `cutover` with a clean environment (nothing leaks in from the caller's CUTOVER_*).
fn cutover(dir: &Path, envs: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn cutover");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("cutover output")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// A `cutover serve` process, stopped with SIGTERM on drop.
struct ServeProcess {
    child: Child,
    url: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, database: &str, config: &Path) -> ServeProcess {
    start_server_with(dir, database, config, true)
}

fn start_server_with(dir: &Path, database: &str, config: &Path, api_only: bool) -> ServeProcess {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--database",
            database,
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        // The flow test plays the orchestrator: it finishes executions itself.
        .args(if api_only {
            &["--api-only"][..]
        } else {
            &[][..]
        })
        .arg("--artifact-dir")
        .arg(dir.join("artifacts"))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn cutover serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("cutover serve ended before it listened")
            .unwrap();
        if let Some(rest) = line.split("serving the API on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    ServeProcess { child, url }
}

const CONFIG: &str = r#"
global:
  organization: "Test"
environments:
  staging:
    name: "Staging"
    stage: "staging"
  production:
    name: "Production"
    stage: "production"
    approval_required: true
    auto_rollback: true
security:
  api_key_auth: true
  rate_limiting:
    enabled: false
# The flow test finishes executions by writing the store itself, as another replica would:
# read the store on every request rather than within the cache's second.
server:
  read_cache_ttl: 0s
"#;

const PLAN: &str = r#"
name: "Production Rollout v1.2.0"
firmware_version: "1.2.0"
source_environment: "staging"
target_environment: "production"
strategy: "rolling"
rollout_percentage: 100
canary_percentage: 10
"#;

async fn seed_fleet(database: &str) {
    let store = cutover_store::Store::connect(database).await.unwrap();
    for env in ["staging", "production"] {
        for i in 0..5 {
            store
                .upsert_target(&cutover_store::NewTarget {
                    id: format!("{env}-{i}"),
                    name: format!("{env} {i}"),
                    environment: env.into(),
                    kind: "device".into(),
                    hardware_model: Some("board-a".into()),
                    current_version: Some("1.1.0".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    store
        .insert_artifact(&cutover_store::NewArtifact {
            version: "1.2.0".into(),
            kind: "firmware".into(),
            sha256: "cd".repeat(32),
            size_bytes: 10,
            compatible_hardware: vec!["board-a".into()],
            metadata: serde_json::json!({}),
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
}

async fn finish(database: &str, id: &str, status: &str) {
    let store = cutover_store::Store::connect(database).await.unwrap();
    let now = chrono::Utc::now();
    store
        .commit_step(&cutover_store::StepBatch {
            execution_update: Some(cutover_store::ExecutionUpdate {
                execution_id: id.into(),
                status: Some(status.into()),
                state: None,
                started_at: Some(now),
                finished_at: Some(now),
                at: now,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
}

fn key(dir: &Path, database: &str, role: &str) -> String {
    let out = cutover(
        dir,
        &[],
        &[
            "keys",
            "create",
            "--role",
            role,
            "--name",
            role,
            "--database",
            database,
            "--output",
            "json",
        ],
        None,
    );
    json(&out)["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_seed_cli_flow_against_a_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    let database = format!("sqlite://{}", dir.join("cutover.db").display());

    // Bootstrap: keys before any server exists.
    let admin = key(&dir, &database, "admin");
    let operator = key(&dir, &database, "operator");
    let approver = key(&dir, &database, "approver");
    assert!(admin.starts_with("cut_"));

    let config = dir.join("deployment-config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let server = start_server(&dir, &database, &config);
    // Targets belong to environments, which the server syncs from the configuration.
    seed_fleet(&database).await;
    let as_ = |k: &str| {
        vec![
            ("CUTOVER_SERVER", server.url.clone()),
            ("CUTOVER_API_KEY", k.to_string()),
        ]
    };
    let run = |k: &str, args: &[&str], stdin: Option<&str>| {
        let envs = as_(k);
        let envs: Vec<(&str, &str)> = envs.iter().map(|(a, b)| (*a, b.as_str())).collect();
        cutover(&dir, &envs, args, stdin)
    };

    // cutover env list
    let out = run(&operator, &["env", "list"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("production"));
    let envs = json(&run(&operator, &["env", "list", "--output", "json"], None));
    assert_eq!(envs["environments"].as_array().unwrap().len(), 2);

    // cutover plan create --config plan.yaml: refused until 1.2.0 succeeded in staging.
    let plan_file = dir.join("deployment-plan.yaml");
    std::fs::write(&plan_file, PLAN).unwrap();
    let plan_path = plan_file.to_str().unwrap();
    let out = run(&operator, &["plan", "create", "--config", plan_path], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("promotion_from_staging"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // cutover plan create --interactive: to staging, answering the prompts.
    let answers = "1.2.0\nstaging\n\nimmediate\n\n\ny\n";
    let out = run(
        &operator,
        &["plan", "create", "--interactive", "--output", "json"],
        Some(answers),
    );
    let staging_plan = json(&out);
    assert_eq!(staging_plan["target_environment"], "staging");
    assert_eq!(staging_plan["status"], "approved");
    assert!(
        stderr(&out).contains("Firmware version"),
        "{}",
        stderr(&out)
    );
    let staging_plan_id = staging_plan["id"].as_str().unwrap();

    // cutover deploy execute --plan-id ID
    let exec = json(&run(
        &operator,
        &[
            "deploy",
            "execute",
            "--plan-id",
            staging_plan_id,
            "--output",
            "json",
        ],
        None,
    ));
    let staging_exec = exec["execution_id"].as_str().unwrap().to_string();
    assert_eq!(exec["target_count"], 5);
    finish(&database, &staging_exec, "succeeded").await;

    // --watch on a finished deployment: the final line and exit 0.
    let out = run(
        &operator,
        &[
            "deploy",
            "status",
            "--execution-id",
            &staging_exec,
            "--watch",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));

    // Now the seed's plan file is accepted; it needs an approval.
    let out = run(&operator, &["plan", "create", "--config", plan_path], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan_id = stdout(&out).trim().to_string();
    assert!(plan_id.starts_with("plan_"), "{plan_id}");
    let out = run(
        &operator,
        &["deploy", "execute", "--plan-id", &plan_id],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("approval"), "{}", stderr(&out));
    let out = run(&operator, &["plan", "approve", &plan_id], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    let approved = json(&run(
        &approver,
        &[
            "plan",
            "approve",
            &plan_id,
            "--comment",
            "ok",
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(approved["approved"], true);
    let plans = json(&run(&operator, &["plan", "list", "--output", "json"], None));
    assert_eq!(plans["plans"].as_array().unwrap().len(), 2);
    let shown = json(&run(
        &operator,
        &["plan", "show", &plan_id, "--output", "json"],
        None,
    ));
    assert_eq!(shown["status"], "approved");

    let out = run(
        &operator,
        &["deploy", "execute", "--plan-id", &plan_id],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let exec_id = stdout(&out).trim().to_string();
    let status = json(&run(
        &operator,
        &[
            "deploy",
            "status",
            "--execution-id",
            &exec_id,
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(status["status"], "pending");
    assert_eq!(status["waves"].as_array().unwrap().len(), 5);
    let out = run(
        &operator,
        &["deploy", "status", "--execution-id", &exec_id],
        None,
    );
    assert!(stdout(&out).contains("wave"), "{}", stdout(&out));
    let out = run(
        &operator,
        &["deploy", "pause", "--execution-id", &exec_id],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list = json(&run(
        &operator,
        &["deploy", "list", "--output", "json"],
        None,
    ));
    assert_eq!(list["deployments"].as_array().unwrap().len(), 2);

    // A deployment that ends rolled back: --watch exits 3.
    finish(&database, &exec_id, "rolled_back").await;
    let out = run(
        &operator,
        &[
            "deploy",
            "status",
            "--execution-id",
            &exec_id,
            "--watch",
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let last = stdout(&out).lines().last().unwrap().to_string();
    assert!(last.contains("rolled_back"), "{last}");

    // Targets, reports, keys.
    let targets = json(&run(
        &operator,
        &[
            "target",
            "list",
            "--environment",
            "production",
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(targets["targets"].as_array().unwrap().len(), 5);
    let summary = json(&run(
        &operator,
        &["report", "summary", "--days", "7", "--output", "json"],
        None,
    ));
    assert_eq!(summary["deployments_total"], 2);
    let report = json(&run(
        &operator,
        &[
            "report",
            "deployment",
            "--execution-id",
            &exec_id,
            "--output",
            "json",
        ],
        None,
    ));
    assert_eq!(report["plan"]["id"], plan_id.as_str());
    let created = json(&run(
        &admin,
        &[
            "keys", "create", "--role", "viewer", "--name", "dash", "--output", "json",
        ],
        None,
    ));
    let viewer = created["key"].as_str().unwrap().to_string();
    assert!(
        json(&run(&viewer, &["env", "list", "--output", "json"], None))["environments"].is_array()
    );
    let out = run(
        &admin,
        &["keys", "revoke", created["id"].as_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&viewer, &["env", "list"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("rejected the API key") && err.contains("revoked"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The audit log: listed, intact, then tampered with.
    let audit = json(&run(&admin, &["audit", "list", "--output", "json"], None));
    let actions: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.iter().any(|a| a == "plan.approve"), "{actions:?}");
    let out = run(&admin, &["audit", "verify"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("intact"));
    {
        let store = cutover_store::Store::connect(&database).await.unwrap();
        store
            .execute_raw("DROP TRIGGER audit_log_no_update")
            .await
            .unwrap();
        store
            .execute_raw("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
            .await
            .unwrap();
        store.close().await;
    }
    let out = run(&admin, &["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("BROKEN at row"), "{}", stdout(&out));
    let out = cutover(
        &dir,
        &[],
        &[
            "audit",
            "verify",
            "--database",
            &database,
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "broken");
    drop(server);
}

#[test]
fn unreachable_server_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback is closed here; nothing listens.
    let out = cutover(
        tmp.path(),
        &[("CUTOVER_API_KEY", "cut_x")],
        &["env", "list", "--server", "http://127.0.0.1:9"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot reach the cutover server at http://127.0.0.1:9"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn first_key_needs_no_server_and_no_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cutover(
        tmp.path(),
        &[],
        &["keys", "create", "--role", "admin", "--output", "json"],
        None,
    );
    let v = json(&out);
    assert!(v["key"].as_str().unwrap().starts_with("cut_"));
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert!(tmp.path().join("cutover.db").exists());
    assert!(tmp.path().join("cutover.db.key-secret").exists());
}

#[test]
fn completions_and_man_page() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cutover(tmp.path(), &[], &["completions", "bash"], None);
    assert!(out.status.success());
    let script = stdout(&out);
    assert!(
        script.contains("_cutover") && script.contains("deploy"),
        "{}",
        &script[..200.min(script.len())]
    );
    let out = cutover(tmp.path(), &[], &["man"], None);
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(
        page.contains(".TH cutover"),
        "{}",
        &page[..200.min(page.len())]
    );
}

#[tokio::test]
async fn serve_runs_the_fleet_plane_behind_the_guard() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let database = format!("sqlite://{}", dir.join("cutover.db").display());
    let config = dir.join("deployment-config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let server = start_server_with(&dir, &database, &config, false);
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The fleet plane's artifact upload is merged in, and needs credentials like the rest.
    let r = http
        .post(format!(
            "{}/api/artifacts/upload?version=1.0.0&signature=x",
            server.url
        ))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
