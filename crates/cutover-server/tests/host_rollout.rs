//! Application releases rolled across hosts by the server: a real fleet
//! plane, three real `cutover-agent` processes with `kind: host` (each its own
//! deployments directory, host daemon and public proxy port), a Python app
//! bundle signed and uploaded, served over HTTP through each host's proxy.
//! The embedded broker, and Mosquitto when CUTOVER_TEST_MQTT_URL is set.

mod fleet_common;
mod host_common;

use cutover_core::engine::{RolloutSpec, Strategy, Threshold};
use fleet_common::{Broker, Fleet, external_broker};
use host_common::{Daemons, HostInfo, add_host, all_serve, python_app};
use std::time::{Duration, Instant};

fn rolling_one_by_one() -> RolloutSpec {
    let mut spec = RolloutSpec::new(Strategy::Rolling {
        batch_size: Threshold::Count(1),
    });
    spec.error_threshold = Threshold::Count(0);
    spec.min_finished_for_error_rate = 1;
    spec.action_timeout_ms = 60_000;
    spec
}

async fn host_story(broker: Broker) {
    let mut fleet = Fleet::start(broker).await;
    let ids = ["web-1", "web-2", "web-3"];
    let mut hosts: Vec<HostInfo> = Vec::new();
    for id in ids {
        let (i, host) = add_host(&mut fleet, id, true).await;
        fleet.agents[i].spawn();
        hosts.push(host);
    }
    let _daemons = Daemons(hosts.iter().map(|h| h.deployments.clone()).collect());
    // web-2 carries a setting that version 3.0.0 cannot live with.
    std::fs::create_dir_all(hosts[1].app_dir()).unwrap();
    std::fs::write(
        hosts[1].app_dir().join(".env.production"),
        "BROKEN_FEATURE=1\n",
    )
    .unwrap();

    // 1.0.0 everywhere at once.
    let v1 = fleet.upload(python_app("1.0.0"), "1.0.0", None).await;
    let exec = fleet
        .execute(&v1, "1.0.0", RolloutSpec::new(Strategy::Immediate), &ids)
        .await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(90)).await,
        "succeeded"
    );
    all_serve(&hosts, "1.0.0", Duration::from_secs(5)).await;

    // 2.0.0 one host at a time; each reports the stages of a real deploy.
    let v2 = fleet.upload(python_app("2.0.0"), "2.0.0", None).await;
    let exec = fleet
        .execute(&v2, "2.0.0", rolling_one_by_one(), &ids)
        .await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(90)).await,
        "succeeded"
    );
    all_serve(&hosts, "2.0.0", Duration::from_secs(5)).await;
    let events = fleet.store.list_action_events(&exec, None).await.unwrap();
    for id in ids {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e.target_id == id)
            .map(|e| e.kind.as_str())
            .collect();
        for stage in ["downloading", "installing", "verifying", "succeeded"] {
            assert!(
                kinds.contains(&stage),
                "{id} never reported {stage}: {kinds:?}"
            );
        }
        let t = fleet.store.get_target(id).await.unwrap();
        assert_eq!(t.current_version.as_deref(), Some("2.0.0"), "{id}");
        assert_eq!(t.inventory["kind"], "host", "{id}: {:?}", t.inventory);
    }

    // 3.0.0 fails its health check on web-2: the rollout aborts and every
    // host it touched, web-1 already switched to 3.0.0 included, goes back.
    let v3 = fleet.upload(python_app("3.0.0"), "3.0.0", None).await;
    let watched = hosts[0].port;
    let (stop_watch, watch_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        // What web-1 serves during the rollout and its rollback.
        let (mut seen, mut failed) = (Vec::<String>::new(), 0u32);
        while !*watch_rx.borrow() {
            match host_common::get(watched).await {
                Ok(body) => {
                    if seen.last() != Some(&body) {
                        seen.push(body);
                    }
                }
                Err(_) => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (seen, failed)
    });
    let started = Instant::now();
    let exec = fleet
        .execute(&v3, "3.0.0", rolling_one_by_one(), &ids)
        .await;
    let status = fleet.finish(&exec, Duration::from_secs(120)).await;
    let took = started.elapsed();
    assert_eq!(status, "rolled_back");
    all_serve(&hosts, "2.0.0", Duration::from_secs(5)).await;
    stop_watch.send(true).unwrap();
    let (seen, failed) = watcher.await.unwrap();
    assert_eq!(
        seen,
        vec!["web 2.0.0\n", "web 3.0.0\n", "web 2.0.0\n"],
        "web-1 went to 3.0.0 and back"
    );
    assert_eq!(failed, 0, "web-1 answered every request while switching");

    let events = fleet.store.list_action_events(&exec, None).await.unwrap();
    let of = |id: &str, kind: &str| events.iter().any(|e| e.target_id == id && e.kind == kind);
    assert!(
        of("web-1", "succeeded"),
        "web-1 took 3.0.0 first: {events:?}"
    );
    assert!(
        of("web-1", "rolled_back"),
        "web-1 was rolled back: {events:?}"
    );
    let failed = events
        .iter()
        .find(|e| e.target_id == "web-2" && e.kind == "failed")
        .expect("web-2 failed");
    assert_eq!(failed.detail["failed_step"], "health", "{failed:?}");
    let reason = failed.detail["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("health check failed") && reason.contains("503"),
        "{reason}"
    );
    assert!(!of("web-3", "installing"), "web-3 was never touched");
    // The failed release is kept with its logs; nothing was switched on web-2.
    let failed_dir = hosts[1].app_dir().join("failed");
    let kept: Vec<_> = std::fs::read_dir(&failed_dir).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1, "{failed_dir:?}");
    assert!(kept[0].path().join(".cutover/release.json").is_file());
    for id in ids {
        let t = fleet.store.get_target(id).await.unwrap();
        assert_eq!(t.current_version.as_deref(), Some("2.0.0"), "{id}");
    }
    // Each agent says the same after a restart: the version it really runs.
    for a in fleet.agents.iter_mut() {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "2.0.0", "{}: {s}", a.id);
        assert_eq!(s["kind"], "host");
    }
    eprintln!("3.0.0 aborted and rolled back on every touched host in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_roll_releases_and_all_go_back_when_one_fails_embedded() {
    host_story(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_roll_releases_and_all_go_back_when_one_fails_mosquitto() {
    let Some(url) = external_broker() else { return };
    host_story(Broker::External(url)).await;
}
