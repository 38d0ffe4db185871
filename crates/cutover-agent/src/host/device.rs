//! The host as a target: an artifact is an application bundle, installed by
//! the release installer of the git-push flow, under the built-in manager.
//!
//! Stages as the server sees them: `downloading` (download with resume, size,
//! sha256 and ed25519 checked), `installing` (the bundle unpacked and
//! committed, then the whole deploy: shared files, install by type,
//! preDeploy, start on a fresh port, health check on it, the proxy and
//! `current` switched, drain, postDeploy, keep N), `verifying` (the public
//! port answers the health path through the proxy, with the new version
//! current). A failed health check reports `failed_step: health`; anything
//! else before the switch reports `install`, and the old release serves on.
//! A rollback switches back to the release of the version the server names
//! (warm when it still runs, started again otherwise, deployed again from the
//! bundle repository when it was pruned) and reports the version that runs.

use super::bundle;
use crate::device::agent::{Device, Failure, JobRecord};
use crate::device::config::{AgentConfig, HostSettings};
use crate::device::http::{HttpClient, Url};
use crate::device::verify;
use crate::release::client::{HostClient, Launcher};
use crate::release::export::ExportLimits;
use crate::release::health::{self, HealthOutcome, HealthPolicy};
use crate::release::install::{self, DeployError, DeployOptions, Manifest, Step};
use crate::release::layout::AppLayout;
use crate::release::protocol::Request;
use cutover_core::config::{HostConfig, ProcessManager};
use cutover_core::protocol::{ArtifactRef, CommandKind, FailedStep, Health, SlotInfo};
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub struct HostDevice {
    cfg: AgentConfig,
    host: HostSettings,
    keys: Vec<VerifyingKey>,
    http: HttpClient,
    app: AppLayout,
    launcher: Launcher,
    /// One install or rollback at a time, even when a newer command
    /// supersedes a running one.
    busy: tokio::sync::Mutex<()>,
    /// Commit id → version, read from the bundle repository once.
    versions: Mutex<HashMap<String, String>>,
    last_health: Mutex<Option<Health>>,
}

/// The subject line of a commit: the version the bundle was received as.
fn commit_version(repo: &Path, sha: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["log", "-1", "--format=%s", sha, "--"])
        .env_remove("GIT_DIR")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The server's stage for a deploy step that failed.
pub fn failed_step(step: Step) -> FailedStep {
    match step {
        Step::HealthCheck => FailedStep::Health,
        _ => FailedStep::Install,
    }
}

/// A deploy error as the reason the server records: the step, why, and the
/// last lines of the log that explains it.
pub fn failure_of(error: &DeployError) -> Failure {
    let mut reason = error.to_string();
    let tail: Vec<&str> = error
        .log_tail
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !tail.is_empty() {
        let from = tail.len().saturating_sub(5);
        reason.push_str("; log: ");
        reason.push_str(&tail[from..].join(" | "));
    }
    Failure::new(failed_step(error.step), reason)
}

