//! The fleet commands of the real `cutover` binary: artifact keys and
//! signatures, and `fleet-sim` taking a rollout with injected health failures
//! from a real fleet plane over its embedded broker.

use cutover_core::engine::{RolloutSpec, Strategy, Threshold};
use cutover_core::protocol::ArtifactRef;
use cutover_server::fleet::{FleetPlane, FleetSettings, artifacts, enroll_target};
use cutover_store::{NewExecution, NewPlan, NewTarget, Store};
use std::process::Command;
use std::time::{Duration, Instant};

fn cutover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
}

#[test]
fn keygen_and_sign_produce_a_signature_the_agent_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let out = cutover()
        .args(["artifact", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = cutover()
        .args(["artifact", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key is not overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let image = dir.path().join("fw.img");
    std::fs::write(&image, b"firmware bytes").unwrap();
    let out = cutover()
        .args([
            "--output",
            "json",
            "artifact",
            "sign",
            "--version",
            "2.0.0",
            "--key",
        ])
        .arg(&key)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let public = std::fs::read_to_string(dir.path().join("k.key.pub")).unwrap();
    let vk = cutover_agent::device::verify::parse_public_key(&public).unwrap();
    let a = ArtifactRef {
        id: "x".into(),
        version: "2.0.0".into(),
        sha256: v["sha256"].as_str().unwrap().into(),
        size: 14,
        signature: v["signature"].as_str().unwrap().into(),
        key_id: String::new(),
        url: String::new(),
        hardware: vec![],
    };
    cutover_agent::device::verify::verify_file(&image, &a, &[vk]).unwrap();
    let mut other_version = a.clone();
    other_version.version = "2.0.1".into();
    assert!(cutover_agent::device::verify::verify_file(&image, &other_version, &[vk]).is_err());
    let bad = cutover()
        .args(["artifact", "sign", "--version", "1", "--key"])
        .arg(dir.path().join("none"))
        .arg(&image)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read the signing key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_sim_devices_take_a_rollout_and_twenty_percent_health_failures_roll_it_back() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = Store::connect(&db).await.unwrap();
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
        .unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let settings = FleetSettings {
        artifact_dir: dir.path().join("art"),
        claim_interval_ms: 200,
        ..Default::default()
    };
    let plane = FleetPlane::start(settings, store.clone(), stop_rx)
        .await
        .unwrap();
    let n = 50;
    let ids: Vec<String> = (0..n).map(|i| format!("sim-{i}")).collect();
    for id in &ids {
        let t = NewTarget {
            id: id.clone(),
            name: id.clone(),
            environment: "staging".into(),
            kind: "device".into(),
            hardware_model: Some("sim-board".into()),
            current_version: Some("1.0.0".into()),
            ..Default::default()
        };
        enroll_target(&store, &t, &format!("fleet-sim-credential-{id}"))
            .await
            .unwrap();
    }
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "--output",
            "json",
            "fleet-sim",
            "--devices",
            "50",
            "--environment",
            "staging",
        ])
        .args([
            "--failure-rate",
            "0.2",
            "--fail-stage",
            "health",
            "--latency-ms",
            "20",
            "--connections",
            "2",
        ])
        .args(["--mqtt-url", plane.broker_url(), "--duration-s", "12"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pair = artifacts::keygen();
    let key = artifacts::parse_secret(&pair.secret_hex).unwrap();
    let (sha, size) = plane.blobs().put(b"simulated firmware").unwrap();
    let art = store
        .insert_artifact(&cutover_store::NewArtifact {
            version: "2.0.0".into(),
            kind: "firmware".into(),
            sha256: sha.clone(),
            size_bytes: size as i64,
            signature: Some(artifacts::sign(&key, &sha, "2.0.0")),
            compatible_hardware: vec!["sim-board".into()],
            metadata: serde_json::json!({}),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut spec = RolloutSpec::new(Strategy::Rolling {
        batch_size: Threshold::Count(25),
    });
    spec.error_threshold = Threshold::percent(10);
    spec.min_finished_for_error_rate = 20;
    let plan = store
        .insert_plan(&NewPlan {
            name: "sim".into(),
            artifact_id: Some(art.id.clone()),
            version: "2.0.0".into(),
            target_environment: "staging".into(),
            strategy: "rolling".into(),
            spec: serde_json::json!({}),
            status: "executing".into(),
            created_by: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let waves: Vec<Vec<String>> = ids.chunks(25).map(|c| c.to_vec()).collect();
    let exec = store
        .insert_execution(&NewExecution {
            plan_id: plan.id,
            environment: "staging".into(),
            status: "pending".into(),
            spec: serde_json::json!({"artifact_id": art.id, "rollout": spec, "targets": ids}),
            waves,
            created_by: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    plane.wake(&exec.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let e = store.get_execution(&exec.id).await.unwrap();
        if ["succeeded", "failed", "rolled_back", "canceled"].contains(&e.status.as_str())
            || Instant::now() > deadline
        {
            break e.status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, "rolled_back");
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["devices"], 50);
    assert!(m["failed"].as_u64().unwrap() >= 3, "{m}");
    assert!(m["rolled_back"].as_u64().unwrap() >= 20, "{m}");
    // Only the first wave was touched, and every one of its devices is back on 1.0.0.
    for a in store.list_actions(&exec.id).await.unwrap() {
        if a.wave_index == 1 {
            assert!(
                ["pending", "canceled"].contains(&a.status.as_str()),
                "{a:?}"
            );
        }
    }
    let t = store.get_target("sim-0").await.unwrap();
    assert_eq!(t.current_version.as_deref(), Some("1.0.0"));
}
