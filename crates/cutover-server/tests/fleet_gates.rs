//! Configured quality gates end to end: the REST API on 127.0.0.1 over a SQLite
//! file, the fleet plane with its embedded broker, real agent processes, real
//! `sh -c` gate commands and a real HTTP server for the http gates.

mod fleet_common;

use cutover_server::auth::{Role, create_key};
use cutover_server::settings::ServerSettings;
use fleet_common::{Broker, Fleet, firmware};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"gates-test-secret-0123456789abcdef0123456789";

/// The REST API over the fleet's store.
struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    /// Starts the API with the gates of `yaml` (a deployment-config.yaml fragment) and
    /// staging's `auto_rollback`; `change` adjusts the settings further.
    async fn start(
        fleet: &Fleet,
        yaml: &str,
        auto_rollback: bool,
        change: impl FnOnce(&mut ServerSettings),
    ) -> Api {
        let (config, _) =
            cutover_core::config::DeploymentConfig::from_yaml(yaml, "deployment-config.yaml")
                .expect("gates config");
        let mut settings = ServerSettings::new(SECRET.to_vec());
        settings.security.rate_limit = None;
        settings.quality_gates = config.quality_gates.clone();
        for env in settings.environments.iter_mut() {
            env.auto_rollback = auto_rollback;
        }
        change(&mut settings);
        let (_, key) = create_key(&fleet.store, SECRET, "operator", Role::Admin, None, None)
            .await
            .expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = cutover_server::Server::new(settings, fleet.store.clone());
        tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Api {
            base,
            key,
            http,
            stop: Some(tx),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", &self.key)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-API-Key", &self.key)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("json")
    }

    /// Creates a plan for `version` over every staging target, `batch` targets a wave.
    async fn plan(&self, version: &str, batch: u32) -> String {
        let (status, plan) = self
            .post(
                "/api/deployment-plans",
                json!({
                    "name": format!("roll {version}"), "firmware_version": version,
                    "target_environment": "staging", "strategy": "rolling",
                    "batch_size": batch, "success_threshold": "100%",
                }),
            )
            .await;
        assert_eq!(status, 201, "{plan}");
        assert_eq!(plan["status"], "approved", "{plan}");
        plan["plan_id"].as_str().expect("plan id").to_string()
    }

    /// Executes `plan`, which must start: the execution's id.
    async fn execute(&self, plan: &str) -> String {
        let (code, exec) = self
            .post("/api/deployments/execute", json!({ "plan_id": plan }))
            .await;
        assert_eq!(code, 202, "{exec}");
        exec["id"].as_str().expect("execution id").to_string()
    }

    /// Executes `plan`, which must be refused (409): the problem document.
    async fn refused(&self, plan: &str) -> Value {
        let (code, problem) = self
            .post("/api/deployments/execute", json!({ "plan_id": plan }))
            .await;
        assert_eq!(code, 409, "{problem}");
        problem
    }

    /// Waits until `GET /api/deployments/{id}` says `status`.
    async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let view = self.get(&format!("/api/deployments/{id}")).await;
            if view["status"] == status {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} still {} while waiting for {status}: {view}",
                view["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn fleet_of(ids: &[&str]) -> Fleet {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    for id in ids {
        let i = fleet.add_agent(id, "").await;
        fleet.agents[i].spawn();
    }
    fleet
}

