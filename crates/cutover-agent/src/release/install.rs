//! The release installer: one deploy from a commit to a release serving
//! traffic, and the rollback to an earlier release.
//!
//! Steps, each named in the output and in errors: read deploy.yml from the
//! commit, take the deploy lock, export the tree into `releases/{id}`, link
//! the shared files, install dependencies by type, run preDeploy, start the
//! release on a fresh internal port, health-check it, switch the proxy and the
//! `current` link, run postDeploy, prune old releases. A failure before the
//! switch moves the release to `failed/` with its logs; nothing was switched,
//! so the old release keeps serving.

use super::client::{HostClient, HostError, Launcher};
use super::export::{self, ExportLimits};
use super::health::{self, HealthOutcome, HealthPolicy};
use super::history::{self, LogEntry, Outcome};
use super::layout::{AppLayout, META_DIR, tail};
use super::lock::DeployLock;
use super::protocol::{ProcessState, Request, RunSpec};
use cutover_core::config::{AppType, DeployConfig, HostConfig, ProcessManager};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where progress lines go (the push output, for a git hook).
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// The named steps of a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Config,
    Lock,
    Export,
    Link,
    Install,
    PreDeploy,
    Start,
    HealthCheck,
    Switch,
    PostDeploy,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Config => "config",
            Step::Lock => "lock",
            Step::Export => "export",
            Step::Link => "link shared files",
            Step::Install => "install",
            Step::PreDeploy => "preDeploy",
            Step::Start => "start",
            Step::HealthCheck => "health check",
            Step::Switch => "switch",
            Step::PostDeploy => "postDeploy",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {message}")]
pub struct DeployError {
    pub step: Step,
    pub message: String,
    /// The last lines of the log that explains it (install or app output).
    pub log_tail: String,
    /// Where the failed release was moved, when one was made.
    pub failed_dir: Option<PathBuf>,
}

impl DeployError {
    fn new(step: Step, message: impl Into<String>) -> Self {
        Self {
            step,
            message: message.into(),
            log_tail: String::new(),
            failed_dir: None,
        }
    }
}

/// What `deploy` needs besides the commit.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub deployments_dir: PathBuf,
    /// How to start the host daemon when it is not running.
    pub launcher: Launcher,
    /// The address part the public proxy binds (the port is config.yml's).
    pub bind_host: String,
    /// How long a replaced release stays running for an instant rollback.
    pub keep_warm: Duration,
    /// How long to wait for another deploy's lock.
    pub lock_timeout: Duration,
    pub limits: ExportLimits,
}

/// A successful deploy.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub app: String,
    pub release: String,
    pub sha: String,
    pub internal_port: u16,
    pub public_port: u16,
    pub replaced: Option<String>,
    pub healthy_after_ms: u64,
    pub took_ms: u64,
    pub warnings: Vec<String>,
}

/// Recorded in each release so a rollback (or a restarted daemon) can run it
/// again without deploy.yml.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub app: String,
    pub release: String,
    pub sha: String,
    pub run: RunSpec,
    pub health_path: String,
    pub health_interval_ms: u64,
    pub health_timeout_ms: u64,
    pub health_success_threshold: u32,
    pub health_deadline_ms: u64,
    pub drain_ms: u64,
    pub created: chrono::DateTime<chrono::Utc>,
}

impl Manifest {
    pub fn path(release_dir: &Path) -> PathBuf {
        release_dir.join(META_DIR).join("release.json")
    }
    pub fn load(release_dir: &Path) -> Result<Self, String> {
        let path = Self::path(release_dir);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse {}: {e}", path.display()))
    }
    fn health(&self) -> HealthPolicy {
        HealthPolicy {
            path: self.health_path.clone(),
            interval: Duration::from_millis(self.health_interval_ms),
            timeout: Duration::from_millis(self.health_timeout_ms),
            success_threshold: self.health_success_threshold,
            deadline: Duration::from_millis(self.health_deadline_ms),
        }
    }
}

/// The application name a bare repository stands for: `/var/repos/web.git` → `web`.
pub fn app_name_from_git_dir(git_dir: &Path) -> Option<String> {
    let name = git_dir.file_name()?.to_string_lossy().into_owned();
    let name = name.strip_suffix(".git").unwrap_or(&name).to_string();
    (!name.is_empty()).then_some(name)
}

