//! Host agents on top of the fleet fixture: each a real `cutover-agent`
//! process with `kind: host`, its own deployments directory, host daemon and
//! public proxy port, and application bundles made as tar.gz files.
#![allow(dead_code)]

use crate::fleet_common::{AgentProc, CREDENTIAL_PREFIX, Fleet};
use cutover_server::fleet::enroll_target;
use cutover_store::NewTarget;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const APP: &str = "web";

/// One host: where its releases live and the port its proxy holds.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub id: String,
    pub deployments: PathBuf,
    pub port: u16,
}

impl HostInfo {
    pub fn app_dir(&self) -> PathBuf {
        self.deployments.join(APP)
    }
}

/// Enrolls a host target and writes its agent config; the agent's index in
/// `fleet.agents` and where the host keeps its releases.
pub async fn add_host(fleet: &mut Fleet, id: &str, mqtt: bool) -> (usize, HostInfo) {
    let credential = format!("{CREDENTIAL_PREFIX}{id}-0123456789");
    enroll_target(
        &fleet.store,
        &NewTarget {
            id: id.into(),
            name: id.into(),
            environment: "staging".into(),
            kind: "host".into(),
            hardware_model: Some("board-x".into()),
            ..Default::default()
        },
        &credential,
    )
    .await
    .expect("enroll");
    let root = fleet.dir.path().join(format!("host-{id}"));
    let deployments = root.join("deployments");
    let state = root.join("agent");
    std::fs::create_dir_all(&root).expect("host dir");
    // The host daemon binds it only at the first switch, seconds from now: a
    // port outside the kernel's ephemeral range stays free until then.
    let port = cutover_agent::ports::fixed_port().expect("a free port");
    let config = fleet.dir.path().join(format!("{id}.yaml"));
    let text = format!(
        "target_id: {id}\nkind: host\nenvironment: staging\nhardware_model: board-x\n\
         credential: {credential}\n{}server_url: {}\npublic_keys: [\"{}\"]\nresend_ms: 500\n\
         slot_dir: {}\nhost:\n  app: {APP}\n  deployments_dir: {}\n  port: {port}\n  keep_warm_s: 120\n",
        if mqtt {
            format!("mqtt_url: {}\n", fleet.plane.broker_url())
        } else {
            "poll_interval_ms: 200\n".to_string()
        },
        fleet.http_url,
        fleet.public_hex,
        state.display(),
        deployments.display(),
    );
    std::fs::write(&config, text).expect("config");
    fleet.agents.push(AgentProc {
        id: id.into(),
        config,
        // The agent's log is written beside it, as `agent.log`.
        slot_dir: state,
        child: None,
    });
    (
        fleet.agents.len() - 1,
        HostInfo {
            id: id.into(),
            deployments,
            port,
        },
    )
}

/// A tar.gz of `files` under one top directory, made by `tar czf app.tgz app/`.
pub fn bundle(files: &[(&str, String)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    for (path, text) in files {
        let file = app.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, text).expect("write");
    }
    let out = dir.path().join("app.tgz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(dir.path())
        .arg("app")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed");
    std::fs::read(&out).expect("bundle")
}

/// A small Python app answering `web {version}` on `/` and its health on
/// `/health`; version 3.0.0 is unhealthy where `BROKEN_FEATURE=1` is set in
/// the host's `.env.production`.
pub fn python_app(version: &str) -> Vec<u8> {
    let app = format!(
        r#"import http.server, os
VERSION = "{version}"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            broken = VERSION == "3.0.0" and os.environ.get("BROKEN_FEATURE") == "1"
            code, body = (503, b"broken") if broken else (200, b"ok")
        else:
            code, body = 200, ("web " + VERSION + "\n").encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#
    );
    let deploy = "name: web\ntype: custom\ncommand: exec python3 app.py\nhealthCheck:\n  path: /health\n  interval: 200ms\n  deadline: 10s\ndrainTimeout: 1s\nkeepReleases: 3\n".to_string();
    bundle(&[("deploy.yml", deploy), ("app.py", app)])
}

/// GET `/` through a host's public port: the body, or why none came.
pub async fn get(port: u16) -> Result<String, String> {
    let resp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// Waits until every host serves `web {version}` through its proxy.
pub async fn all_serve(hosts: &[HostInfo], version: &str, within: Duration) {
    let want = format!("web {version}\n");
    let deadline = Instant::now() + within;
    for h in hosts {
        loop {
            let got = get(h.port).await;
            if got.as_deref() == Ok(want.as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} serves {got:?} on :{}, not {version}",
                h.id,
                h.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Stops the host daemons (and their apps) the agents started.
pub struct Daemons(pub Vec<PathBuf>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for deployments in &self.0 {
            stop_daemon(deployments);
        }
    }
}

/// Asks the daemon to shut down over its socket; it stops its apps first.
pub fn stop_daemon(deployments: &Path) {
    use std::io::{BufRead, Write};
    let socket = deployments.join(".cutover-host").join("host.sock");
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = stream.write_all(b"{\"op\":\"shutdown\"}\n");
    let mut answer = String::new();
    let _ = std::io::BufReader::new(stream).read_line(&mut answer);
    // The socket disappears once the apps are stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