/// A post-deployment command gate that exits 3 holds the rollout after the first
/// wave, with the reason in the deployment's status; a resume passes that gate, and
/// once the command passes the rollout finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_gate_holds_the_rollout_after_the_first_wave_until_resumed() {
    let ids = ["cg-1", "cg-2"];
    let fleet = fleet_of(&ids).await;
    fleet.upload(firmware(32 * 1024, 11), "2.0.0", None).await;
    let fixed = fleet.dir.path().join("smoke-fixed");
    let yaml = format!(
        r#"
quality_gates:
  post_deployment:
    - health_check
    - name: smoke
      type: command
      command: "echo smoke for $CUTOVER_VERSION wave $CUTOVER_WAVE; test -e '{}' || {{ echo 'smoke: 2 checks failed' >&2; exit 3; }}"
      timeout: 30
"#,
        fixed.display()
    );
    let api = Api::start(&fleet, &yaml, false, |_| {}).await;
    let plan = api.plan("2.0.0", 1).await;
    let id = api.execute(&plan).await;

    let view = api
        .wait_status(&id, "paused", Duration::from_secs(60))
        .await;
    assert_eq!(
        view["held"], "gate failed: gate smoke: command exited 3: smoke: 2 checks failed",
        "{view}"
    );
    assert_eq!(view["waves"][0]["progress"]["succeeded"], 1, "{view}");
    assert_eq!(
        view["waves"][1]["progress"]["pending"], 1,
        "the second wave was not started: {view}"
    );
    let results = fleet.store.list_gate_results(&id).await.unwrap();
    let smoke = results.iter().find(|g| g.gate == "smoke").expect("smoke");
    assert!(!smoke.passed);
    assert_eq!(smoke.phase, "after");
    assert_eq!(smoke.wave_index, Some(0));
    assert_eq!(smoke.detail["measured"]["exit_code"], 3, "{smoke:?}");
    assert_eq!(
        smoke.detail["measured"]["stdout_tail"], "smoke for 2.0.0 wave 1\n",
        "{smoke:?}"
    );
    // It stays held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = api.get(&format!("/api/deployments/{id}")).await;
    assert_eq!(view["status"], "paused", "{view}");

    // Someone fixes what the smoke test found and resumes past the failed gate.
    std::fs::write(&fixed, b"").unwrap();
    let (status, body) = api
        .post(&format!("/api/deployments/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        fleet.finish(&id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let view = api.get(&format!("/api/deployments/{id}")).await;
    assert!(view.get("held").is_none(), "{view}");
    let results = fleet.store.list_gate_results(&id).await.unwrap();
    let smoke: Vec<_> = results.iter().filter(|g| g.gate == "smoke").collect();
    assert_eq!(smoke.len(), 2, "{results:?}");
    assert!(
        smoke[1].passed && smoke[1].wave_index == Some(1),
        "{smoke:?}"
    );
    let t = fleet.store.get_target("cg-2").await.unwrap();
    assert_eq!(t.current_version.as_deref(), Some("2.0.0"));
}

/// A gate named after a health check runs that check on the server after each wave:
/// unhealthy, it holds the rollout after the first wave, naming the check and why;
/// resumed once it is healthy, the check passes after the next wave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_gate_runs_its_check_after_each_wave() {
    let status = Arc::new(AtomicU16::new(503));
    let url = status_server(status.clone()).await;
    let yaml = format!(
        "health_checks:\n  api_health:\n    type: http\n    endpoint: \"{url}\"\n    timeout: 5\n\
         quality_gates:\n  post_deployment: [api_health]\n"
    );
    let (config, _) =
        cutover_core::config::DeploymentConfig::from_yaml(&yaml, "deployment-config.yaml").unwrap();
    // The orchestrator gets the checks as `cutover serve` gives them.
    let mut server = ServerSettings::new(SECRET.to_vec());
    server.health_checks = config.health_checks.clone();
    let staging = vec![server.health_check("staging", "api_health").unwrap()];
    let mut fleet = Fleet::start_with(Broker::Embedded, |s| {
        s.health_checks.insert("staging".into(), staging);
    })
    .await;
    for id in ["hw-1", "hw-2"] {
        let i = fleet.add_agent(id, "").await;
        fleet.agents[i].spawn();
    }
    fleet.upload(firmware(16 * 1024, 19), "2.0.0", None).await;
    let api = Api::start(&fleet, &yaml, false, |s| {
        s.health_checks = config.health_checks.clone()
    })
    .await;
    let plan = api.plan("2.0.0", 1).await;
    let id = api.execute(&plan).await;
    let view = api
        .wait_status(&id, "paused", Duration::from_secs(60))
        .await;
    assert_eq!(
        view["held"],
        format!(
            "gate failed: gate api_health: 1 of 1 health check(s) unhealthy: api_health (http): GET {url} answered 503, expected 200"
        ),
        "{view}"
    );
    assert_eq!(view["waves"][1]["progress"]["pending"], 1, "{view}");

    status.store(200, Ordering::SeqCst);
    let (code, body) = api
        .post(&format!("/api/deployments/{id}/resume"), json!({}))
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        fleet.finish(&id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let results = fleet.store.list_gate_results(&id).await.unwrap();
    let runs: Vec<(Option<i64>, bool)> = results
        .iter()
        .filter(|g| g.gate == "api_health")
        .map(|g| (g.wave_index, g.passed))
        .collect();
    assert_eq!(runs, [(Some(0), false), (Some(1), true)], "{results:?}");
    assert_eq!(results[1].detail["measured"]["checks"][0]["healthy"], true);
}

/// A gate nobody can run holds the execution for a person, even where failures roll
/// back automatically, and says so in the deployment's status; a resume passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_acceptance_test_waits_for_a_person_and_never_rolls_back() {
    let ids = ["ua-1"];
    let fleet = fleet_of(&ids).await;
    fleet.upload(firmware(16 * 1024, 12), "2.0.0", None).await;
    let yaml = "quality_gates:\n  post_deployment: [health_check, user_acceptance_test]\n";
    let api = Api::start(&fleet, yaml, true, |_| {}).await;
    let plan = api.plan("2.0.0", 1).await;
    let id = api.execute(&plan).await;
    let view = api
        .wait_status(&id, "paused", Duration::from_secs(60))
        .await;
    assert_eq!(
        view["held"],
        "gate user_acceptance_test waits for a person (the server has no runner for it): resume the deployment to pass it",
        "{view}"
    );
    let (status, _) = api
        .post(&format!("/api/deployments/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        fleet.finish(&id, Duration::from_secs(60)).await,
        "succeeded"
    );
}

/// A tiny HTTP server on 127.0.0.1:0 answering every request with `status`.
async fn status_server(status: Arc<AtomicU16>) -> String {
    let app = axum::Router::new().fallback(move || {
        let status = status.clone();
        async move {
            axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst))
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/ready", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// Pre-deployment gates are decided at execute, before any target is touched: an
/// http gate answered 503 refuses the execute naming the gate, starts nothing and is
/// audited; answered 200 it passes, beside the firmware and hardware checks, and the
/// results are stored with the execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_deployment_gate_refuses_the_execute_and_starts_nothing() {
    let ids = ["pg-1", "pg-2"];
    let fleet = fleet_of(&ids).await;
    fleet.upload(firmware(16 * 1024, 13), "2.0.0", None).await;
    let status = Arc::new(AtomicU16::new(503));
    let url = status_server(status.clone()).await;
    let yaml = format!(
        r#"
quality_gates:
  pre_deployment:
    - firmware_validation
    - device_compatibility_check
    - {{ name: upstream_ready, type: http, url: "{url}", timeout: 5 }}
"#
    );
    let key: [u8; 32] = hex::decode(&fleet.public_hex).unwrap().try_into().unwrap();
    let api = Api::start(&fleet, &yaml, true, |s| s.artifact_public_keys = vec![key]).await;
    let plan = api.plan("2.0.0", 1).await;

    let problem = api.refused(&plan).await;
    assert_eq!(problem["rule"], "pre_deployment_gate", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "gate upstream_ready: GET {url} answered 503, expected 200"
        )),
        "{detail}"
    );
    assert!(
        !detail.contains("firmware_validation"),
        "it passed: {detail}"
    );
    // Nothing started: no execution, the plan still approved, every target untouched.
    let list = api.get(&format!("/api/deployments?plan_id={plan}")).await;
    assert_eq!(list["deployments"], json!([]), "{list}");
    let p = api.get(&format!("/api/deployment-plans/{plan}")).await;
    assert_eq!(p["status"], "approved", "{p}");
    for id in ids {
        let t = fleet.store.get_target(id).await.unwrap();
        assert_eq!(t.current_version.as_deref(), Some("1.0.0"));
    }
    let audit = api.get("/api/audit?action=deployment.execute").await;
    let refused = audit["entries"]
        .as_array()
        .or_else(|| audit.as_array())
        .expect("audit entries")
        .iter()
        .find(|e| e["result"] == "refused" && e["subject"] == plan.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no refusal audited: {audit}"));
    let gates = refused["details"]["pre_deployment_gates"]
        .as_array()
        .unwrap();
    assert_eq!(gates.len(), 3, "{refused}");
    assert_eq!(gates[2]["gate"], "upstream_ready");
    assert_eq!(gates[2]["measured"]["status"], 503);

    // The upstream is ready now: the same plan runs.
    status.store(200, Ordering::SeqCst);
    let id = api.execute(&plan).await;
    let results = fleet.store.list_gate_results(&id).await.unwrap();
    let names: Vec<&str> = results.iter().map(|g| g.gate.as_str()).collect();
    assert_eq!(
        names,
        [
            "firmware_validation",
            "device_compatibility_check",
            "upstream_ready"
        ]
    );
    assert!(
        results.iter().all(|g| g.passed && g.phase == "before"),
        "{results:?}"
    );
    assert_eq!(
        results[0].detail["measured"]["signature_checked"], true,
        "{results:?}"
    );
    assert_eq!(
        fleet.finish(&id, Duration::from_secs(60)).await,
        "succeeded"
    );
}

/// A health_check gate before a deployment runs the environment's health checks on
/// the server (an http check whose endpoint is joined to the environment's API
/// endpoint, and a command); a gate named after a check runs that one. Unhealthy,
/// they refuse the execute naming each check and why; healthy, the deployment runs
/// and their results are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_deployment_health_checks_run_on_the_server() {
    let ids = ["hc-1"];
    let fleet = fleet_of(&ids).await;
    fleet.upload(firmware(16 * 1024, 17), "2.0.0", None).await;
    let status = Arc::new(AtomicU16::new(503));
    let url = status_server(status.clone()).await;
    let api_base = url.trim_end_matches("/ready").to_string();
    let flag = fleet.dir.path().join("maintenance");
    std::fs::write(&flag, "").unwrap();
    let yaml = format!(
        r#"
health_checks:
  api_health:
    type: http
    endpoint: /ready
    timeout: 5
  no_maintenance:
    type: command
    command: "test ! -e {}"
quality_gates:
  pre_deployment:
    - health_check
    - api_health
"#,
        flag.display()
    );
    let (config, _) =
        cutover_core::config::DeploymentConfig::from_yaml(&yaml, "deployment-config.yaml").unwrap();
    let api = Api::start(&fleet, &yaml, true, |s| {
        s.health_checks = config.health_checks.clone();
        let staging = s
            .environments
            .iter_mut()
            .find(|e| e.name == "staging")
            .unwrap();
        staging.health_checks = vec!["api_health".into(), "no_maintenance".into()];
        staging.api_endpoint = Some(api_base.clone());
    })
    .await;
    let plan = api.plan("2.0.0", 1).await;

    let problem = api.refused(&plan).await;
    let detail = problem["detail"].as_str().unwrap();
    let http_why = format!("api_health (http): GET {url} answered 503, expected 200");
    assert!(
        detail.contains(&format!(
            "gate health_check: 2 of 2 health check(s) unhealthy: {http_why}; no_maintenance (command): `test ! -e {}` exited 1",
            flag.display()
        )),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "gate api_health: 1 of 1 health check(s) unhealthy: {http_why}"
        )),
        "{detail}"
    );
    let list = api.get(&format!("/api/deployments?plan_id={plan}")).await;
    assert_eq!(list["deployments"], json!([]), "{list}");

    // Healthy now: the same plan runs, and the checks' results are kept.
    status.store(200, Ordering::SeqCst);
    std::fs::remove_file(&flag).unwrap();
    let id = api.execute(&plan).await;
    let results = fleet.store.list_gate_results(&id).await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results.iter().all(|g| g.passed), "{results:?}");
    let checks = results[0].detail["measured"]["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api_health", "no_maintenance"]);
    assert!(checks.iter().all(|c| c["healthy"] == true), "{checks:?}");
    // GET /api/health-checks runs them too.
    let health = api.get("/api/health-checks").await;
    let names: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["database", "staging: api_health", "staging: no_maintenance"],
        "{health}"
    );
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(
        fleet.finish(&id, Duration::from_secs(60)).await,
        "succeeded"
    );
}

