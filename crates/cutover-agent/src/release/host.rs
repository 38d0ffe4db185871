//! The per-host daemon of the built-in process manager (`cutover host run`).
//!
//! It holds each application's public port with the reverse proxy, runs
//! releases (processes under a supervisor, or static files served by itself)
//! on internal ports, and is driven over a Unix socket with the JSON line
//! protocol of `protocol`. It outlives the deploy that started it, so a push
//! returns while the release keeps serving.

use super::protocol::{AppStatus, ProcessState, ReleaseStatus, Request, Response, RunSpec};
use super::proxy::{Proxy, Upstream};
use super::static_site;
use super::supervisor::{ProcessSpec, Supervisor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

/// Where the daemon keeps its socket, pid and log, under the deployments dir.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl HostPaths {
    pub fn new(deployments_dir: &Path) -> Self {
        let dir = deployments_dir.join(".cutover-host");
        Self {
            socket: dir.join("host.sock"),
            pid: dir.join("host.pid"),
            log: dir.join("host.log"),
            dir,
        }
    }
}

enum Runner {
    Process(Supervisor),
    Static(JoinHandle<()>),
}

struct Running {
    upstream: Arc<Upstream>,
    runner: Runner,
}

impl Running {
    fn status(&self) -> ReleaseStatus {
        let (state, pid, restarts, last_exit) = match &self.runner {
            Runner::Process(supervisor) => {
                let snap = supervisor.snapshot();
                (snap.state, snap.pid, snap.restarts, snap.last_exit)
            }
            Runner::Static(_) => (ProcessState::Running, None, 0, None),
        };
        ReleaseStatus {
            release: self.upstream.release.clone(),
            port: self.upstream.port,
            state,
            pid,
            restarts,
            last_exit,
            in_flight: self.upstream.in_flight(),
        }
    }

    async fn stop(self) {
        match self.runner {
            Runner::Process(supervisor) => supervisor.stop().await,
            Runner::Static(task) => task.abort(),
        }
    }
}

#[derive(Default)]
struct App {
    proxy: Option<Proxy>,
    listen: Option<String>,
    releases: HashMap<String, Running>,
}

impl App {
    fn serving(&self) -> Option<String> {
        self.proxy
            .as_ref()
            .and_then(|p| p.current())
            .map(|u| u.release.clone())
    }
}

type Apps = Arc<Mutex<HashMap<String, App>>>;

/// Runs the daemon until a Shutdown request or `shutdown` is notified.
pub async fn run(deployments_dir: &Path, shutdown: Arc<Notify>) -> std::io::Result<()> {
    let paths = HostPaths::new(deployments_dir);
    std::fs::create_dir_all(&paths.dir)?;
    if paths.socket.exists() {
        if UnixStream::connect(&paths.socket).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "a host daemon already answers on {}",
                    paths.socket.display()
                ),
            ));
        }
        std::fs::remove_file(&paths.socket)?;
    }
    let listener = UnixListener::bind(&paths.socket)?;
    std::fs::write(&paths.pid, std::process::id().to_string())?;
    let apps: Apps = Arc::default();
    tracing::info!(socket = %paths.socket.display(), "host daemon listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let apps = apps.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve_connection(stream, apps, shutdown).await {
                        tracing::warn!(%error, "host connection failed");
                    }
                });
            }
            _ = shutdown.notified() => break,
        }
    }
    // Stop every release, each process group cleanly.
    let drained: Vec<Running> = {
        let mut apps = apps.lock().await;
        apps.values_mut()
            .flat_map(|app| {
                app.proxy = None;
                app.releases.drain().map(|(_, r)| r).collect::<Vec<_>>()
            })
            .collect()
    };
    futures_join_all(drained.into_iter().map(Running::stop)).await;
    let _ = std::fs::remove_file(&paths.socket);
    let _ = std::fs::remove_file(&paths.pid);
    Ok(())
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}

async fn serve_connection(
    stream: UnixStream,
    apps: Apps,
    shutdown: Arc<Notify>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let (response, stop) = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Shutdown) => (
                Response {
                    pid: Some(std::process::id()),
                    ..Response::ok()
                },
                true,
            ),
            Ok(request) => (handle(request, &apps).await, false),
            Err(error) => (Response::error(format!("bad request: {error}")), false),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
        if stop {
            shutdown.notify_one();
            return Ok(());
        }
    }
    Ok(())
}

async fn handle(request: Request, apps: &Apps) -> Response {
    match request {
        Request::Ping => Response {
            pid: Some(std::process::id()),
            ..Response::ok()
        },
        Request::Start {
            app,
            release,
            run,
            port,
            log,
        } => start(apps, app, release, run, port, log).await,
        Request::Switch {
            app,
            release,
            listen,
            keep_warm_ms,
            drain_ms,
            if_unserved,
        } => {
            if if_unserved && let Some(serving) = apps.lock().await.get(&app).and_then(App::serving)
            {
                return Response::error(format!("{app} is already serving {serving}"));
            }
            switch(apps, app, release, listen, keep_warm_ms, drain_ms).await
        }
        Request::Stop {
            app,
            release,
            drain_ms,
        } => {
            let running = {
                let mut apps = apps.lock().await;
                let Some(state) = apps.get_mut(&app) else {
                    return Response::error(format!("no app {app:?} on this host"));
                };
                if state.serving().as_deref() == Some(release.as_str()) {
                    return Response::error(format!(
                        "release {release} is serving {app}; switch away from it first"
                    ));
                }
                state.releases.remove(&release)
            };
            match running {
                Some(running) => {
                    running
                        .upstream
                        .drain(Duration::from_millis(drain_ms))
                        .await;
                    running.stop().await;
                    Response::ok()
                }
                None => Response::error(format!("release {release} of {app} is not running")),
            }
        }
        Request::Status { app } => {
            let apps = apps.lock().await;
            let mut list: Vec<AppStatus> = apps
                .iter()
                .filter(|(name, _)| app.as_ref().is_none_or(|wanted| wanted == *name))
                .map(|(name, state)| {
                    let mut releases: Vec<ReleaseStatus> =
                        state.releases.values().map(Running::status).collect();
                    releases.sort_by(|a, b| a.release.cmp(&b.release));
                    AppStatus {
                        app: name.clone(),
                        listen: state.proxy.as_ref().map(|p| p.local_addr().to_string()),
                        serving: state.serving(),
                        releases,
                        proxied_requests: state.proxy.as_ref().map_or(0, Proxy::requests),
                        proxy_errors: state.proxy.as_ref().map_or(0, Proxy::errors),
                    }
                })
                .collect();
            list.sort_by(|a, b| a.app.cmp(&b.app));
            Response {
                apps: list,
                pid: Some(std::process::id()),
                ..Response::ok()
            }
        }
        Request::Shutdown => Response::ok(),
    }
}

