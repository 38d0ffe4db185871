//! `cutover demo` of the real binary runs its whole story to the end with a
//! small fleet: the staging canary of 1.1.0, the approved promotion to
//! production, and the automatic rollback of the faulty 1.2.0. The store it
//! leaves in its data directory is read afterwards to check that the story
//! really happened and was not only printed.

use cutover_store::{ExecutionFilter, Store, TargetFilter};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the demo, killing it after `limit`; returns (exit success, stdout, stderr).
fn run_demo(data_dir: &std::path::Path, devices: u32, limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "demo",
            "--devices",
            &devices.to_string(),
            "--exit-when-done",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting cutover demo");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.success(), out, err),
        None => panic!("the demo did not finish within {limit:?}\nstdout:\n{out}\nstderr:\n{err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_its_whole_story_with_a_small_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || run_demo(&path, 60, Duration::from_secs(120))
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(ok, "the demo failed\nstdout:\n{out}\nstderr:\n{err}");
    let has = |needle: &str| {
        assert!(
            out.contains(needle),
            "the output does not say {needle:?}\nstdout:\n{out}\nstderr:\n{err}"
        )
    };
    has("staging: 1.1.0 succeeded");
    has("production: 1.1.0 succeeded");
    has("staging: 1.2.0 rolled back automatically");
    has("rollback reason: wave 1 aborted");
    has("was not confirmed after 3 boots");
    // The approval story: refused before approval and for the creator.
    has("executing before approval: 409");
    has("the plan's creator approving it: 403 rule creator_cannot_approve");
    has("admin API key:  cut_");
    has("curl -s -H 'X-API-Key: cut_");
    assert!(
        took < Duration::from_secs(60),
        "the story should take well under a minute, took {took:?}"
    );

    // The store in the data directory holds what the output claims.
    let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
    let store = Store::connect(&url).await.expect("the demo's database");
    let mut executions = store
        .list_executions(&ExecutionFilter {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    executions.sort_by_key(|e| e.created_at);
    let story: Vec<(String, String, Option<String>)> = executions
        .iter()
        .map(|e| {
            (
                e.environment.clone(),
                e.status.clone(),
                e.spec["version"].as_str().map(str::to_string),
            )
        })
        .collect();
    let v = |s: &str| Some(s.to_string());
    assert_eq!(
        story,
        vec![
            ("staging".into(), "succeeded".into(), v("1.1.0")),
            ("production".into(), "succeeded".into(), v("1.1.0")),
            ("staging".into(), "rolled_back".into(), v("1.2.0")),
        ]
    );
    // 60 devices: 6 in development, 18 in staging, 36 in production; after
    // the rollback staging still runs 1.1.0 and development was never touched.
    for (env, n, version) in [
        ("development", 6, "1.0.0"),
        ("staging", 18, "1.1.0"),
        ("production", 36, "1.1.0"),
    ] {
        let targets = store
            .list_targets(&TargetFilter {
                environment: Some(env.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(targets.len(), n, "{env}");
        for t in &targets {
            assert_eq!(
                t.current_version.as_deref(),
                Some(version),
                "{} in {env}",
                t.id
            );
        }
    }
}

#[test]
fn the_demo_refuses_a_fleet_too_small_for_its_environments() {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["demo", "--devices", "2", "--exit-when-done"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--devices must be at least 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