/// firmware_validation refuses an artifact whose signature does not verify with the
/// configured keys; with no key configured it checks the digest and says the
/// signature was not checked. A manual pre-deployment gate needs `passed_gates`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_validation_and_manual_pre_deployment_gates() {
    let ids = ["fv-1"];
    let fleet = fleet_of(&ids).await;
    let stranger = cutover_server::fleet::artifacts::parse_secret(&"22".repeat(32)).unwrap();
    fleet
        .upload(firmware(16 * 1024, 14), "2.0.0", Some(&stranger))
        .await;
    let yaml = "quality_gates:\n  pre_deployment: [firmware_validation, security_scan]\n";
    let key: [u8; 32] = hex::decode(&fleet.public_hex).unwrap().try_into().unwrap();
    let api = Api::start(&fleet, yaml, true, |s| s.artifact_public_keys = vec![key]).await;
    let plan = api.plan("2.0.0", 1).await;
    let (code, problem) = api
        .post(
            "/api/deployments/execute",
            json!({ "plan_id": plan, "passed_gates": ["security_scan"] }),
        )
        .await;
    assert_eq!(code, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail
            .contains("gate firmware_validation: the signature of firmware 2.0.0 does not verify"),
        "{detail}"
    );
    assert!(
        !detail.contains("security_scan"),
        "a person passed it: {detail}"
    );
    drop(api);

    // Without keys: the digest is checked, the signature is said not to be.
    let api = Api::start(&fleet, yaml, true, |_| {}).await;
    let problem = api.refused(&plan).await;
    assert_eq!(
        problem["detail"],
        format!(
            "rule pre_deployment_gate: plan {plan} was not started: gate security_scan waits for a person (the server has no runner for it before a deployment): execute again with \"passed_gates\": [\"security_scan\"] to pass it"
        )
    );
    let (code, problem) = api
        .post(
            "/api/deployments/execute",
            json!({ "plan_id": plan, "passed_gates": ["penetration_test"] }),
        )
        .await;
    assert_eq!(code, 422, "{problem}");
    let (code, exec) = api
        .post(
            "/api/deployments/execute",
            json!({ "plan_id": plan, "passed_gates": ["security_scan"] }),
        )
        .await;
    assert_eq!(code, 202, "{exec}");
    let id = exec["id"].as_str().unwrap().to_string();
    let results = fleet.store.list_gate_results(&id).await.unwrap();
    let fw = &results[0];
    assert!(fw.passed, "{fw:?}");
    assert!(
        fw.detail["reason"]
            .as_str()
            .unwrap()
            .contains("signature not checked: the server has no artifacts.public_keys configured"),
        "{fw:?}"
    );
    assert_eq!(results[1].gate, "security_scan");
    assert!(
        results[1].detail["reason"]
            .as_str()
            .unwrap()
            .starts_with("gate security_scan: passed by "),
        "{:?}",
        results[1]
    );
    let _ = fleet.finish(&id, Duration::from_secs(60)).await;
}
