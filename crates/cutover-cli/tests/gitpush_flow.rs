//! The git-push flow end to end: `cutover setup`, a real `git push` into the
//! bare repository, the post-receive hook running `cutover execute`, the host
//! daemon, real app processes and real HTTP through the proxy.

mod gitpush_support;

use gitpush_support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[test]
fn static_app_deploys_by_git_push_and_other_branches_are_skipped() {
    let server = Server::setup("site");
    server.copy_example("static-app");
    server.write(
        "deploy.yml",
        "name: site\ntype: static\nhealthCheck: /health.json\n",
    );
    server.commit("first");
    let started = Instant::now();
    let output = server.push("main");
    let push_to_healthy = started.elapsed();
    assert!(output.contains("deployed"), "{output}");
    assert!(output.contains("remote: -----> exported"), "{output}");
    eprintln!("static push to healthy: {push_to_healthy:?}");
    let (status, body) = server.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("Hello from a static release"), "{body}");
    assert_eq!(server.get("/health.json").0, 200);
    assert_eq!(server.get("/missing").0, 404);
    let current = server.link("current").unwrap();
    assert_eq!(server.dir_entries("releases"), vec![current.clone()]);
    // No clone: the release holds the tree, not a .git directory.
    assert!(
        !server
            .app_dir()
            .join("releases")
            .join(&current)
            .join(".git")
            .exists()
    );

    // Another branch is received but not deployed.
    server.git(&["checkout", "-q", "-b", "feature"]);
    server.write("index.html", "feature\n");
    server.commit("feature work");
    let output = server.push("feature");
    assert!(output.contains("skipping refs/heads/feature"), "{output}");
    assert_eq!(server.link("current").unwrap(), current);
    assert!(server.get("/").1.contains("Hello from a static release"));
}

#[test]
fn python_app_switches_under_keep_alive_load_with_no_failed_request() {
    let server = Server::setup("api");
    write_stdlib_app(&server, "v1", "");
    server.commit("v1");
    let output = server.push("main");
    assert!(output.contains("healthy after"), "{output}");
    assert_eq!(server.get("/").1.trim(), "v1");
    let first = server.link("current").unwrap();

    // A keep-alive client hammers the public port while v2 is pushed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let port = server.port;
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(4)
                    .build()
                    .unwrap();
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match client.get(format!("http://127.0.0.1:{port}/")).send().await {
                        Ok(r) if r.status() == 200 => {
                            let body = r.text().await.unwrap_or_default();
                            if seen.last() != Some(&body) {
                                seen.push(body);
                            }
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                seen
            })
        })
    };
    // A slow request in flight across the switch finishes on the old release.
    let slow = std::thread::spawn(move || http_get(port, "/slow"));
    std::thread::sleep(Duration::from_millis(100));
    write_stdlib_app(&server, "v2", "");
    server.commit("v2");
    let output = server.push("main");
    assert!(output.contains("switched"), "{output}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let seen = load.join().unwrap();
    let (slow_status, slow_body) = slow.join().unwrap().unwrap();
    assert_eq!((slow_status, slow_body.trim()), (200, "v1"));
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during the switch"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "too little load: {}",
        ok.load(Ordering::SeqCst)
    );
    // The same keep-alive connection moved to v2 and never went back.
    let seen: Vec<&str> = seen.iter().map(|s| s.trim()).collect();
    assert_eq!(seen, vec!["v1", "v2"]);
    assert_eq!(server.get("/").1.trim(), "v2");
    assert_eq!(server.link("previous").unwrap(), first);

    // The app's output is kept and shown.
    let logs = server.cutover(&["logs", "api"]);
    assert!(text(&logs).contains("listening on"), "{}", text(&logs));

    // Rollback to the warm previous release is immediate.
    let out = server.cutover(&["--output", "json", "rollback", "api"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["warm"], true, "{report}");
    assert!(report["took_ms"].as_u64().unwrap() < 1000, "{report}");
    eprintln!("rollback to warm previous: {} ms", report["took_ms"]);
    assert_eq!(server.get("/").1.trim(), "v1");
    assert_eq!(server.link("current").unwrap(), first);

    let releases = text(&server.cutover(&["releases", "api"]));
    assert!(
        releases.contains("current") && releases.contains("previous"),
        "{releases}"
    );
    assert!(releases.contains("rollback"), "{releases}");
}

