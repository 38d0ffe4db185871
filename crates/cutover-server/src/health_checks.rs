//! The configured `health_checks`, run on the server: an HTTP request, a
//! shell command, a database query, or a message published to an MQTT broker
//! and read back. Each attempt has the check's timeout; a failed one is tried
//! again `retry_count` times, `retry_delay` apart. The `health_check` gates
//! run them before a deployment ([`crate::quality_gates`]).

use crate::quality_gates::{ShellRun, last_line, run_shell};
use cutover_core::config::deployment::{CheckType, HealthCheck};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The name under which an environment's `health_check_url` is checked.
pub const HEALTH_CHECK_URL: &str = "health_check_url";

/// One check to run: its definition, and the URL a relative http endpoint is joined to.
#[derive(Debug, Clone)]
pub struct CheckToRun {
    pub name: String,
    pub check: HealthCheck,
    pub base_url: Option<String>,
}

impl CheckToRun {
    /// `GET url`, healthy on 200: how an environment's `health_check_url` is checked.
    pub fn url(url: &str) -> CheckToRun {
        CheckToRun {
            name: HEALTH_CHECK_URL.into(),
            check: HealthCheck {
                check_type: CheckType::Http,
                endpoint: Some(url.to_string()),
                method: None,
                expected_status: None,
                headers: Default::default(),
                broker: None,
                topic: None,
                connection_string: None,
                query: None,
                command: None,
                timeout: cutover_core::config::values::Duration::from_secs(10),
                retry_count: 0,
                retry_delay: cutover_core::config::values::Duration::from_secs(1),
            },
            base_url: None,
        }
    }
}

/// How one check went, over all its attempts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    /// http, command, database or mqtt.
    pub kind: String,
    pub healthy: bool,
    pub attempts: u32,
    /// Of the last attempt.
    pub latency_ms: f64,
    /// What the last attempt saw, or why it failed.
    pub detail: String,
}

/// Runs `c`, trying again after a failure as its definition says.
pub async fn run(c: &CheckToRun, http: &reqwest::Client) -> CheckResult {
    let check = &c.check;
    let timeout: Duration = check.timeout.get();
    let attempts = check.retry_count.saturating_add(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, once(c, timeout, http)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs_f64())),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let done = |healthy: bool, detail: String| CheckResult {
            name: c.name.clone(),
            kind: check.check_type.to_string(),
            healthy,
            attempts: attempt,
            latency_ms,
            detail,
        };
        match outcome {
            Ok(detail) => return done(true, detail),
            Err(e) if attempt >= attempts => return done(false, e),
            Err(_) => tokio::time::sleep(check.retry_delay.get()).await,
        }
    }
}

/// One attempt: what it saw when healthy, else why not.
async fn once(c: &CheckToRun, timeout: Duration, http: &reqwest::Client) -> Result<String, String> {
    let check = &c.check;
    match check.check_type {
        CheckType::Http => http_check(c, http).await,
        CheckType::Command => {
            let command = check.command.as_deref().unwrap_or_default();
            let env = [("CUTOVER_HEALTH_CHECK", c.name.clone())];
            match run_shell(command, &env, timeout).await {
                ShellRun::Finished {
                    code: Some(0),
                    stdout,
                    ..
                } => Ok(match last_line(&stdout) {
                    Some(line) => format!("exited 0: {line}"),
                    None => "exited 0".into(),
                }),
                ShellRun::Finished {
                    code,
                    stdout,
                    stderr,
                    ..
                } => {
                    let how = match code {
                        Some(c) => format!("exited {c}"),
                        None => "was killed by a signal".into(),
                    };
                    Err(match last_line(&stderr).or_else(|| last_line(&stdout)) {
                        Some(line) => format!("`{command}` {how}: {line}"),
                        None => format!("`{command}` {how}"),
                    })
                }
                ShellRun::TimedOut => Err(format!(
                    "`{command}` did not finish within {} s and was killed",
                    timeout.as_secs_f64()
                )),
                ShellRun::CannotStart(e) => Err(format!("cannot run `{command}`: {e}")),
            }
        }
        CheckType::Database => {
            let url = check
                .connection_string
                .as_ref()
                .map(|u| u.as_str())
                .unwrap_or_default();
            let query = check.query.as_deref().unwrap_or("SELECT 1");
            let rows = cutover_store::probe_database(url, query).await?;
            Ok(format!(
                "{query} on {} gave {rows} row(s)",
                cutover_store::redact_url(url)
            ))
        }
        CheckType::Mqtt => mqtt_check(c).await,
    }
}

