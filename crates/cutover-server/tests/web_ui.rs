//! The web UI in a real browser: Debian's chromium driven by chromedriver over the W3C
//! WebDriver protocol, against a real server on loopback with data made through the REST API.
//!
//! The protocol is spoken with reqwest directly: the handful of commands used here do not
//! justify a WebDriver client crate (fantoccini brings the `webdriver` crate with its own
//! http 0.2, cookie and ICU segmenter stacks, and its TLS features pull a second TLS
//! backend), and chromedriver listens on plain HTTP on loopback.
//!
//! Without chromium or chromedriver the test is skipped with a note, except with `CI=true`,
//! where it fails: CI installs them (`apt-get install chromium chromium-driver`).

mod api_support;

use api_support::*;
use chrono::Utc;
use cutover_server::auth::Role;
use cutover_store::{ActionUpdate, ExecutionUpdate, StepBatch, Store};
use futures::FutureExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The W3C name of an element reference in a response.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// chromium and chromedriver, or `None` (skip) when missing and CI is not set.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program(
        "CUTOVER_TEST_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_program("CUTOVER_TEST_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        (c, d) => {
            let missing = [
                c.is_none().then_some("chromium"),
                d.is_none().then_some("chromedriver"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{missing} not found but CI=true: the web UI test must run in CI \
                     (apt-get install -y chromium chromium-driver)"
                );
            }
            eprintln!(
                "skipping the web UI test: {missing} not found \
                 (apt-get install -y chromium chromium-driver)"
            );
            None
        }
    }
}