#[test]
fn failed_health_check_and_failed_pre_deploy_leave_the_old_release_serving() {
    let server = Server::setup("svc");
    write_stdlib_app(&server, "v1", "");
    server.commit("v1");
    server.push("main");
    assert_eq!(server.get("/").1.trim(), "v1");
    let good = server.link("current").unwrap();

    // v2 never becomes healthy.
    write_stdlib_app(&server, "v2", "");
    server.write("unhealthy", "");
    server.commit("v2 is sick");
    let started = Instant::now();
    let output = server.push("main");
    assert!(output.contains("FAILED at step health check"), "{output}");
    assert!(output.contains("answered 500"), "{output}");
    assert!(
        output.contains("| listening on"),
        "the app log tail is shown: {output}"
    );
    assert!(
        output.contains("previous release keeps serving"),
        "{output}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.get("/").1.trim(), "v1");
    assert_eq!(server.link("current").unwrap(), good);
    let failed = server.dir_entries("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let failed_log = server
        .app_dir()
        .join("failed")
        .join(&failed[0])
        .join(".cutover/app.log");
    assert!(
        std::fs::read_to_string(failed_log)
            .unwrap()
            .contains("listening on")
    );

    // v3's preDeploy fails: nothing starts, nothing switches.
    std::fs::remove_file(server.work.join("unhealthy")).unwrap();
    write_stdlib_app(
        &server,
        "v3",
        "hooks:\n  preDeploy: echo migrating; echo 'no database' >&2; exit 3\n",
    );
    server.commit("v3 migration fails");
    let output = server.push("main");
    assert!(output.contains("FAILED at step preDeploy"), "{output}");
    assert!(output.contains("no database"), "{output}");
    assert_eq!(server.get("/").1.trim(), "v1");
    assert_eq!(server.link("current").unwrap(), good);
    assert_eq!(server.dir_entries("failed").len(), 2);
    let status = text(&server.cutover(&["--output", "json", "host", "status"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let running: Vec<&str> = status["apps"][0]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["release"].as_str().unwrap())
        .collect();
    assert_eq!(running, vec![good.as_str()], "only the good release runs");

    // The release log records both failures with their step.
    let log = std::fs::read_to_string(server.app_dir().join("releases.log")).unwrap();
    assert!(log.contains(r#""failed_step":"health check""#), "{log}");
    assert!(log.contains(r#""failed_step":"preDeploy""#), "{log}");
    // And the lock was released each time.
    let lock = text(&server.cutover(&["lock", "status", "svc"]));
    assert!(lock.contains("not locked"), "{lock}");
}

#[test]
fn two_concurrent_pushes_serialise_on_the_lock() {
    let server = Server::setup("busy");
    write_stdlib_app(&server, "v1", "hooks:\n  preDeploy: sleep 1\n");
    server.commit("v1");
    // A second clone pushes at the same time (forced: both target main).
    let other = server.tmp.path().join("other");
    server.git_in(
        server.tmp.path(),
        &["clone", "-q", &server.work.display().to_string(), "other"],
    );
    server.git_in(
        &other,
        &[
            "remote",
            "add",
            "production",
            &server.repo().display().to_string(),
        ],
    );
    std::fs::write(other.join("version.txt"), "v2\n").unwrap();
    server.git_in(&other, &["commit", "-q", "-am", "v2"]);
    let push = |dir: std::path::PathBuf| {
        let server_env = (server.repos.clone(), server.deployments.clone());
        std::thread::spawn(move || {
            let out = std::process::Command::new("git")
                .args(["push", "-q", "--force", "production", "HEAD:main"])
                .current_dir(dir)
                .env("CUTOVER_REPOS_DIR", &server_env.0)
                .env("CUTOVER_DEPLOYMENTS_DIR", &server_env.1)
                .env("CUTOVER_BIND_HOST", "127.0.0.1")
                .output()
                .unwrap();
            text(&out)
        })
    };
    let a = push(server.work.clone());
    std::thread::sleep(Duration::from_millis(150));
    let b = push(other.clone());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let both = format!("{a}\n{b}");
    assert!(both.contains("waiting for the deploy lock"), "{both}");
    assert_eq!(both.matches("-----> deployed").count(), 2, "{both}");
    // The deploys did not overlap: each started after the other ended.
    let log = std::fs::read_to_string(server.app_dir().join("releases.log")).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 2);
    let end = |e: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap()
    };
    // Without the lock both 1 s preDeploy hooks would run side by side and the
    // deploys would end within a few hundred ms of each other.
    assert!(
        end(&entries[1]) - end(&entries[0]) >= chrono::Duration::milliseconds(1000),
        "{log}"
    );
    let served = server.get("/").1;
    assert!(served.trim() == "v1" || served.trim() == "v2");
}

#[test]
fn init_refuses_to_overwrite_and_setup_writes_manager_files() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(CUTOVER)
            .args(args)
            .current_dir(tmp.path())
            .env("CUTOVER_REPOS_DIR", tmp.path().join("repos"))
            .env("CUTOVER_DEPLOYMENTS_DIR", tmp.path().join("deployments"))
            .env("CUTOVER_SYSTEMD_DIR", tmp.path().join("systemd"))
            .output()
            .unwrap()
    };
    let out = run(&["init"]);
    assert!(out.status.success());
    assert!(text(&out).contains("Created deploy.yml"));
    let out = run(&["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("already exists"));

    std::fs::create_dir_all(tmp.path().join("systemd")).unwrap();
    let out = run(&[
        "setup",
        "web",
        "git@x:web.git",
        "--port",
        "8123",
        "--manager",
        "systemd",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(tmp.path().join("systemd/web.service")).unwrap();
    assert!(unit.contains(&format!(
        "ExecStart={} host exec",
        std::fs::canonicalize(CUTOVER).unwrap().display()
    )));
    let config = std::fs::read_to_string(tmp.path().join("deployments/web/config.yml")).unwrap();
    assert!(
        config.contains("port: 8123") && config.contains("manager: systemd"),
        "{config}"
    );
    let hook =
        std::fs::read_to_string(tmp.path().join("repos/web.git/hooks/post-receive")).unwrap();
    assert!(hook.contains("execute --deployments-dir"), "{hook}");
    assert!(text(&out).contains("git push production main"));

    let out = run(&[
        "setup",
        "worker",
        "git@x:w.git",
        "--port",
        "8124",
        "--manager",
        "pm2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let eco =
        std::fs::read_to_string(tmp.path().join("deployments/worker/ecosystem.config.js")).unwrap();
    assert!(eco.contains(r#"name: "worker""#), "{eco}");

    let out = run(&["setup", "../evil", "git@x:w.git"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("invalid app name"));
}

#[test]
fn a_commit_with_a_link_out_of_the_release_is_refused() {
    let server = Server::setup("links");
    server.copy_example("static-app");
    server.write(
        "deploy.yml",
        "name: links\ntype: static\nhealthCheck: /health.json\n",
    );
    server.commit("good");
    server.push("main");
    let good = server.link("current").unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", server.work.join("passwd")).unwrap();
    server.commit("a link that escapes");
    let output = server.push("main");
    assert!(output.contains("FAILED at step export"), "{output}");
    assert!(output.contains("outside the release"), "{output}");
    assert_eq!(server.link("current").unwrap(), good);
    assert_eq!(server.get("/").0, 200);
}

#[test]
fn a_restarted_host_daemon_serves_the_current_release_again() {
    let server = Server::setup("again");
    write_stdlib_app(&server, "v1", "");
    server.commit("v1");
    server.push("main");
    assert_eq!(server.get("/").1.trim(), "v1");
    let out = server.cutover(&["host", "stop"]);
    assert!(text(&out).contains("stopped"), "{}", text(&out));
    assert!(
        http_get(server.port, "/").is_err(),
        "the port is closed once stopped"
    );
    // The next push starts the daemon, which first brings v1 back.
    write_stdlib_app(&server, "v2", "hooks:\n  preDeploy: exit 1\n");
    server.commit("v2 fails");
    let output = server.push("main");
    assert!(output.contains("FAILED at step preDeploy"), "{output}");
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            http_get(server.port, "/")
                .map(|(_, b)| b.trim() == "v1")
                .unwrap_or(false)
        }),
        "v1 is served again"
    );
}

#[test]
fn rollback_to_a_stopped_release_restarts_and_checks_it_first() {
    let server = Server::setup_with("cold", "0");
    write_stdlib_app(&server, "v1", "drainTimeout: 1s\n");
    server.commit("v1");
    server.push("main");
    write_stdlib_app(&server, "v2", "drainTimeout: 1s\n");
    server.commit("v2");
    server.push("main");
    assert_eq!(server.get("/").1.trim(), "v2");
    // Not kept warm: v1 is stopped once drained.
    let v1 = server.link("previous").unwrap();
    let stopped = eventually(std::time::Duration::from_secs(5), || {
        let status = text(&server.cutover(&["--output", "json", "host", "status"]));
        !status.contains(&v1)
    });
    assert!(stopped, "the replaced release was stopped");
    let out = server.cutover(&["rollback", "cold"]);
    let out = text(&out);
    assert!(out.contains("is not running; starting it again"), "{out}");
    assert!(out.contains("rolled cold back"), "{out}");
    assert_eq!(server.get("/").1.trim(), "v1");
    // --to an unknown release is refused with the known ones listed.
    let out = text(&server.cutover(&["rollback", "cold", "--to", "nope"]));
    assert!(
        out.contains("no release \"nope\"") && out.contains(&v1),
        "{out}"
    );
}

#[test]
fn host_exec_runs_the_current_release_in_the_foreground_for_systemd_and_pm2() {
    let server = Server::setup("fg");
    write_stdlib_app(&server, "v1", "");
    server.commit("v1");
    server.push("main");
    server.cutover(&["host", "stop"]);
    assert!(http_get(server.port, "/").is_err());
    let mut command = std::process::Command::new(CUTOVER);
    command
        .args(["host", "exec", "fg"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    server.env(&mut command);
    // Its own process group, so the app under `sh -c` goes with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().unwrap();
    let served = eventually(std::time::Duration::from_secs(5), || {
        http_get(server.port, "/")
            .map(|(_, b)| b.trim() == "v1")
            .unwrap_or(false)
    });
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    assert!(
        served,
        "host exec serves the current release on the public port"
    );
}