/// The request's URL: the endpoint itself, or a path joined to the base URL.
fn http_url(c: &CheckToRun) -> Result<reqwest::Url, String> {
    let endpoint = c.check.endpoint.as_deref().unwrap_or_default();
    if endpoint.starts_with('/') {
        let base = c.base_url.as_deref().ok_or_else(|| {
            format!(
                "endpoint {endpoint} is a path, and the environment has no health_check_url or api_endpoints to join it to"
            )
        })?;
        reqwest::Url::parse(base)
            .and_then(|b| b.join(endpoint))
            .map_err(|e| format!("cannot join {endpoint} to {base}: {e}"))
    } else {
        reqwest::Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint}: {e}"))
    }
}

async fn http_check(c: &CheckToRun, http: &reqwest::Client) -> Result<String, String> {
    let check = &c.check;
    let url = http_url(c)?;
    let method = check.method.map(|m| m.as_http()).unwrap_or("GET");
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|e| format!("method {method}: {e}"))?;
    let expected = check.expected_status.unwrap_or(200);
    // The check's own timeout, not the client's default.
    let mut request = http
        .request(method.clone(), url.clone())
        .timeout(check.timeout.get());
    for (name, value) in &check.headers {
        request = request.header(name, value);
    }
    // What is said of it is stored with gate results: no password in it.
    let shown = cutover_store::redact_url(url.as_str());
    let response = request.send().await.map_err(|e| {
        format!(
            "{method} {shown} failed: {}",
            e.without_url().to_string().trim_end()
        )
    })?;
    let status = response.status().as_u16();
    if status == expected {
        Ok(format!("{method} {shown} answered {status}"))
    } else {
        Err(format!(
            "{method} {shown} answered {status}, expected {expected}"
        ))
    }
}