/// A chromedriver process on a free loopback port, killed on drop.
struct Driver {
    base: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

impl Driver {
    async fn start(program: &PathBuf) -> Driver {
        // chromedriver takes a port number, not a listener, and binds it after
        // it starts: a port outside the kernel's ephemeral range stays free
        // until then.
        let port = cutover_agent::ports::fixed_port().expect("a free port");
        let child = tokio::process::Command::new(program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return Driver {
                    base,
                    http,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chromedriver did not become ready on port {port}");
    }

    /// Opens a headless chromium session with its own profile directory.
    async fn session(&self, chromium: &PathBuf, profile: &std::path::Path) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = call(&self.http, "POST", &format!("{}/session", self.base), caps).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        Session {
            url: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

/// One WebDriver command; panics on a WebDriver error, returns `value`.
async fn call(http: &reqwest::Client, method: &str, url: &str, body: Value) -> Value {
    try_call(http, method, url, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One WebDriver command: `value`, or the error's text.
async fn try_call(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Value,
) -> Result<Value, String> {
    let request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url).json(&body),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status();
    let v: Value = response
        .json()
        .await
        .map_err(|e| format!("{method} {url}: unreadable answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("{method} {url}: {status}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}

struct Session {
    url: String,
    http: reqwest::Client,
}

impl Session {
    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        call(&self.http, method, &format!("{}{path}", self.url), body).await
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css}: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// Clicks the element matching `css`, finding it again when the page redrew it between
    /// finding and clicking (rows are redrawn as progress arrives).
    async fn click(&self, css: &str) {
        let mut last = String::new();
        for _ in 0..20 {
            let e = self.find(css).await;
            match try_call(
                &self.http,
                "POST",
                &format!("{}/element/{e}/click", self.url),
                json!({}),
            )
            .await
            {
                Ok(_) => return,
                Err(error) if error.contains("stale element") => last = error,
                Err(error) => panic!("{error}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css} kept going stale: {last}");
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// The text of the first element matching `css`, or null.
    async fn text(&self, css: &str) -> Value {
        let css = serde_json::to_string(css).unwrap();
        self.eval(&format!(
            "const e = document.querySelector({css}); return e ? e.textContent : null;"
        ))
        .await
    }

    /// Waits (up to 20 s) until the text of `css` satisfies `ok`; returns it.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.text(css).await;
            if let Some(t) = last.as_str()
                && ok(t)
            {
                return t.to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let error = self.text("#error").await;
        panic!("{css}: expected {what}, last saw {last} (page error: {error})");
    }

    async fn close(&self) {
        let _ = self
            .http
            .delete(&self.url)
            .timeout(Duration::from_secs(20))
            .send()
            .await;
    }
}

/// Moves an execution on as the orchestrator would: running, with these actions' statuses.
async fn progress(store: &Store, execution_id: &str, statuses: &[(usize, &str)]) {
    let actions = store.list_actions(execution_id).await.unwrap();
    let now = Utc::now();
    store
        .commit_step(&StepBatch {
            execution_update: Some(ExecutionUpdate {
                execution_id: execution_id.into(),
                status: Some("running".into()),
                state: None,
                started_at: Some(now),
                finished_at: None,
                at: now,
            }),
            action_updates: statuses
                .iter()
                .map(|(i, s)| ActionUpdate {
                    action_id: actions[*i].id.clone(),
                    status: s.to_string(),
                    last_seq: None,
                    error: None,
                    bump_attempt: false,
                    at: now,
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn post_json(server: &TestServer, role: Role, path: &str, body: Value) -> Value {
    let r = server.post(role, path).json(&body).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "POST {path}: {status}: {v}");
    v
}

#[tokio::test]
async fn the_web_ui_shows_the_fleet_and_acts_on_it() {
    let Some((chromium, chromedriver)) = browser_programs() else {
        return;
    };
    let server = spawn().await;
    seed_fleet(server.store(), 4).await;
    // A finished deployment to staging, a production plan waiting for approval, and a
    // second staging deployment under way.
    succeed_in_staging(&server).await;
    let plan = post_json(
        &server,
        Role::Operator,
        "/api/deployment-plans",
        seed_plan(),
    )
    .await;
    let plan_id = plan["id"].as_str().unwrap().to_string();
    assert_eq!(plan["status"], "pending_approval", "{plan}");
    let rolling = json!({
        "name": "Staging rolling 1.2.0",
        "firmware_version": "1.2.0",
        "source_environment": "testing",
        "target_environment": "staging",
        "strategy": "rolling",
        "batch_size": 2
    });
    let second = post_json(&server, Role::Operator, "/api/deployment-plans", rolling).await;
    let exec = post_json(
        &server,
        Role::Operator,
        "/api/deployments/execute",
        json!({"plan_id": second["id"]}),
    )
    .await;
    let exec_id = exec["execution_id"].as_str().unwrap().to_string();
    assert_eq!(exec["target_count"], 4, "{exec}");
    progress(
        server.store(),
        &exec_id,
        &[(0, "succeeded"), (1, "succeeded"), (2, "installing")],
    )
    .await;

    let driver = Driver::start(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(&chromium, profile.path()).await;
    let outcome = std::panic::AssertUnwindSafe(drive(&server, &session, &plan_id, &exec_id))
        .catch_unwind()
        .await;
    session.close().await;
    drop(driver);
    server.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drive(server: &TestServer, s: &Session, plan_id: &str, exec_id: &str) {
    s.goto(&server.url("/")).await;
    assert_eq!(s.eval("return document.title;").await, "cutover");
    // Nothing is shown before a key is given.
    assert_eq!(
        s.eval("return document.querySelectorAll('#deployments tbody tr').length;")
            .await,
        0
    );

    // Log in as the UI expects: the key in the form, submitted.
    s.type_into("#key", server.key(Role::Approver)).await;
    s.click("#login button[type=submit]").await;

    // Environments, in order.
    s.wait_text("#env-production", "production", |t| {
        t.contains("production")
    })
    .await;
    let names = s
        .eval(
            "return [...document.querySelectorAll('#environments tbody tr td:first-child')]\
             .map(td => td.textContent);",
        )
        .await;
    assert_eq!(
        names,
        json!(["development", "testing", "staging", "production"])
    );

    // Deployments with their progress: the running one at 2 of 4, live over the event
    // stream as it moves on, and the finished one.
    let row = format!("#dep-{exec_id}");
    let text = s
        .wait_text(&format!("{row} td.progress"), "2/4", |t| t.contains("2/4"))
        .await;
    assert!(text.contains("2/4"), "{text}");
    let status = s
        .eval(&format!(
            "return document.querySelector('{row}').dataset.status;"
        ))
        .await;
    assert_eq!(status, "running");
    progress(server.store(), exec_id, &[(2, "succeeded")]).await;
    s.wait_text(&format!("{row} td.progress"), "3/4 after progress", |t| {
        t.contains("3/4")
    })
    .await;
    let width = s
        .eval(&format!(
            "return document.querySelector('{row} .fill').style.width;"
        ))
        .await;
    assert_eq!(width, "75%");
    let finished = s
        .eval(
            "return [...document.querySelectorAll('#deployments tbody tr')]\
             .filter(r => r.dataset.status === 'succeeded').length;",
        )
        .await;
    assert_eq!(finished, 1);

    // Approve the production plan from the UI: the server's plan changes.
    let plan_row = format!("#plan-{plan_id}");
    s.wait_text(plan_row.as_str(), "a pending plan", |t| {
        t.contains("pending_approval") && t.contains("0/1")
    })
    .await;
    s.click(&format!("#approve-{plan_id}")).await;
    s.wait_text("#message", "the approval", |t| t.contains("is approved"))
        .await;
    let r = server
        .get(Role::Viewer, &format!("/api/deployment-plans/{plan_id}"))
        .send()
        .await
        .unwrap();
    let plan: Value = r.json().await.unwrap();
    assert_eq!(plan["status"], "approved", "{plan}");
    s.wait_text(plan_row.as_str(), "the plan approved", |t| {
        t.contains("approved") && !t.contains("pending_approval") && t.contains("1/1")
    })
    .await;

    // Pause the running deployment: the command is recorded for the orchestrator, by the
    // key that clicked.
    s.click(&format!("#pause-{exec_id}")).await;
    s.wait_text("#message", "the pause", |t| t.contains("pause requested"))
        .await;
    let events = server
        .store()
        .load_execution_events(exec_id, 0)
        .await
        .unwrap();
    let pause = events
        .iter()
        .find(|e| e.payload["command"] == "pause")
        .unwrap_or_else(|| panic!("no pause event in {events:?}"));
    let approver_prefix = cutover_server::auth::key_prefix(server.key(Role::Approver)).unwrap();
    assert_eq!(pause.payload["by"], format!("key:{approver_prefix}"));
    assert_eq!(
        s.text("#error").await,
        "",
        "no error is shown after the actions"
    );

    // A viewer sees the same page but the API refuses its actions, and the UI says why.
    s.type_into("#key", server.key(Role::Viewer)).await;
    s.click("#login button[type=submit]").await;
    s.wait_text(&format!("{row} td.progress"), "3/4 for the viewer", |t| {
        t.contains("3/4")
    })
    .await;
    s.click(&format!("#cancel-{exec_id}")).await;
    s.wait_text("#error", "a refusal", |t| {
        t.starts_with("403") && t.contains("operator")
    })
    .await;
    let execution = server.store().get_execution(exec_id).await.unwrap();
    assert_eq!(execution.status, "running");
    let events = server
        .store()
        .load_execution_events(exec_id, 0)
        .await
        .unwrap();
    assert!(
        !events.iter().any(|e| e.payload["command"] == "cancel"),
        "{events:?}"
    );
}
