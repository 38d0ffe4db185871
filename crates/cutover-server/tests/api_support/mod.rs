//! A real server on 127.0.0.1:0 over a fresh SQLite file, with a key per role and a small
//! fleet, for the API tests.
#![allow(dead_code)]

use cutover_server::auth::{Role, create_key};
use cutover_server::settings::ServerSettings;
use cutover_store::testing::TestDb;
use cutover_store::{ExecutionUpdate, NewArtifact, NewTarget, StepBatch, Store};
use std::collections::HashMap;

pub const SECRET: &[u8] = b"test-key-secret-0123456789abcdef0123456789";
pub const JWT_SECRET: &[u8] = b"jwt-secret-for-tests-0123456789abcdef";

pub struct TestServer {
    pub base: String,
    pub db: TestDb,
    pub keys: HashMap<Role, String>,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub fn store(&self) -> &Store {
        &self.db.store
    }

    pub fn key(&self, role: Role) -> &str {
        &self.keys[&role]
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, role: Role, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .header("X-API-Key", self.key(role))
    }

    pub fn post(&self, role: Role, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("X-API-Key", self.key(role))
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

/// Settings as the tests want them by default: rate limiting off, HS256 tokens on.
pub fn test_settings() -> ServerSettings {
    let mut s = ServerSettings::new(SECRET.to_vec());
    s.security.rate_limit = None;
    s.security.jwt.hs256_secret = Some(JWT_SECRET.to_vec());
    s.event_poll = std::time::Duration::from_millis(50);
    // These tests finish executions by writing the store themselves, as another replica
    // would, so reads are not cached here (`api_read_cache.rs` tests the cache).
    s.read_cache_ttl = std::time::Duration::ZERO;
    s
}

pub async fn spawn() -> TestServer {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(change: impl FnOnce(&mut ServerSettings)) -> TestServer {
    spawn_on(TestDb::sqlite().await, change).await
}

/// A server over PostgreSQL (`CUTOVER_TEST_DATABASE_URL`); `None` when it is not set and CI
/// is not (the store's test kit fails the test when CI=true).
pub async fn spawn_postgres() -> Option<TestServer> {
    let db = TestDb::postgres().await?;
    Some(spawn_on(db, |_| {}).await)
}

pub async fn spawn_on(db: TestDb, change: impl FnOnce(&mut ServerSettings)) -> TestServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut settings = test_settings();
    change(&mut settings);
    let mut keys = HashMap::new();
    for role in Role::ALL {
        let (_, key) = create_key(&db.store, SECRET, &format!("{role}-key"), role, None, None)
            .await
            .expect("create key");
        keys.insert(role, key);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let store = db.store.clone();
    let task = tokio::spawn(cutover_server::serve(
        settings,
        store,
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    // Wait until it answers.
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    TestServer {
        base,
        db,
        keys,
        http,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Targets in staging and production on hardware `board-a`, firmware 1.1.0 installed, and
/// firmware 1.2.0 uploaded for `board-a`.
pub async fn seed_fleet(store: &Store, per_environment: usize) {
    for env in ["staging", "production"] {
        for i in 0..per_environment {
            store
                .upsert_target(&NewTarget {
                    id: format!("{env}-dev-{i:03}"),
                    name: format!("{env} device {i}"),
                    environment: env.into(),
                    kind: "device".into(),
                    hardware_model: Some("board-a".into()),
                    current_version: Some("1.1.0".into()),
                    groups: vec!["fleet".into()],
                    labels: Default::default(),
                })
                .await
                .unwrap();
        }
    }
    store
        .insert_artifact(&NewArtifact {
            id: None,
            version: "1.2.0".into(),
            kind: "firmware".into(),
            sha256: "ab".repeat(32),
            size_bytes: 1024,
            compatible_hardware: vec!["board-a".into()],
            metadata: serde_json::json!({}),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Marks an execution finished with `status`, as the orchestrator would.
pub async fn finish_execution(store: &Store, id: &str, status: &str) {
    let now = chrono::Utc::now();
    store
        .commit_step(&StepBatch {
            execution_update: Some(ExecutionUpdate {
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
}

/// The seed's plan body.
pub fn seed_plan() -> serde_json::Value {
    serde_json::json!({
        "name": "Production Rollout v1.2.0",
        "firmware_version": "1.2.0",
        "source_environment": "staging",
        "target_environment": "production",
        "strategy": "rolling",
        "rollout_percentage": 100,
        "canary_percentage": 10
    })
}

/// A plan to staging that needs no approval.
pub fn staging_plan() -> serde_json::Value {
    serde_json::json!({
        "name": "Staging 1.2.0",
        "firmware_version": "1.2.0",
        "source_environment": "testing",
        "target_environment": "staging",
        "strategy": "canary",
        "canary_percentage": 25,
        "bake_seconds": 1
    })
}

/// Runs 1.2.0 through staging to success, so the seed's production plan is allowed.
pub async fn succeed_in_staging(server: &TestServer) {
    let r = server
        .post(Role::Operator, "/api/deployment-plans")
        .json(&staging_plan())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let plan: serde_json::Value = r.json().await.unwrap();
    let r = server
        .post(Role::Operator, "/api/deployments/execute")
        .json(&serde_json::json!({"plan_id": plan["id"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let exec: serde_json::Value = r.json().await.unwrap();
    finish_execution(
        server.store(),
        exec["execution_id"].as_str().unwrap(),
        "succeeded",
    )
    .await;
}