/// Publishes a message of its own to the topic and waits to read it back.
async fn mqtt_check(c: &CheckToRun) -> Result<String, String> {
    use cutover_agent::device::mqtt::MqttSettings;
    use rumqttc::{Event, Packet, QoS};
    let url = c
        .check
        .broker
        .as_ref()
        .map(|u| u.as_str())
        .unwrap_or_default();
    let broker = cutover_store::redact_url(url);
    let topic = c.check.topic.clone().unwrap_or_default();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let settings = MqttSettings::new(url, &format!("cutover-health-{}", &nonce[..12]));
    let (client, mut eventloop) = settings.client(16)?;
    let mut published = false;
    let result = loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(&topic, QoS::AtLeastOnce)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Event::Incoming(Packet::SubAck(_))) if !published => {
                published = true;
                client
                    .publish(&topic, QoS::AtLeastOnce, false, nonce.clone().into_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.payload.as_ref() == nonce.as_bytes() => {
                break Ok(format!("{broker}: published to {topic} and read back"));
            }
            Ok(_) => {}
            Err(e) => break Err(format!("{broker}: {e}")),
        }
    };
    let _ = client.try_disconnect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value) -> HealthCheck {
        serde_json::from_value(json).unwrap()
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn to_run(name: &str, json: serde_json::Value) -> CheckToRun {
        CheckToRun {
            name: name.into(),
            check: check(json),
            base_url: None,
        }
    }

    #[tokio::test]
    async fn http_checks_follow_the_status_and_retry() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        // 503 to the first request, 200 after.
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = client();
        let mut c = to_run(
            "api",
            serde_json::json!({ "type": "http", "endpoint": "/health", "retry_count": 1, "retry_delay": "10ms" }),
        );
        c.base_url = Some(base.clone());
        let r = run(&c, &http).await;
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.attempts, 2);
        assert!(r.detail.ends_with("/health answered 200"), "{r:?}");
        // Without retries, one 503 is unhealthy; the wrong expected status too.
        hits.store(0, Ordering::SeqCst);
        c.check.retry_count = 0;
        let r = run(&c, &http).await;
        assert!(!r.healthy);
        assert!(r.detail.contains("answered 503, expected 200"), "{r:?}");
        c.check.expected_status = Some(204);
        let r = run(&c, &http).await;
        assert!(r.detail.contains("answered 200, expected 204"), "{r:?}");
        // A password in the URL is not repeated in what is said (and stored).
        c.check.endpoint = Some(base.replace("http://", "http://probe:s3cret@") + "health");
        let r = run(&c, &http).await;
        assert!(r.detail.contains("http://probe:****@127.0.0.1:"), "{r:?}");
        assert!(!r.detail.contains("s3cret"), "{r:?}");
    }

    #[tokio::test]
    async fn command_checks_pass_on_exit_zero_and_say_why_not() {
        let http = client();
        let ok = run(
            &to_run(
                "disk",
                serde_json::json!({ "type": "command", "command": "echo 42% used" }),
            ),
            &http,
        )
        .await;
        assert!(ok.healthy, "{ok:?}");
        assert_eq!(ok.detail, "exited 0: 42% used");
        let bad = run(
            &to_run(
                "disk",
                serde_json::json!({ "type": "command", "command": "echo disk 97% full >&2; exit 2" }),
            ),
            &http,
        )
        .await;
        assert!(!bad.healthy);
        assert!(bad.detail.ends_with("exited 2: disk 97% full"), "{bad:?}");
        let slow = run(
            &to_run(
                "slow",
                serde_json::json!({ "type": "command", "command": "sleep 5", "timeout": "200ms" }),
            ),
            &http,
        )
        .await;
        assert!(!slow.healthy);
        assert!(slow.detail.contains("0.2 s"), "{slow:?}");
    }

    #[tokio::test]
    async fn database_checks_query_sqlite_and_postgres_without_creating_anything() {
        let http = client();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("devices.db");
        let store = cutover_store::Store::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        drop(store);
        let ok = run(
            &to_run(
                "db",
                serde_json::json!({ "type": "database", "connection_string": format!("sqlite://{}", file.display()) }),
            ),
            &http,
        )
        .await;
        assert!(ok.healthy, "{ok:?}");
        assert!(ok.detail.starts_with("SELECT 1 on sqlite://"), "{ok:?}");
        // A file that is not there is unhealthy, and is not created.
        let missing = dir.path().join("missing.db");
        let r = run(
            &to_run(
                "db",
                serde_json::json!({ "type": "database", "connection_string": format!("sqlite://{}", missing.display()) }),
            ),
            &http,
        )
        .await;
        assert!(!r.healthy);
        assert!(r.detail.contains("cannot connect"), "{r:?}");
        assert!(!missing.exists());
        // A query that fails says so.
        let r = run(
            &to_run(
                "db",
                serde_json::json!({ "type": "database", "connection_string": format!("sqlite://{}", file.display()), "query": "SELECT * FROM no_such_table" }),
            ),
            &http,
        )
        .await;
        assert!(!r.healthy);
        assert!(r.detail.contains("no_such_table"), "{r:?}");
        if let Some(url) = cutover_store::testing::postgres_url_or_skip() {
            let r = run(
                &to_run(
                    "pg",
                    serde_json::json!({ "type": "database", "connection_string": url, "query": "SELECT 1 UNION SELECT 2" }),
                ),
                &http,
            )
            .await;
            assert!(r.healthy, "{r:?}");
            assert!(r.detail.ends_with("gave 2 row(s)"), "{r:?}");
        }
    }

    #[tokio::test]
    async fn mqtt_checks_read_back_what_they_publish() {
        let http = client();
        let broker = tokio::task::spawn_blocking(|| {
            crate::fleet::broker::start("127.0.0.1:0".parse().unwrap(), 16)
        })
        .await
        .unwrap()
        .unwrap();
        let ok = run(
            &to_run(
                "mqtt",
                serde_json::json!({ "type": "mqtt", "broker": broker.url(), "topic": "health/check", "timeout": 5 }),
            ),
            &http,
        )
        .await;
        assert!(ok.healthy, "{ok:?}");
        assert!(
            ok.detail
                .ends_with("published to health/check and read back"),
            "{ok:?}"
        );
        // Nothing listens on port 9: unhealthy, with the broker named.
        let down = run(
            &to_run(
                "mqtt",
                serde_json::json!({ "type": "mqtt", "broker": "mqtt://127.0.0.1:9", "topic": "health/check", "timeout": 2 }),
            ),
            &http,
        )
        .await;
        assert!(!down.healthy);
        assert!(down.detail.starts_with("mqtt://127.0.0.1:9"), "{down:?}");
    }

    #[test]
    fn a_path_endpoint_is_joined_to_the_base_url() {
        let mut c = CheckToRun {
            name: "api".into(),
            check: check(serde_json::json!({ "type": "http", "endpoint": "/health" })),
            base_url: Some("https://api.example.com:3002/v1/health".into()),
        };
        assert_eq!(
            http_url(&c).unwrap().as_str(),
            "https://api.example.com:3002/health"
        );
        c.base_url = None;
        assert!(http_url(&c).unwrap_err().contains("no health_check_url"));
    }
}