/// Reads and validates the host's config.yml of an application.
pub fn read_host_config(app: &AppLayout) -> Result<(HostConfig, Vec<String>), String> {
    let path = app.config();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `cutover setup {} GIT_URL --port PORT` first)",
            path.display(),
            app.name
        )
    })?;
    let (config, warnings) =
        HostConfig::from_yaml(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    Ok((config, warnings.iter().map(ToString::to_string).collect()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

/// Deploys commit `rev` of the bare repository `git_dir` as application `app`.
pub async fn deploy(
    git_dir: &Path,
    rev: &str,
    app_name: &str,
    options: &DeployOptions,
    out: Progress<'_>,
) -> Result<DeployReport, DeployError> {
    let started = Instant::now();
    let app = AppLayout::new(&options.deployments_dir, app_name);
    let git_dir = git_dir.to_path_buf();
    let sha = {
        let (g, r) = (git_dir.clone(), rev.to_string());
        blocking(move || export::resolve_commit(&g, &r))
            .await
            .map_err(|e| DeployError::new(Step::Config, e.to_string()))?
    };
    let short = &sha[..7.min(sha.len())];
    out(&format!("-----> deploying {app_name} at {short}"));

    // deploy.yml from the commit itself, and the host's config.yml.
    let text = {
        let (g, s) = (git_dir.clone(), sha.clone());
        blocking(move || export::show_file(&g, &s, "deploy.yml"))
            .await
            .map_err(|e| DeployError::new(Step::Config, e.to_string()))?
    }
    .ok_or_else(|| {
        DeployError::new(
            Step::Config,
            format!("deploy.yml is not in commit {short} (run `cutover init` and commit it)"),
        )
    })?;
    let (config, config_warnings) = DeployConfig::from_yaml(&text, "deploy.yml")
        .map_err(|e| DeployError::new(Step::Config, e.to_string()))?;
    let (host, host_warnings) =
        read_host_config(&app).map_err(|message| DeployError::new(Step::Config, message))?;
    let mut warnings: Vec<String> = config_warnings.iter().map(ToString::to_string).collect();
    warnings.extend(host_warnings);
    if config.name != app_name {
        warnings.push(format!(
            "deploy.yml names the app {:?}; deploying it as {app_name:?} (the repository's name)",
            config.name
        ));
    }
    for warning in &warnings {
        out(&format!("       warning: {warning}"));
    }

    // One deploy at a time per application.
    let lock = {
        let (path, s, timeout) = (app.lock(), sha.clone(), options.lock_timeout);
        let printer = |holder: &super::lock::LockHolder| {
            out(&format!(
                "       waiting for the deploy lock: pid {} is deploying {} since {}",
                holder.pid,
                &holder.sha[..7.min(holder.sha.len())],
                holder.since.format("%H:%M:%S")
            ));
        };
        // The waiting happens on a blocking thread; messages are relayed here.
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = tokio::task::spawn_blocking(move || {
            DeployLock::acquire(&path, &s, timeout, |holder| {
                let _ = tx.send(holder.clone());
            })
        });
        let mut handle = handle;
        loop {
            tokio::select! {
                result = &mut handle => {
                    while let Ok(holder) = rx.try_recv() { printer(&holder); }
                    break result.expect("lock task panicked");
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    while let Ok(holder) = rx.try_recv() { printer(&holder); }
                }
            }
        }
    }
    .map_err(|e| DeployError::new(Step::Lock, e.to_string()))?;

    let release = new_release_id(&app, short);
    let release_dir = app.release_dir(&release);
    let mut run = Attempt {
        app: &app,
        release: release.clone(),
        sha: sha.clone(),
        started,
        out,
        host: HostClient::new(&options.deployments_dir),
        started_in_host: false,
    };
    let result = run
        .steps(&git_dir, &config, &host, options, &release_dir)
        .await;
    let outcome = match result {
        Ok((internal_port, replaced, healthy_after)) => {
            let report = DeployReport {
                app: app_name.to_string(),
                release: release.clone(),
                sha: sha.clone(),
                internal_port,
                public_port: host.port,
                replaced,
                healthy_after_ms: healthy_after.as_millis() as u64,
                took_ms: started.elapsed().as_millis() as u64,
                warnings,
            };
            run.record(Outcome::Deployed, None, None);
            Ok(report)
        }
        Err(mut error) => {
            if run.started_in_host {
                let _ = run
                    .host
                    .request(&Request::Stop {
                        app: app_name.to_string(),
                        release: release.clone(),
                        drain_ms: 0,
                    })
                    .await;
            }
            if release_dir.exists() {
                match app.move_to_failed(&release) {
                    Ok(dir) => error.failed_dir = Some(dir),
                    Err(e) => out(&format!("       cannot move the release to failed/: {e}")),
                }
            }
            run.record(
                Outcome::Failed,
                Some(error.step),
                Some(error.message.clone()),
            );
            Err(error)
        }
    };
    drop(lock);
    outcome
}

/// A release id that sorts by time: `20261123T093012-abc1234`.
fn new_release_id(app: &AppLayout, short: &str) -> String {
    let base = format!("{}-{short}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let mut id = base.clone();
    let mut n = 2;
    while app.release_dir(&id).exists() || app.failed().join(&id).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

struct Attempt<'a> {
    app: &'a AppLayout,
    release: String,
    sha: String,
    started: Instant,
    out: Progress<'a>,
    host: HostClient,
    started_in_host: bool,
}

impl Attempt<'_> {
    fn record(&self, outcome: Outcome, step: Option<Step>, message: Option<String>) {
        let entry = LogEntry {
            time: chrono::Utc::now(),
            action: "deploy".to_string(),
            release: self.release.clone(),
            sha: self.sha.clone(),
            user: history::current_user(),
            outcome,
            failed_step: step.map(|s| s.to_string()),
            message,
            duration_ms: self.started.elapsed().as_millis() as u64,
        };
        if let Err(error) = history::append(&self.app.release_log(), &entry) {
            (self.out)(&format!("       cannot write the release log: {error}"));
        }
    }

    async fn steps(
        &mut self,
        git_dir: &Path,
        config: &DeployConfig,
        host: &HostConfig,
        options: &DeployOptions,
        release_dir: &Path,
    ) -> Result<(u16, Option<String>, Duration), DeployError> {
        let out = self.out;
        let meta = release_dir.join(META_DIR);
        let deploy_log = meta.join("deploy.log");
        let app_log = meta.join("app.log");

        // The daemon first: when it (re)starts it brings back the current
        // release, which must serve whatever happens to this deploy.
        if host.manager == ProcessManager::Builtin {
            let launched = self
                .host
                .ensure_running(&options.launcher)
                .await
                .map_err(|e| DeployError::new(Step::Start, e.to_string()))?;
            if launched {
                out(&format!(
                    "       started the host daemon ({})",
                    self.host.paths().socket.display()
                ));
            }
        }

        // Export the commit's tree: no clone, no .git in the release.
        let t = Instant::now();
        let summary = {
            let (g, s, d, l) = (
                git_dir.to_path_buf(),
                self.sha.clone(),
                release_dir.to_path_buf(),
                options.limits.clone(),
            );
            blocking(move || export::export_commit(&g, &s, &d, &l))
                .await
                .map_err(|e| DeployError::new(Step::Export, e.to_string()))?
        };
        std::fs::create_dir_all(&meta).map_err(|e| {
            DeployError::new(
                Step::Export,
                format!("cannot create {}: {e}", meta.display()),
            )
        })?;
        out(&format!(
            "-----> exported {} files ({} KiB) into releases/{} in {} ms",
            summary.files,
            summary.bytes.div_ceil(1024),
            self.release,
            t.elapsed().as_millis()
        ));

        // Shared files and the environment file.
        link_shared(self.app, config, host, release_dir)
            .map_err(|message| DeployError::new(Step::Link, message))?;

        // Dependencies by type.
        let env = app_env(self.app, config, host, &self.release, release_dir);
        if let Some(install) = install_command(config, release_dir) {
            let t = Instant::now();
            out(&format!("-----> installing: {install}"));
            run_logged(&install, release_dir, &env, &deploy_log)
                .await
                .map_err(|message| DeployError {
                    log_tail: tail(&deploy_log, 20),
                    ..DeployError::new(Step::Install, message)
                })?;
            out(&format!(
                "       installed in {} ms",
                t.elapsed().as_millis()
            ));
        }

        if let Some(hook) = &config.hooks.pre_deploy {
            out(&format!("-----> preDeploy: {hook}"));
            run_logged(hook, release_dir, &env, &deploy_log)
                .await
                .map_err(|message| DeployError {
                    log_tail: tail(&deploy_log, 20),
                    ..DeployError::new(Step::PreDeploy, message)
                })?;
        }

        let run = run_spec(self.app, config, &self.release, release_dir, env.clone());
        let hc = &config.health_check;
        let manifest = Manifest {
            app: self.app.name.clone(),
            release: self.release.clone(),
            sha: self.sha.clone(),
            run: run.clone(),
            health_path: hc.path.clone(),
            health_interval_ms: hc.interval.get().as_millis() as u64,
            health_timeout_ms: hc.timeout.get().as_millis() as u64,
            health_success_threshold: hc.success_threshold,
            health_deadline_ms: hc.deadline.get().as_millis() as u64,
            drain_ms: config.drain_timeout.get().as_millis() as u64,
            created: chrono::Utc::now(),
        };
        std::fs::write(
            Manifest::path(release_dir),
            serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
        )
        .map_err(|e| {
            DeployError::new(
                Step::Start,
                format!("cannot write the release manifest: {e}"),
            )
        })?;

        let (port, replaced, healthy_after) = match host.manager {
            ProcessManager::Builtin => {
                let (port, healthy_after) =
                    self.start_and_check(&manifest, options, &app_log).await?;
                let replaced = self
                    .host
                    .request(&Request::Switch {
                        app: self.app.name.clone(),
                        release: self.release.clone(),
                        listen: format!("{}:{}", options.bind_host, host.port),
                        keep_warm_ms: options.keep_warm.as_millis() as u64,
                        drain_ms: manifest.drain_ms,
                        if_unserved: false,
                    })
                    .await
                    .map_err(|e| DeployError::new(Step::Switch, e.to_string()))?
                    .replaced;
                self.app.promote(&self.release).map_err(|e| {
                    DeployError::new(Step::Switch, format!("cannot switch the current link: {e}"))
                })?;
                out(&format!(
                    "-----> switched :{} to {}{}",
                    host.port,
                    self.release,
                    replaced
                        .as_ref()
                        .map(|r| format!(
                            " (was {r}, kept warm {} s, then drained)",
                            options.keep_warm.as_secs()
                        ))
                        .unwrap_or_default()
                ));
                (port, replaced, healthy_after)
            }
            ProcessManager::Systemd | ProcessManager::Pm2 => {
                self.external_manager(host, &manifest).await?
            }
        };

        if let Some(hook) = &config.hooks.post_deploy {
            out(&format!("-----> postDeploy: {hook}"));
            if let Err(message) = run_logged(hook, release_dir, &env, &deploy_log).await {
                // The release is live and healthy; a failed notification does not undo it.
                out(&format!("       warning: postDeploy failed: {message}"));
            }
        }
        match self.app.prune(config.keep_releases as usize) {
            Ok(removed) if !removed.is_empty() => out(&format!(
                "       removed old releases: {}",
                removed.join(", ")
            )),
            Ok(_) => {}
            Err(e) => out(&format!("       warning: cannot prune old releases: {e}")),
        }
        out(&format!(
            "-----> deployed {} in {} ms",
            self.release,
            self.started.elapsed().as_millis()
        ));
        Ok((port, replaced, healthy_after))
    }

    /// Starts the release under the host daemon and waits until it is healthy.
    async fn start_and_check(
        &mut self,
        manifest: &Manifest,
        options: &DeployOptions,
        app_log: &Path,
    ) -> Result<(u16, Duration), DeployError> {
        let out = self.out;
        self.host
            .ensure_running(&options.launcher)
            .await
            .map_err(|e| DeployError::new(Step::Start, e.to_string()))?;
        let port = start_release(&self.host, manifest, app_log)
            .await
            .map_err(|e| DeployError::new(Step::Start, e.to_string()))?;
        self.started_in_host = true;
        out(&format!(
            "-----> started on internal port {port}; checking {}",
            manifest.health_path
        ));
        let outcome = health::wait_healthy(port, &manifest.health(), |_| {}).await;
        match outcome {
            HealthOutcome::Healthy { probes, took } => {
                out(&format!(
                    "       healthy after {} ms ({probes} probe{})",
                    took.as_millis(),
                    if probes == 1 { "" } else { "s" }
                ));
                Ok((port, took))
            }
            HealthOutcome::Unhealthy { probes, last } => {
                let process = self.process_note(&manifest.release).await;
                Err(DeployError {
                    log_tail: tail(app_log, 20),
                    ..DeployError::new(
                        Step::HealthCheck,
                        format!(
                            "{} not healthy within {} s ({probes} probes; last: {last}){process}",
                            manifest.health_path,
                            manifest.health_deadline_ms / 1000
                        ),
                    )
                })
            }
        }
    }

    async fn process_note(&self, release: &str) -> String {
        let Ok(status) = self
            .host
            .request(&Request::Status {
                app: Some(self.app.name.clone()),
            })
            .await
        else {
            return String::new();
        };
        let found = status
            .apps
            .iter()
            .flat_map(|a| a.releases.iter())
            .find(|r| r.release == release);
        match found {
            Some(r) if r.restarts > 0 => format!(
                "; the process exited {} time{} (last: {})",
                r.restarts,
                if r.restarts == 1 { "" } else { "s" },
                r.last_exit.clone().unwrap_or_default()
            ),
            Some(r) if r.state == ProcessState::Backoff => {
                "; the process is not running".to_string()
            }
            _ => String::new(),
        }
    }

    /// systemd and pm2 run `current` themselves: switch the link, reload,
    /// check the public port, and switch back when it is not healthy.
    async fn external_manager(
        &mut self,
        host: &HostConfig,
        manifest: &Manifest,
    ) -> Result<(u16, Option<String>, Duration), DeployError> {
        let out = self.out;
        let previous = self.app.link_target(&self.app.current());
        self.app.promote(&self.release).map_err(|e| {
            DeployError::new(Step::Switch, format!("cannot switch the current link: {e}"))
        })?;
        let reload = super::managers::reload_command(host.manager, &self.app.name, &self.app.root);
        out(&format!("-----> reloading: {reload}"));
        let reload_log = self
            .app
            .release_dir(&self.release)
            .join(META_DIR)
            .join("deploy.log");
        let restore = |app: &AppLayout| {
            if let Some(previous) = &previous {
                let _ = app.promote(previous);
            }
        };
        if let Err(message) = run_logged(&reload, &self.app.root, &[], &reload_log).await {
            restore(self.app);
            return Err(DeployError {
                log_tail: tail(&reload_log, 20),
                ..DeployError::new(Step::Start, message)
            });
        }
        match health::wait_healthy(host.port, &manifest.health(), |_| {}).await {
            HealthOutcome::Healthy { took, .. } => Ok((host.port, previous, took)),
            HealthOutcome::Unhealthy { probes, last } => {
                restore(self.app);
                let _ = run_logged(&reload, &self.app.root, &[], &reload_log).await;
                Err(DeployError::new(
                    Step::HealthCheck,
                    format!(
                        "{} not healthy after {probes} probes (last: {last}); switched back",
                        manifest.health_path
                    ),
                ))
            }
        }
    }
}

/// Asks the daemon to run a release; returns its internal port.
async fn start_release(
    host: &HostClient,
    manifest: &Manifest,
    app_log: &Path,
) -> Result<u16, HostError> {
    let response = host
        .request(&Request::Start {
            app: manifest.app.clone(),
            release: manifest.release.clone(),
            run: manifest.run.clone(),
            port: 0,
            log: app_log.to_path_buf(),
        })
        .await?;
    response
        .port
        .ok_or_else(|| HostError::BadAnswer("no port in the start answer".to_string()))
}

fn link_shared(
    app: &AppLayout,
    config: &DeployConfig,
    host: &HostConfig,
    release_dir: &Path,
) -> Result<(), String> {
    let link = |source: &Path, name: &str| -> Result<(), String> {
        let target = release_dir.join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(&target)
            } else {
                std::fs::remove_file(&target)
            };
            removed.map_err(|e| format!("cannot replace {}: {e}", target.display()))?;
        }
        std::os::unix::fs::symlink(source, &target).map_err(|e| {
            format!(
                "cannot link {} to {}: {e}",
                target.display(),
                source.display()
            )
        })
    };
    // The seed's `.env.{env}` beside the releases becomes the release's `.env`.
    let env_file = app.root.join(format!(".env.{}", host.env));
    if env_file.is_file() {
        link(&env_file, ".env")?;
    }
    let shared = app.shared();
    for dir in &config.shared.dirs {
        let source = shared.join(dir);
        std::fs::create_dir_all(&source)
            .map_err(|e| format!("cannot create {}: {e}", source.display()))?;
        link(&source, dir)?;
    }
    for file in &config.shared.files {
        let source = shared.join(file);
        if !source.exists() {
            // First deploy: seed the shared copy from the release when it has one.
            if let Some(parent) = source.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let from_release = release_dir.join(file);
            if from_release.is_file() {
                std::fs::copy(&from_release, &source)
                    .map_err(|e| format!("cannot copy {file}: {e}"))?;
            } else {
                std::fs::write(&source, b"")
                    .map_err(|e| format!("cannot create {}: {e}", source.display()))?;
            }
        }
        link(&source, file)?;
    }
    Ok(())
}

/// The install command for the app's type, or the one deploy.yml gives.
fn install_command(config: &DeployConfig, release_dir: &Path) -> Option<String> {
    if let Some(install) = &config.install {
        return Some(install.clone());
    }
    match config.app_type {
        AppType::Python => {
            if release_dir.join("requirements.txt").is_file() {
                Some(
                    "python3 -m venv venv && venv/bin/pip install --disable-pip-version-check --no-input -q -r requirements.txt"
                        .to_string(),
                )
            } else {
                // No dependencies: a venv without pip is made in milliseconds.
                Some("python3 -m venv --without-pip venv".to_string())
            }
        }
        AppType::Node => Some(if release_dir.join("package-lock.json").is_file() {
            "npm ci --no-audit --no-fund".to_string()
        } else {
            "npm install --no-audit --no-fund".to_string()
        }),
        AppType::Docker => {
            let docker = config.docker_settings();
            if docker.image.is_some() {
                None
            } else {
                let mut command = format!(
                    "docker build -t {} -f {} ",
                    shell_quote(&docker_tag(config)),
                    shell_quote(&format!("{}/{}", docker.context, docker.dockerfile))
                );
                for (key, value) in &docker.build_args {
                    command.push_str(&format!(
                        "--build-arg {} ",
                        shell_quote(&format!("{key}={value}"))
                    ));
                }
                command.push_str(&shell_quote(&docker.context));
                Some(command)
            }
        }
        AppType::Static | AppType::Custom => None,
    }
}

fn docker_tag(config: &DeployConfig) -> String {
    format!("cutover-{}:latest", config.name.to_lowercase())
}

/// How the release runs under the built-in manager.
fn run_spec(
    app: &AppLayout,
    config: &DeployConfig,
    release: &str,
    release_dir: &Path,
    env: Vec<(String, String)>,
) -> RunSpec {
    let command = match config.app_type {
        AppType::Static => {
            return RunSpec::Static {
                root: release_dir.to_path_buf(),
            };
        }
        AppType::Python => config
            .command
            .clone()
            .unwrap_or_else(|| "python main.py".to_string()),
        AppType::Node => config
            .command
            .clone()
            .unwrap_or_else(|| "npm start".to_string()),
        AppType::Custom => config.command.clone().unwrap_or_default(),
        AppType::Docker => {
            let docker = config.docker_settings();
            let image = docker.image.clone().unwrap_or_else(|| docker_tag(config));
            // The container gets the release's environment by name (`-e KEY`
            // takes the value from docker's own environment, so values stay
            // off the command line) and PORT as the port it listens on inside.
            let mut command = format!(
                "exec docker run --rm --name {} -p 127.0.0.1:$PORT:{port} -e PORT={port} ",
                shell_quote(&format!("cutover-{}-{release}", app.name)),
                port = docker.container_port
            );
            for (key, _) in &env {
                command.push_str(&format!("-e {} ", shell_quote(key)));
            }
            for arg in &docker.run_args {
                command.push_str(&shell_quote(arg));
                command.push(' ');
            }
            command.push_str(&shell_quote(&image));
            if let Some(cmd) = &config.command {
                command.push(' ');
                command.push_str(cmd);
            }
            command
        }
    };
    RunSpec::Process {
        command,
        cwd: release_dir.to_path_buf(),
        env,
    }
}

/// The environment of install commands, hooks and the app: the release's
/// `.env`, the venv first on PATH for python, and who the release is.
fn app_env(
    app: &AppLayout,
    config: &DeployConfig,
    host: &HostConfig,
    release: &str,
    release_dir: &Path,
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Ok(text) = std::fs::read_to_string(release_dir.join(".env")) {
        env.extend(parse_dotenv(&text));
    }
    if config.app_type == AppType::Python {
        let venv = release_dir.join("venv");
        let path =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
        env.push(("VIRTUAL_ENV".to_string(), venv.display().to_string()));
        env.push((
            "PATH".to_string(),
            format!("{}:{path}", venv.join("bin").display()),
        ));
    }
    env.push(("CUTOVER_APP".to_string(), app.name.clone()));
    env.push(("CUTOVER_RELEASE".to_string(), release.to_string()));
    env.push(("CUTOVER_ENV".to_string(), host.env.clone()));
    env
}

/// `KEY=value` lines; `#` comments, `export ` prefixes and quotes handled.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Runs `sh -c command` in `cwd`, appending its output to `log`; the error
/// says how it ended.
async fn run_logged(
    command: &str,
    cwd: &Path,
    env: &[(String, String)],
    log: &Path,
) -> Result<(), String> {
    use std::io::Write;
    if let Some(parent) = log.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let _ = writeln!(file, "$ {command}");
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("GIT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    // A step given up on (a timeout, a canceled deploy) is stopped with what it started.
    let mut group = crate::process::GroupGuard::new(&child);
    let status = child
        .wait()
        .await
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    group.disarm();
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` {status}"))
    }
}

/// A finished rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub app: String,
    pub release: String,
    pub replaced: Option<String>,
    /// Whether the release was still running (kept warm), so no restart was needed.
    pub warm: bool,
    pub took_ms: u64,
}

/// Switches an application back to `to` (default: `previous`) at once when it
/// is still warm, else after starting and health-checking it again.
pub async fn rollback(
    deployments_dir: &Path,
    app_name: &str,
    to: Option<&str>,
    launcher: &Launcher,
    bind_host: &str,
    keep_warm: Duration,
    out: Progress<'_>,
) -> Result<RollbackReport, DeployError> {
    let started = Instant::now();
    let app = AppLayout::new(deployments_dir, app_name);
    let (host, _) = read_host_config(&app).map_err(|m| DeployError::new(Step::Config, m))?;
    let target = match to {
        Some(id) => id.to_string(),
        None => app.link_target(&app.previous()).ok_or_else(|| {
            DeployError::new(
                Step::Config,
                format!("{app_name} has no previous release to roll back to"),
            )
        })?,
    };
    let release_dir = app.release_dir(&target);
    if !release_dir.is_dir() {
        let known = app.list_releases().unwrap_or_default().join(", ");
        return Err(DeployError::new(
            Step::Config,
            format!(
                "no release {target:?} in {} (known: {known})",
                app.releases().display()
            ),
        ));
    }
    let manifest = Manifest::load(&release_dir).map_err(|m| DeployError::new(Step::Config, m))?;
    let lock = {
        let path = app.lock();
        let sha = format!("rollback:{}", manifest.sha);
        blocking(move || DeployLock::acquire(&path, &sha, Duration::from_secs(600), |_| {}))
            .await
            .map_err(|e| DeployError::new(Step::Lock, e.to_string()))?
    };
    let client = HostClient::new(deployments_dir);
    let mut warm = false;
    let mut replaced = app.link_target(&app.current());
    if host.manager == ProcessManager::Builtin {
        client
            .ensure_running(launcher)
            .await
            .map_err(|e| DeployError::new(Step::Start, e.to_string()))?;
        let status = client
            .request(&Request::Status {
                app: Some(app_name.to_string()),
            })
            .await
            .map_err(|e| DeployError::new(Step::Start, e.to_string()))?;
        warm = status
            .apps
            .iter()
            .flat_map(|a| a.releases.iter())
            .any(|r| r.release == target && r.state == ProcessState::Running);
        if !warm {
            out(&format!(
                "-----> {target} is not running; starting it again"
            ));
            let app_log = app.app_log(&target);
            let port = start_release(&client, &manifest, &app_log)
                .await
                .map_err(|e| DeployError::new(Step::Start, e.to_string()))?;
            if let HealthOutcome::Unhealthy { last, .. } =
                health::wait_healthy(port, &manifest.health(), |_| {}).await
            {
                let _ = client
                    .request(&Request::Stop {
                        app: app_name.to_string(),
                        release: target.clone(),
                        drain_ms: 0,
                    })
                    .await;
                return Err(DeployError {
                    log_tail: tail(&app_log, 20),
                    ..DeployError::new(
                        Step::HealthCheck,
                        format!("{target} is not healthy: {last}"),
                    )
                });
            }
        }
        replaced = client
            .request(&Request::Switch {
                app: app_name.to_string(),
                release: target.clone(),
                listen: format!("{bind_host}:{}", host.port),
                keep_warm_ms: keep_warm.as_millis() as u64,
                drain_ms: manifest.drain_ms,
                if_unserved: false,
            })
            .await
            .map_err(|e| DeployError::new(Step::Switch, e.to_string()))?
            .replaced;
    }
    app.promote(&target).map_err(|e| {
        DeployError::new(Step::Switch, format!("cannot switch the current link: {e}"))
    })?;
    if host.manager != ProcessManager::Builtin {
        let reload = super::managers::reload_command(host.manager, app_name, &app.root);
        let log = release_dir.join(META_DIR).join("deploy.log");
        run_logged(&reload, &app.root, &[], &log)
            .await
            .map_err(|m| DeployError::new(Step::Start, m))?;
    }
    let took = started.elapsed();
    let entry = LogEntry {
        time: chrono::Utc::now(),
        action: "rollback".to_string(),
        release: target.clone(),
        sha: manifest.sha.clone(),
        user: history::current_user(),
        outcome: Outcome::RolledBack,
        failed_step: None,
        message: replaced.as_ref().map(|r| format!("from {r}")),
        duration_ms: took.as_millis() as u64,
    };
    let _ = history::append(&app.release_log(), &entry);
    drop(lock);
    out(&format!(
        "-----> rolled {app_name} back to {target} in {} ms{}",
        took.as_millis(),
        if warm { " (warm)" } else { "" }
    ));
    Ok(RollbackReport {
        app: app_name.to_string(),
        release: target,
        replaced,
        warm,
        took_ms: took.as_millis() as u64,
    })
}

/// Starts the current release of every built-in app again (after the host
/// daemon restarted) and points its proxy at it once it is healthy.
pub async fn restore_all(
    deployments_dir: &Path,
    bind_host: &str,
    keep_warm: Duration,
    out: Progress<'_>,
) {
    let Ok(entries) = std::fs::read_dir(deployments_dir) else {
        return;
    };
    let client = HostClient::new(deployments_dir);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let app = AppLayout::new(deployments_dir, &name);
        let Ok((host, _)) = read_host_config(&app) else {
            continue;
        };
        if host.manager != ProcessManager::Builtin {
            continue;
        }
        let Some(id) = app.link_target(&app.current()) else {
            continue;
        };
        let manifest = match Manifest::load(&app.release_dir(&id)) {
            Ok(manifest) => manifest,
            Err(message) => {
                out(&format!("cannot restore {name}: {message}"));
                continue;
            }
        };
        let port = match start_release(&client, &manifest, &app.app_log(&id)).await {
            Ok(port) => port,
            Err(error) => {
                out(&format!("cannot restore {name}: {error}"));
                continue;
            }
        };
        if let HealthOutcome::Unhealthy { last, .. } =
            health::wait_healthy(port, &manifest.health(), |_| {}).await
        {
            out(&format!(
                "restored {name} {id} is not healthy ({last}); serving it anyway"
            ));
        }
        let switched = client
            .request(&Request::Switch {
                app: name.clone(),
                release: id.clone(),
                listen: format!("{bind_host}:{}", host.port),
                keep_warm_ms: keep_warm.as_millis() as u64,
                drain_ms: manifest.drain_ms,
                if_unserved: true,
            })
            .await;
        match switched {
            Ok(_) => out(&format!("restored {name}: {id} on :{}", host.port)),
            Err(error) => out(&format!("cannot restore {name}: {error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_are_parsed() {
        let env = parse_dotenv("# c\nA=1\nexport B=\"two words\"\nC='x'\nbad line\n");
        assert_eq!(
            env,
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "x".to_string())
            ]
        );
    }

    #[test]
    fn app_names_come_from_bare_repositories() {
        assert_eq!(
            app_name_from_git_dir(Path::new("/var/repos/web.git")).as_deref(),
            Some("web")
        );
        assert_eq!(
            app_name_from_git_dir(Path::new("/var/repos/web")).as_deref(),
            Some("web")
        );
    }

    fn deploy_yml(text: &str) -> DeployConfig {
        DeployConfig::from_yaml(text, "deploy.yml")
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    fn command_of(spec: RunSpec) -> String {
        match spec {
            RunSpec::Process { command, .. } => command,
            RunSpec::Static { .. } => panic!("a docker app runs a process"),
        }
    }

    // No docker daemon runs here: these check the command lines a docker app
    // gets, not that docker runs them.
    #[test]
    fn docker_apps_build_then_run_their_image_on_the_release_port() {
        let config = deploy_yml(
            "name: Shop
type: docker
healthCheck: /up
docker:
  context: app
  dockerfile: build/Dockerfile
  buildArgs:
    VERSION: 1 2
  containerPort: 3000
  runArgs: [\"-v\", \"/srv/data:/data\"]
command: serve --fast
",
        );
        let dir = Path::new("/opt/deployments/shop/releases/r1");
        assert_eq!(
            install_command(&config, dir).as_deref(),
            Some(
                "docker build -t cutover-shop:latest -f app/build/Dockerfile --build-arg 'VERSION=1 2' app"
            )
        );
        let app = AppLayout::new(Path::new("/opt/deployments"), "shop");
        let env = vec![
            (
                "DATABASE_URL".to_string(),
                "postgres://secret@db/shop".to_string(),
            ),
            ("CUTOVER_RELEASE".to_string(), "r1".to_string()),
        ];
        let command = command_of(run_spec(&app, &config, "r1", dir, env));
        assert_eq!(
            command,
            "exec docker run --rm --name cutover-shop-r1 -p 127.0.0.1:$PORT:3000 -e PORT=3000 -e DATABASE_URL -e CUTOVER_RELEASE -v /srv/data:/data cutover-shop:latest serve --fast"
        );
        assert!(
            !command.contains("secret"),
            "values stay off the command line"
        );
    }

    #[test]
    fn a_docker_app_with_an_image_skips_the_build() {
        let config = deploy_yml(
            "name: web
type: docker
healthCheck: /
docker:
  image: registry.example/web:2
",
        );
        let dir = Path::new("/tmp/r2");
        assert_eq!(install_command(&config, dir), None);
        let app = AppLayout::new(Path::new("/tmp"), "web");
        assert_eq!(
            command_of(run_spec(&app, &config, "r2", dir, Vec::new())),
            "exec docker run --rm --name cutover-web-r2 -p 127.0.0.1:$PORT:8000 -e PORT=8000 registry.example/web:2"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("abc-1.2"), "abc-1.2");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }
}
