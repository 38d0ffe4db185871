//! `cutover config check` and `cutover config default`, run as the real
//! binary on real files.

use std::path::Path;
use std::process::{Command, Output};

fn cutover(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cutover"));
    command.args(args).current_dir(dir);
    // Keep the caller's CUTOVER_ settings out of the checks.
    for (name, _) in std::env::vars() {
        if name.starts_with("CUTOVER_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cutover: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"))
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

const EXAMPLE: &str = include_str!("../../../examples/deployment-config.yaml");

#[test]
fn the_shipped_example_checks_clean_with_a_summary() {
    let dir = workdir();
    write(dir.path(), "deployment-config.yaml", EXAMPLE);
    let out = cutover(
        &["config", "check", "deployment-config.yaml"],
        dir.path(),
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("valid deployment configuration"),
        "{stdout}"
    );
    assert!(stdout.contains("environments (4)"), "{stdout}");
    assert!(
        stdout.contains("production   stage production, approval 2 approvers"),
        "{stdout}"
    );
    assert!(stdout.contains("window 02:00-06:00 UTC"), "{stdout}");
    assert!(stdout.contains("health checks: 4"), "{stdout}");
    assert!(
        stdout.contains("quality gates: 5 before, 5 after"),
        "{stdout}"
    );
}

#[test]
fn default_prints_the_documented_example() {
    let dir = workdir();
    let out = cutover(&["config", "default"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), EXAMPLE);
    // and what it prints passes the check
    write(dir.path(), "printed.yaml", &text(&out.stdout));
    let out = cutover(&["config", "check", "printed.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_wrong_type_exits_non_zero_with_the_located_message() {
    let dir = workdir();
    write(
        dir.path(),
        "deployment-config.yaml",
        "environments:\n  production:\n    stage: production\n    aproval_required: true\n    max_concurrent_deployments: lots\n",
    );
    let out = cutover(
        &["config", "check", "deployment-config.yaml"],
        dir.path(),
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: deployment-config.yaml:5:33: environments.production.max_concurrent_deployments: expected a whole number, found \"lots\""),
        "{stderr}"
    );
    // the misspelt key found on the way is reported too
    assert!(
        stderr.contains("warning: deployment-config.yaml:4:5: environments.production.aproval_required: unknown key \"aproval_required\" is ignored (did you mean approval_required?)"),
        "{stderr}"
    );
}

#[test]
fn an_impossible_time_and_a_bad_zone_are_located() {
    let dir = workdir();
    let body = "environments:\n  production:\n    deployment_window:\n      start_time: \"25:61\"\n      end_time: \"06:00\"\n";
    write(dir.path(), "window.yaml", body);
    let out = cutover(&["config", "check", "window.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("window.yaml:4:19: environments.production.deployment_window.start_time: expected a time of day"), "{stderr}");

    let body = "environments:\n  production:\n    deployment_window:\n      start_time: \"02:00\"\n      end_time: \"06:00\"\n      timezone: Moon/Tranquility\n";
    write(dir.path(), "zone.yaml", body);
    let out = cutover(&["config", "check", "zone.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("zone.yaml:6:17: environments.production.deployment_window.timezone: expected an IANA time zone"), "{}", text(&out.stderr));
}

#[test]
fn warnings_alone_still_pass() {
    let dir = workdir();
    write(dir.path(), "d.yaml", "database:\n  pool_sise: 5\n");
    let out = cutover(&["config", "check", "d.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("warning: d.yaml:2:3: database.pool_sise: unknown key \"pool_sise\" is ignored (did you mean pool_size?)"), "{}", text(&out.stderr));
}

#[test]
fn deploy_and_host_files_are_recognised() {
    let dir = workdir();
    write(
        dir.path(),
        "deploy.yml",
        "name: test-app\ntype: python\nhealthCheck: /health\ncommand: python -m uvicorn main:app\n",
    );
    let out = cutover(&["config", "check", "deploy.yml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid deploy.yml for test-app (python)"));

    write(
        dir.path(),
        "config.yml",
        "port: 8000\nmanager: systemd\nenv: production\n",
    );
    let out = cutover(&["config", "check", "config.yml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("port 8000, manager systemd, env production"));

    // detected by content when the name says nothing
    write(
        dir.path(),
        "app.yaml",
        "name: x\ntype: rust\nhealthCheck: /h\n",
    );
    let out = cutover(&["config", "check", "app.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("app.yaml:2:7: type: expected one of python, node, docker, static, custom, found \"rust\""), "{}", text(&out.stderr));
}

#[test]
fn variables_and_overrides_come_from_the_environment() {
    let dir = workdir();
    write(
        dir.path(),
        "c.yaml",
        "database:\n  connection_string: \"postgresql://app@${DB_HOST}/cutover\"\n",
    );
    let out = cutover(&["config", "check", "c.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "c.yaml:2:22: database.connection_string: environment variable DB_HOST is not set"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = cutover(
        &["--output", "json", "config", "check", "c.yaml"],
        dir.path(),
        &[("DB_HOST", "db.internal")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("json: {e}"));
    assert_eq!(json["valid"], true);
    assert_eq!(json["summary"]["database"], "postgresql");

    let out = cutover(
        &["config", "check", "c.yaml"],
        dir.path(),
        &[("DB_HOST", "db"), ("CUTOVER_SERVER_LISTEN", "everywhere")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: environment variable CUTOVER_SERVER_LISTEN: server.listen: expected an address and port"), "{}", text(&out.stderr));
}

#[test]
fn json_output_describes_errors_and_summaries() {
    let dir = workdir();
    write(dir.path(), "deployment-config.yaml", EXAMPLE);
    let out = cutover(
        &[
            "config",
            "check",
            "deployment-config.yaml",
            "--output",
            "json",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("json: {e}"));
    assert_eq!(json["kind"], "deployment");
    assert_eq!(
        json["summary"]["environments"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(json["summary"]["environments"][3]["stage"], "production");
    assert_eq!(json["summary"]["environments"][3]["approvers"], 2);

    write(
        dir.path(),
        "bad.yaml",
        "security:\n  ip_whitelist:\n    - 10.0.0.0/33\n",
    );
    let out = cutover(
        &["config", "check", "bad.yaml", "--output", "json"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("json: {e}"));
    assert_eq!(json["valid"], false);
    assert_eq!(json["error"]["path"], "security.ip_whitelist[0]");
    assert_eq!(json["error"]["location"]["line"], 3);
    assert_eq!(json["error"]["location"]["column"], 7);
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = workdir();
    let out = cutover(&["config", "check", "nowhere.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read nowhere.yaml"),
        "{}",
        text(&out.stderr)
    );
}