impl HostDevice {
    /// Prepares the state directory and the app's config.yml (port, built-in
    /// manager, env from the agent's configuration).
    pub fn open(cfg: AgentConfig, launcher: Launcher) -> Result<Self, String> {
        let host = cfg
            .host
            .clone()
            .ok_or("a host agent needs its host section")?;
        let keys = cfg
            .public_keys
            .iter()
            .map(|k| verify::parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("public key: {e}"))?;
        let app = AppLayout::new(&host.deployments_dir, &host.app);
        for dir in [
            app.releases(),
            app.shared(),
            app.failed(),
            cfg.slot_dir.join("downloads"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let wanted = HostConfig {
            port: host.port,
            manager: ProcessManager::Builtin,
            env: host.env.clone(),
        }
        .to_yaml();
        let config = app.config();
        if std::fs::read_to_string(&config).ok().as_deref() != Some(wanted.as_str()) {
            std::fs::write(&config, wanted).map_err(|e| format!("{}: {e}", config.display()))?;
        }
        Ok(Self {
            cfg,
            host,
            keys,
            http: HttpClient::default(),
            app,
            launcher,
            busy: tokio::sync::Mutex::new(()),
            versions: Mutex::new(HashMap::new()),
            last_health: Mutex::new(None),
        })
    }

    /// The launcher for this agent binary's own `host-daemon` command.
    pub fn own_launcher(host: &HostSettings) -> Result<Launcher, String> {
        if let Some(command) = &host.daemon_command {
            let (program, args) = command.split_first().ok_or("empty daemon_command")?;
            return Ok(Launcher {
                program: program.into(),
                args: args.iter().map(Into::into).collect(),
            });
        }
        let program = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
        Ok(Launcher {
            program,
            args: vec![
                "host-daemon".into(),
                "--deployments-dir".into(),
                host.deployments_dir.clone().into_os_string(),
                "--bind-host".into(),
                host.bind_host.clone().into(),
                "--keep-warm".into(),
                host.keep_warm_s.to_string().into(),
            ],
        })
    }

    pub fn app(&self) -> &AppLayout {
        &self.app
    }

    fn repo(&self) -> PathBuf {
        self.cfg.slot_dir.join("bundles.git")
    }

    fn staging(&self) -> PathBuf {
        self.cfg.slot_dir.join("staging")
    }

    fn staged_path(&self) -> PathBuf {
        self.cfg.slot_dir.join("staged")
    }

    fn job_path(&self) -> PathBuf {
        self.cfg.slot_dir.join("job.json")
    }

    fn download_path(&self, artifact: &ArtifactRef) -> PathBuf {
        let name: String = artifact
            .sha256
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(64)
            .collect();
        self.cfg
            .slot_dir
            .join("downloads")
            .join(format!("{name}.part"))
    }

    fn options(&self) -> DeployOptions {
        DeployOptions {
            deployments_dir: self.host.deployments_dir.clone(),
            launcher: self.launcher.clone(),
            bind_host: self.host.bind_host.clone(),
            keep_warm: Duration::from_secs(self.host.keep_warm_s),
            lock_timeout: Duration::from_secs(self.host.lock_timeout_s),
            limits: ExportLimits::default(),
        }
    }

    /// The version of a release directory, from its manifest's commit.
    fn release_version(&self, release: &str) -> Option<String> {
        let sha = Manifest::load(&self.app.release_dir(release)).ok()?.sha;
        if let Some(v) = self.versions.lock().expect("versions lock").get(&sha) {
            return Some(v.clone());
        }
        let version = commit_version(&self.repo(), &sha)?;
        self.versions
            .lock()
            .expect("versions lock")
            .insert(sha, version.clone());
        Some(version)
    }

    /// The current release, if any.
    pub fn current_release(&self) -> Option<String> {
        self.app.link_target(&self.app.current())
    }

    /// Kept releases of `version`, newest first.
    fn releases_of(&self, version: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .app
            .list_releases()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| self.release_version(r).as_deref() == Some(version))
            .collect();
        found.reverse();
        found
    }

    /// Unpacks and commits a verified bundle; returns its commit id.
    async fn import(&self, artifact: &ArtifactRef, bundle: PathBuf) -> Result<String, Failure> {
        let (repo, staging) = (self.repo(), self.staging());
        let (version, sha256) = (artifact.version.clone(), artifact.sha256.clone());
        let result = tokio::task::spawn_blocking(move || {
            bundle::unpack(&bundle, &staging, &ExportLimits::default())?;
            let root = bundle::app_root(&staging)?;
            let commit = bundle::commit_tree(&repo, &root, &version, &sha256);
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_file(&bundle);
            commit
        })
        .await
        .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))?;
        let sha = result.map_err(|e| Failure::new(FailedStep::Install, e.to_string()))?;
        self.versions
            .lock()
            .expect("versions lock")
            .insert(sha.clone(), artifact.version.clone());
        Ok(sha)
    }

    /// Deploys a commit of the bundle repository through the release installer.
    async fn deploy(&self, sha: &str) -> Result<String, Failure> {
        let app = self.host.app.clone();
        let printer = move |line: &str| tracing::info!(app = %app, "{}", line.trim_start());
        match install::deploy(&self.repo(), sha, &self.host.app, &self.options(), &printer).await {
            Ok(report) => Ok(report.release),
            Err(error) => Err(failure_of(&error)),
        }
    }

    /// The public port answers the current release's health path through the proxy.
    async fn check_public(&self) -> Result<(), String> {
        let release = self.current_release().ok_or("no current release")?;
        let manifest = Manifest::load(&self.app.release_dir(&release))?;
        let policy = HealthPolicy {
            path: manifest.health_path.clone(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(manifest.health_timeout_ms),
            success_threshold: 1,
            deadline: Duration::from_secs(10),
        };
        match health::wait_healthy(self.host.port, &policy, |_| {}).await {
            HealthOutcome::Healthy { .. } => Ok(()),
            HealthOutcome::Unhealthy { last, .. } => Err(format!(
                "{} on the public port {} is not healthy: {last}",
                manifest.health_path, self.host.port
            )),
        }
    }

    /// After a deploy: the version is current and served through the proxy;
    /// otherwise the previous release is switched back.
    async fn confirm(&self, expected: &str) -> Result<String, Failure> {
        let running = self.running_version();
        let problem = if !expected.is_empty() && running != expected {
            Some(format!("the host runs {running}, not {expected}"))
        } else {
            self.check_public().await.err()
        };
        *self.last_health.lock().expect("health lock") = Some(Health {
            healthy: problem.is_none(),
            detail: problem.clone().unwrap_or_default(),
        });
        match problem {
            None => Ok(running),
            Some(problem) => {
                let _busy = self.busy.lock().await;
                let back = self.switch_back(None).await;
                let after = match back {
                    Ok(_) => format!("; switched back to {}", self.running_version()),
                    Err(f) => format!("; switching back failed too: {}", f.reason),
                };
                Err(Failure::new(
                    FailedStep::Health,
                    format!("{problem}{after}"),
                ))
            }
        }
    }

    /// Switches to the release of `version` (or `previous`), the way
    /// `cutover rollback` does; a pruned version is deployed again.
    async fn switch_back(&self, version: Option<&str>) -> Result<String, Failure> {
        let printer = |line: &str| tracing::info!("{}", line.trim_start());
        let to = match version {
            None => None,
            Some(v) => match self.releases_of(v).into_iter().next() {
                Some(release) => Some(release),
                None => {
                    let sha = bundle::find_version(&self.repo(), v).ok_or_else(|| {
                        Failure::new(
                            FailedStep::Install,
                            format!(
                                "version {v} was never installed here; running {}",
                                self.running_version()
                            ),
                        )
                    })?;
                    tracing::info!(version = v, "release pruned; deploying it again");
                    self.deploy(&sha).await?;
                    return Ok(self.running_version());
                }
            },
        };
        install::rollback(
            &self.host.deployments_dir,
            &self.host.app,
            to.as_deref(),
            &self.launcher,
            &self.host.bind_host,
            Duration::from_secs(self.host.keep_warm_s),
            &printer,
        )
        .await
        .map_err(|e| failure_of(&e))?;
        Ok(self.running_version())
    }

    /// Stops the daemon and its apps (tests, and hosts taken out of service).
    pub async fn stop_daemon(deployments_dir: &Path) {
        let _ = HostClient::new(deployments_dir)
            .request(&Request::Shutdown)
            .await;
    }
}