async fn start(
    apps: &Apps,
    app: String,
    release: String,
    run: RunSpec,
    port: u16,
    log: PathBuf,
) -> Response {
    // A release already running (a warm previous one) is reused as it is.
    if let Some(running) = apps
        .lock()
        .await
        .get(&app)
        .and_then(|a| a.releases.get(&release))
    {
        return Response {
            port: Some(running.upstream.port),
            ..Response::ok()
        };
    }
    let (port, runner) = match run {
        RunSpec::Static { root } => {
            let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => listener,
                Err(error) => return Response::error(format!("cannot bind port {port}: {error}")),
            };
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
            (port, Runner::Static(static_site::serve(listener, root)))
        }
        RunSpec::Process { command, cwd, env } => {
            let port = if port == 0 {
                // The app binds it later; a kernel-chosen port could be
                // taken meanwhile by any outgoing connection.
                match crate::ports::fixed_port() {
                    Ok(port) => port,
                    Err(error) => return Response::error(format!("no free port: {error}")),
                }
            } else {
                port
            };
            let command = command.replace("{port}", &port.to_string());
            let mut env = env;
            env.push(("PORT".to_string(), port.to_string()));
            let supervisor = Supervisor::start(ProcessSpec {
                command,
                cwd,
                env,
                log,
                grace: Duration::from_secs(10),
            });
            (port, Runner::Process(supervisor))
        }
    };
    let running = Running {
        upstream: Upstream::new(&release, port),
        runner,
    };
    apps.lock()
        .await
        .entry(app)
        .or_default()
        .releases
        .insert(release, running);
    Response {
        port: Some(port),
        ..Response::ok()
    }
}

async fn switch(
    apps: &Apps,
    app: String,
    release: String,
    listen: String,
    keep_warm_ms: u64,
    drain_ms: u64,
) -> Response {
    let mut guard = apps.lock().await;
    let Some(state) = guard.get_mut(&app) else {
        return Response::error(format!("no app {app:?} on this host"));
    };
    let Some(upstream) = state.releases.get(&release).map(|r| r.upstream.clone()) else {
        return Response::error(format!("release {release} of {app} is not running"));
    };
    if state.proxy.is_none() || state.listen.as_deref() != Some(listen.as_str()) {
        // The public port changed (or is bound for the first time): bind the
        // new one before letting the old one go.
        match Proxy::bind(&listen).await {
            Ok(proxy) => {
                if let Some(current) = state.proxy.as_ref().and_then(Proxy::current) {
                    proxy.switch(current);
                }
                state.proxy = Some(proxy);
                state.listen = Some(listen.clone());
            }
            Err(error) => return Response::error(format!("cannot bind {listen}: {error}")),
        }
    }
    let proxy = state.proxy.as_ref().expect("bound above");
    let replaced = proxy.switch(upstream).map(|u| u.release.clone());
    drop(guard);
    if let Some(old) = replaced.clone().filter(|old| *old != release) {
        let apps = apps.clone();
        tokio::spawn(retire(apps, app, old, keep_warm_ms, drain_ms));
    }
    Response {
        replaced,
        ..Response::ok()
    }
}

/// Keeps a replaced release warm, then drains and stops it unless it is
/// serving again by then (a rollback).
async fn retire(apps: Apps, app: String, release: String, keep_warm_ms: u64, drain_ms: u64) {
    tokio::time::sleep(Duration::from_millis(keep_warm_ms)).await;
    let upstream = {
        let apps = apps.lock().await;
        let Some(state) = apps.get(&app) else { return };
        if state.serving().as_deref() == Some(release.as_str()) {
            return;
        }
        match state.releases.get(&release) {
            Some(running) => running.upstream.clone(),
            None => return,
        }
    };
    upstream.drain(Duration::from_millis(drain_ms)).await;
    let running = {
        let mut apps = apps.lock().await;
        let Some(state) = apps.get_mut(&app) else {
            return;
        };
        if state.serving().as_deref() == Some(release.as_str()) {
            return;
        }
        state.releases.remove(&release)
    };
    if let Some(running) = running {
        tracing::info!(%app, %release, "stopping replaced release");
        running.stop().await;
    }
}

/// Starts a new session so the daemon outlives the hook or login that
/// started it and gets none of its terminal's signals.
pub fn detach_session() {
    // Fails only when we already lead a process group, which is detached enough.
    let _ = nix::unistd::setsid();
}
