//! Shared fixture of the git-push tests: a temporary "server" (repos and
//! deployments dirs), a working repository to push from, the real `cutover`
//! binary, and a guard that stops the host daemon when the test ends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const CUTOVER: &str = env!("CARGO_BIN_EXE_cutover");

pub struct Server {
    pub tmp: tempfile::TempDir,
    pub repos: PathBuf,
    pub deployments: PathBuf,
    pub work: PathBuf,
    pub port: u16,
    pub app: String,
    /// Seconds a replaced release stays warm (CUTOVER_KEEP_WARM).
    pub keep_warm: &'static str,
}

impl Server {
    /// Sets up `app` with `cutover setup` and an empty working repository.
    pub fn setup(app: &str) -> Self {
        Self::setup_with(app, "60")
    }

    pub fn setup_with(app: &str, keep_warm: &'static str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server {
            repos: tmp.path().join("repos"),
            deployments: tmp.path().join("deployments"),
            work: tmp.path().join("work"),
            // Bound by the host daemon later: a port outside the kernel's
            // ephemeral range stays free until then.
            port: cutover_agent::ports::fixed_port().expect("a free port"),
            app: app.to_string(),
            keep_warm,
            tmp,
        };
        let port = server.port.to_string();
        let out = server.cutover(&[
            "setup",
            app,
            "git@example.invalid:me/app.git",
            "--port",
            &port,
        ]);
        assert!(out.status.success(), "setup failed: {}", text(&out));
        std::fs::create_dir_all(&server.work).unwrap();
        server.git(&["init", "-q", "-b", "main"]);
        let remote = server.repo().display().to_string();
        server.git(&["remote", "add", "production", &remote]);
        server
    }

    pub fn repo(&self) -> PathBuf {
        self.repos.join(format!("{}.git", self.app))
    }

    pub fn app_dir(&self) -> PathBuf {
        self.deployments.join(&self.app)
    }

    /// Environment every cutover process of this test gets (through git too).
    pub fn env(&self, command: &mut Command) {
        command
            .env("CUTOVER_REPOS_DIR", &self.repos)
            .env("CUTOVER_DEPLOYMENTS_DIR", &self.deployments)
            .env("CUTOVER_BIND_HOST", "127.0.0.1")
            .env("CUTOVER_KEEP_WARM", self.keep_warm)
            .env("GIT_AUTHOR_NAME", "tester")
            .env("GIT_AUTHOR_EMAIL", "tester@example.invalid")
            .env("GIT_COMMITTER_NAME", "tester")
            .env("GIT_COMMITTER_EMAIL", "tester@example.invalid")
            .env_remove("GIT_DIR");
    }

    pub fn cutover(&self, args: &[&str]) -> Output {
        let mut command = Command::new(CUTOVER);
        command.args(args).current_dir(self.tmp.path());
        self.env(&mut command);
        command.output().unwrap()
    }

    pub fn git_in(&self, dir: &Path, args: &[&str]) -> Output {
        let mut command = Command::new("git");
        command.args(args).current_dir(dir);
        self.env(&mut command);
        let out = command.output().unwrap();
        assert!(out.status.success(), "git {args:?} failed: {}", text(&out));
        out
    }

    pub fn git(&self, args: &[&str]) -> Output {
        self.git_in(&self.work.clone(), args)
    }

    pub fn write(&self, path: &str, content: &str) {
        let path = self.work.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Copies an example app, subdirectories too, from the repository's
    /// examples/ directory.
    pub fn copy_example(&self, name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        copy_tree(&dir, &self.work);
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        let out = self.git(&["rev-parse", "HEAD"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `git push production BRANCH`; returns git's combined output (the
    /// hook's lines come back prefixed with "remote:").
    pub fn push(&self, branch: &str) -> String {
        let out = self.git(&["push", "-q", "production", branch]);
        text(&out)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
            .unwrap_or_else(|e| panic!("GET {path} on :{} failed: {e}", self.port))
    }

    pub fn link(&self, name: &str) -> Option<String> {
        std::fs::read_link(self.app_dir().join(name))
            .ok()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
    }

    pub fn dir_entries(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.app_dir().join(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.cutover(&["host", "stop"]);
        // Belt and braces: the daemon must not outlive the test.
        let pid_file = self.deployments.join(".cutover-host/host.pid");
        if let Ok(pid) = std::fs::read_to_string(pid_file) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).output();
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Whether `program --version` runs. A missing tool skips a test on a
/// developer's machine and fails it under CI (CI=true), which must have it.
pub fn tool_available(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is required under CI=true and was not found"
        );
        eprintln!("skipped: {program} is not installed");
    }
    found
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (one connection per request).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad answer: {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until `f` holds, up to `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A stdlib-only Python web app: `/` answers the text of version.txt, `/health`
/// answers 500 when the file `unhealthy` exists, `/slow` takes a second.
pub const STDLIB_APP: &str = r#"import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, sent at once (no Nagle wait on the body).
    wbufsize = 65536
    disable_nagle_algorithm = True
    def do_GET(self):
        if self.path == "/health":
            code, body = (500, b"sick\n") if os.path.exists("unhealthy") else (200, b"ok\n")
        elif self.path == "/slow":
            time.sleep(1.0)
            code, body = 200, open("version.txt", "rb").read()
        else:
            code, body = 200, open("version.txt", "rb").read()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Writes the stdlib app with `version` and a deploy.yml with a short deadline.
pub fn write_stdlib_app(server: &Server, version: &str, extra_yaml: &str) {
    server.write("app.py", STDLIB_APP);
    server.write("version.txt", &format!("{version}\n"));
    server.write(
        "deploy.yml",
        &format!(
            "name: {}\ntype: python\ncommand: python app.py\nhealthCheck:\n  path: /health\n  interval: 200ms\n  timeout: 1s\n  deadline: 3s\n{extra_yaml}",
            server.app
        ),
    );
}