fn expected_version(job: &JobRecord) -> String {
    match &job.command.kind {
        CommandKind::Install { artifact, .. } => artifact.version.clone(),
        _ => String::new(),
    }
}

impl Device for HostDevice {
    type Fetched = PathBuf;

    /// The version of the `current` release; empty before the first install.
    fn running_version(&self) -> String {
        self.current_release()
            .and_then(|r| self.release_version(&r))
            .unwrap_or_default()
    }

    /// Kept releases, newest last; the active one is `current`.
    fn slots(&self) -> Vec<SlotInfo> {
        let current = self.current_release();
        self.app
            .list_releases()
            .unwrap_or_default()
            .into_iter()
            .map(|r| SlotInfo {
                version: self.release_version(&r),
                active: current.as_deref() == Some(r.as_str()),
                pending: false,
                name: r,
            })
            .collect()
    }

    async fn fetch(&self, artifact: &ArtifactRef) -> Result<PathBuf, Failure> {
        if !artifact.hardware.is_empty()
            && !artifact
                .hardware
                .iter()
                .any(|h| h == &self.cfg.hardware_model)
        {
            return Err(Failure::new(
                FailedStep::Incompatible,
                format!(
                    "artifact is for {:?}, this host is {}",
                    artifact.hardware, self.cfg.hardware_model
                ),
            ));
        }
        let base = self.cfg.server_url.clone().unwrap_or_default();
        let url = Url::join(&base, &artifact.url);
        let dest = self.download_path(artifact);
        let headers = vec![
            ("authorization", format!("Bearer {}", self.cfg.credential)),
            ("x-cutover-target", self.cfg.target_id.clone()),
        ];
        let mut last = String::new();
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            match self
                .http
                .download_resume(&url, &dest, artifact.size, &headers)
                .await
            {
                Ok(_) => return Ok(dest),
                Err(e) => {
                    tracing::warn!(url, error = %e, "download interrupted");
                    last = e.to_string();
                }
            }
        }
        Err(Failure::new(
            FailedStep::Download,
            format!("download of {url} failed: {last}"),
        ))
    }

    async fn verify(&self, artifact: &ArtifactRef, fetched: &PathBuf) -> Result<(), Failure> {
        let (path, a, keys) = (fetched.clone(), artifact.clone(), self.keys.clone());
        let result = tokio::task::spawn_blocking(move || verify::verify_file(&path, &a, &keys))
            .await
            .map_err(|e| Failure::new(FailedStep::Verify, e.to_string()))?;
        result.map_err(|e| {
            let _ = std::fs::remove_file(fetched);
            Failure::new(
                FailedStep::Verify,
                format!("artifact {} refused: {e}", artifact.version),
            )
        })
    }

    /// Deploys the bundle; with `stage_only` (blue-green) it is only unpacked
    /// and committed, and `activate` deploys it.
    async fn install(
        &self,
        artifact: &ArtifactRef,
        fetched: PathBuf,
        stage_only: bool,
    ) -> Result<(), Failure> {
        let _busy = self.busy.lock().await;
        if !stage_only && self.running_version() == artifact.version {
            // A repeated command (an agent restarted mid-action): already done.
            let _ = std::fs::remove_file(&fetched);
            tracing::info!(version = artifact.version, "already the current release");
            return Ok(());
        }
        let sha = self.import(artifact, fetched).await?;
        if stage_only {
            return std::fs::write(self.staged_path(), &sha)
                .map_err(|e| Failure::new(FailedStep::Install, format!("staging: {e}")));
        }
        let _ = std::fs::remove_file(self.staged_path());
        self.deploy(&sha).await.map(|_| ())
    }

    async fn boot_new(&self, job: &JobRecord) -> Result<String, Failure> {
        self.confirm(&expected_version(job)).await
    }

    async fn activate(&self) -> Result<(), Failure> {
        let _busy = self.busy.lock().await;
        let sha = std::fs::read_to_string(self.staged_path())
            .map_err(|_| Failure::new(FailedStep::Install, "no staged release to activate"))?;
        self.deploy(sha.trim()).await?;
        let _ = std::fs::remove_file(self.staged_path());
        Ok(())
    }

    async fn rollback(&self, previous: Option<&str>) -> Result<String, Failure> {
        let _busy = self.busy.lock().await;
        let _ = std::fs::remove_file(self.staged_path());
        let running = self.running_version();
        match previous.filter(|p| !p.is_empty()) {
            Some(p) if p == running => Ok(running),
            Some(p) => self.switch_back(Some(p)).await,
            None => self.switch_back(None).await,
        }
    }

    async fn cancel(&self) {
        let _ = std::fs::remove_file(self.staged_path());
    }

    async fn resume_boot(&self, job: &JobRecord) -> Result<String, Failure> {
        self.confirm(&expected_version(job)).await
    }

    fn save_job(&self, job: Option<&JobRecord>) {
        crate::device::agent::save_job_file(&self.job_path(), job);
    }

    fn load_job(&self) -> Option<JobRecord> {
        crate::device::agent::load_job_file(&self.job_path())
    }

    fn health(&self) -> Option<Health> {
        self.last_health.lock().expect("health lock").clone()
    }
}
