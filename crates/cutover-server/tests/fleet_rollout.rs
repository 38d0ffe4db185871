//! End to end with real agent processes, real slot directories, a real broker
//! (embedded, and Mosquitto when CUTOVER_TEST_MQTT_URL is set) and a SQLite store.

mod fleet_common;

use cutover_core::engine::{Percent, RolloutSpec, Strategy, Threshold};
use fleet_common::{Broker, Fleet, external_broker, firmware};
use std::time::Duration;

fn canary_spec() -> RolloutSpec {
    let mut spec = RolloutSpec::new(Strategy::Canary {
        steps: vec![Percent::whole(33).unwrap(), Percent::HUNDRED],
        canary_percentage: None,
        bake_ms: 300,
    });
    spec.min_finished_for_error_rate = 1;
    spec.action_timeout_ms = 60_000;
    spec
}

async fn canary_to_staging(broker: Broker) {
    let mut fleet = Fleet::start(broker).await;
    let art = fleet.upload(firmware(256 * 1024, 2), "2.0.0", None).await;
    for id in ["dev-1", "dev-2", "dev-3"] {
        let i = fleet.add_agent(id, "").await;
        fleet.agents[i].spawn();
    }
    let exec = fleet
        .execute(&art, "2.0.0", canary_spec(), &["dev-1", "dev-2", "dev-3"])
        .await;
    let status = fleet.finish(&exec, Duration::from_secs(60)).await;
    assert_eq!(status, "succeeded");
    for a in fleet.agents.iter_mut() {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "2.0.0", "{}: {s}", a.id);
    }
    let actions = fleet.store.list_actions(&exec).await.unwrap();
    assert!(
        actions.iter().all(|a| a.status == "succeeded"),
        "{actions:?}"
    );
    // The inventory the agents reported is in the store.
    let t = fleet.store.get_target("dev-2").await.unwrap();
    assert_eq!(t.current_version.as_deref(), Some("2.0.0"));
    // Each target was installed once: one succeeded report per action.
    let events = fleet.store.list_action_events(&exec, None).await.unwrap();
    for id in ["dev-1", "dev-2", "dev-3"] {
        let n = events
            .iter()
            .filter(|e| e.target_id == id && e.kind == "succeeded")
            .count();
        assert_eq!(n, 1, "{id} succeeded {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_take_a_canary_to_staging_embedded() {
    canary_to_staging(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_take_a_canary_to_staging_mosquitto() {
    let Some(url) = external_broker() else { return };
    canary_to_staging(Broker::External(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_by_every_device_and_the_execution_fails_with_the_reason() {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let stranger = cutover_server::fleet::artifacts::parse_secret(&"11".repeat(32)).unwrap();
    let art = fleet
        .upload(firmware(64 * 1024, 3), "2.0.0", Some(&stranger))
        .await;
    for id in ["bad-1", "bad-2", "bad-3"] {
        let i = fleet.add_agent(id, "").await;
        fleet.agents[i].spawn();
    }
    let mut spec = RolloutSpec::new(Strategy::Immediate);
    spec.min_finished_for_error_rate = 3;
    let exec = fleet
        .execute(&art, "2.0.0", spec, &["bad-1", "bad-2", "bad-3"])
        .await;
    let status = fleet.finish(&exec, Duration::from_secs(60)).await;
    assert_ne!(status, "succeeded");
    // The execution carries the reason.
    let row = fleet.store.get_execution(&exec).await.unwrap();
    let failures = row.state["failures"].to_string();
    assert!(
        failures.contains("signature does not verify with any trusted key"),
        "{failures}"
    );
    let actions = fleet.store.list_actions(&exec).await.unwrap();
    assert!(
        actions.iter().all(|a| a.status != "succeeded"),
        "{actions:?}"
    );
    let events = fleet.store.list_action_events(&exec, None).await.unwrap();
    for id in ["bad-1", "bad-2", "bad-3"] {
        let failed = events
            .iter()
            .find(|e| e.target_id == id && e.kind == "failed")
            .unwrap_or_else(|| panic!("{id} reported no failure: {events:?}"));
        let reason = failed.detail["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("signature does not verify"),
            "{id}: {reason}"
        );
    }
    for a in fleet.agents.iter_mut() {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "1.0.0", "{}: {s}", a.id);
        assert_eq!(
            s["slots"][1]["version"],
            serde_json::Value::Null,
            "the inactive slot was never written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_failing_health_trips_automatic_rollback_and_all_end_on_the_old_version() {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let art = fleet.upload(firmware(64 * 1024, 4), "2.0.0", None).await;
    let ids = ["h-1", "h-2", "h-3", "h-4", "h-5"];
    for id in ids {
        // One device in five never confirms its new slot.
        let extra = if id == "h-3" {
            "health_command: \"exit 1\"\n"
        } else {
            ""
        };
        let i = fleet.add_agent(id, extra).await;
        fleet.agents[i].spawn();
    }
    let mut spec = RolloutSpec::new(Strategy::Immediate);
    spec.error_threshold = Threshold::percent(10);
    spec.min_finished_for_error_rate = 5;
    spec.auto_rollback = true;
    let exec = fleet.execute(&art, "2.0.0", spec, &ids).await;
    let status = fleet.finish(&exec, Duration::from_secs(60)).await;
    assert_eq!(status, "rolled_back");
    let events = fleet.store.list_action_events(&exec, None).await.unwrap();
    let failed = events
        .iter()
        .find(|e| e.target_id == "h-3" && e.kind == "failed")
        .expect("h-3 failed");
    assert!(
        failed.detail["reason"]
            .as_str()
            .unwrap()
            .contains("not confirmed after 2 boots"),
        "{failed:?}"
    );
    for a in fleet.agents.iter_mut() {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "1.0.0", "{}: {s}", a.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_polling_over_http_take_the_update_with_the_same_protocol() {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let art = fleet.upload(firmware(100_000, 7), "2.1.0", None).await;
    let i = fleet.add_agent_with("poll-1", "", false).await;
    let j = fleet.add_agent("mqtt-1", "").await;
    fleet.agents[i].spawn();
    fleet.agents[j].spawn();
    let exec = fleet
        .execute(
            &art,
            "2.1.0",
            RolloutSpec::new(Strategy::Immediate),
            &["poll-1", "mqtt-1"],
        )
        .await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
    for a in fleet.agents.iter_mut() {
        a.kill();
        assert_eq!(a.status()["running_version"], "2.1.0", "{}", a.id);
    }
    let t = fleet.store.get_target("poll-1").await.unwrap();
    assert_eq!(
        t.inventory["agent_version"],
        env!("CARGO_PKG_VERSION"),
        "the polling agent sent its inventory: {t:?}"
    );
}

/// Gates between waves decided from what the server measured, and the wave
/// rows kept up to date in the store as the rollout runs: a health gate over
/// healthy devices passes every wave; a gate the server has no runner for
/// holds the rollout after the first wave for a person, saying so, who then
/// rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_gates_are_evaluated_between_waves_and_wave_rows_follow_the_rollout() {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let art = fleet.upload(firmware(32 * 1024, 6), "2.0.0", None).await;
    let ids = ["g-1", "g-2", "g-3"];
    for id in ids {
        let i = fleet.add_agent(id, "").await;
        fleet.agents[i].spawn();
    }
    let mut spec = RolloutSpec::new(Strategy::Rolling {
        batch_size: Threshold::Count(1),
    });
    spec.gate_after_each_wave = true;
    spec.min_finished_for_error_rate = 1;
    spec.action_timeout_ms = 60_000;
    let gates = serde_json::json!({ "gates": [
        { "name": "health_check" },
        { "name": "error_rate", "max_error_rate": 0.0 },
    ]});
    let exec = fleet
        .execute_with(&art, "2.0.0", spec.clone(), &ids, gates)
        .await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
    let results = fleet.store.list_gate_results(&exec).await.unwrap();
    assert_eq!(
        results.len(),
        6,
        "two gates after each of three waves: {results:?}"
    );
    assert!(results.iter().all(|g| g.passed), "{results:?}");
    let health = results.iter().find(|g| g.gate == "health_check").unwrap();
    assert_eq!(health.detail["measured"]["healthy"], 1, "{health:?}");
    let waves = fleet.store.list_waves(&exec).await.unwrap();
    assert_eq!(waves.len(), 3);
    for w in &waves {
        assert_eq!(w.status, "succeeded", "{waves:?}");
        assert!(w.started_at.is_some() && w.finished_at.is_some(), "{w:?}");
        assert!(w.started_at <= w.finished_at, "{w:?}");
    }
    assert!(waves[0].finished_at <= waves[1].started_at, "{waves:?}");

    // A scan the server cannot run: never passed. It holds the execution for a
    // person (paused, not rolled back, although the spec rolls back automatically).
    let art3 = fleet.upload(firmware(32 * 1024, 7), "3.0.0", None).await;
    let gates = serde_json::json!({ "gates": [
        { "name": "health_check" },
        { "name": "security_scan" },
    ]});
    let exec = fleet.execute_with(&art3, "3.0.0", spec, &ids, gates).await;
    fleet
        .wait_status(&exec, "paused", Duration::from_secs(60))
        .await;
    let row = fleet.store.get_execution(&exec).await.unwrap();
    assert_eq!(
        row.state["held"],
        "gate security_scan waits for a person (the server has no runner for it): resume the deployment to pass it",
        "{}",
        row.state
    );
    let results = fleet.store.list_gate_results(&exec).await.unwrap();
    assert_eq!(
        results.len(),
        2,
        "only the first wave got to its gate: {results:?}"
    );
    let scan = results.iter().find(|g| g.gate == "security_scan").unwrap();
    assert!(!scan.passed);
    assert_eq!(scan.detail["waits_for_person"], true, "{scan:?}");
    assert!(results.iter().any(|g| g.gate == "health_check" && g.passed));
    // A person decides against it: roll back.
    fleet.operator(&exec, "rollback").await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "rolled_back"
    );
    let waves = fleet.store.list_waves(&exec).await.unwrap();
    let statuses: Vec<&str> = waves.iter().map(|w| w.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["rolled_back", "canceled", "canceled"],
        "{waves:?}"
    );
    for a in fleet.agents.iter_mut() {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "2.0.0", "{}: {s}", a.id);
    }
}

/// The API answers status from memory (`read_cache_ttl`), here for ten minutes: only the
/// orchestrator's commits, heard through the fleet plane, can move what it shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_status_follows_the_orchestrator_through_the_read_cache() {
    use cutover_server::auth::{Role, create_key};
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let secret = b"read-cache-test-secret-0123456789abcdef".to_vec();
    let mut settings = cutover_server::ServerSettings::new(secret.clone());
    settings.security.rate_limit = None;
    settings.read_cache_ttl = Duration::from_secs(600);
    let (_, key) = create_key(&fleet.store, &secret, "viewer", Role::Viewer, None, None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server =
        cutover_server::Server::new(settings, fleet.store.clone()).with_fleet(&fleet.plane);
    tokio::spawn(server.serve(listener, std::future::pending()));

    let art = fleet.upload(firmware(64 * 1024, 3), "2.0.0", None).await;
    for id in ["dev-1", "dev-2", "dev-3"] {
        let i = fleet.add_agent(id, "").await;
        fleet.agents[i].spawn();
    }
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let key = key.clone();
        let base = base.clone();
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .header("X-API-Key", key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let exec = fleet
        .execute(&art, "2.0.0", canary_spec(), &["dev-1", "dev-2", "dev-3"])
        .await;
    // Read it while it runs, so what the cache holds is older than the end.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let status = get(format!("/api/deployments/{exec}")).await;
        let s = status["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if ["succeeded", "failed", "rolled_back", "canceled"].contains(&s.as_str()) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status still {s} after 60 s (seen {seen:?}); store says {}",
            fleet.store.get_execution(&exec).await.unwrap().status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last["status"], "succeeded", "{last}");
    assert!(seen.len() >= 2, "only {seen:?} was seen");
    assert_eq!(
        fleet.store.get_execution(&exec).await.unwrap().status,
        "succeeded"
    );
    let list = get("/api/deployments?limit=5".into()).await;
    assert_eq!(list["deployments"][0]["status"], "succeeded", "{list}");
}
