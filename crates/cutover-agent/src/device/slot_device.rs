//! The real device: artifacts downloaded over HTTP with resume, verified,
//! written to A/B slot files (or handed to an installer command such as
//! `rauc install {file}`), booted with boot counting, confirmed by a health
//! check.

use super::agent::{Device, Failure, JobRecord};
use super::config::AgentConfig;
use super::http::{HttpClient, Url};
use super::slots::{Boot, SlotStore};
use super::verify;
use cutover_core::protocol::{ArtifactRef, FailedStep, Health, SlotInfo};
use ed25519_dalek::VerifyingKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct SlotDevice {
    cfg: AgentConfig,
    keys: Vec<VerifyingKey>,
    slots: Arc<Mutex<SlotStore>>,
    http: HttpClient,
    /// The boot loader's choice at power-on, consumed by `resume_boot`.
    first_boot: Mutex<Option<Boot>>,
}

impl SlotDevice {
    /// Opens the slot directory and runs the boot loader's choice (a power-on).
    pub fn open(cfg: AgentConfig) -> Result<Self, String> {
        let keys = cfg
            .public_keys
            .iter()
            .map(|k| verify::parse_public_key(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("public key: {e}"))?;
        let factory = cfg
            .factory_version
            .clone()
            .unwrap_or_else(|| "0.0.0".into());
        let mut store = SlotStore::open(&cfg.slot_dir, &factory, cfg.max_boot_tries)
            .map_err(|e| e.to_string())?;
        let boot = store.boot().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(cfg.slot_dir.join("downloads"))
            .map_err(|e| format!("{}: {e}", cfg.slot_dir.display()))?;
        Ok(Self {
            cfg,
            keys,
            slots: Arc::new(Mutex::new(store)),
            http: HttpClient::default(),
            first_boot: Mutex::new(Some(boot)),
        })
    }

    pub fn last_fallback(&self) -> Option<String> {
        self.slots
            .lock()
            .expect("slots lock")
            .state()
            .last_fallback
            .clone()
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

    fn auth_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("authorization", format!("Bearer {}", self.cfg.credential)),
            ("x-cutover-target", self.cfg.target_id.clone()),
        ]
    }

    async fn health_check(&self) -> Result<(), String> {
        let (version, slot_path, slot_name) = {
            let s = self.slots.lock().expect("slots lock");
            let slot = s.running_slot();
            (
                s.running_version(),
                s.slot_path(slot),
                super::slots::SLOT_NAMES[slot],
            )
        };
        match &self.cfg.health_command {
            Some(cmd) => {
                let child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("CUTOVER_VERSION", &version)
                    .env("CUTOVER_SLOT", slot_name)
                    .env("CUTOVER_SLOT_PATH", &slot_path)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("health command could not run: {e}"))?;
                // A timed-out check is stopped with what it started.
                let mut group = crate::process::GroupGuard::new(&child);
                let run =
                    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await;
                if run.is_ok() {
                    group.disarm();
                }
                match run {
                    Err(_) => Err("health command timed out after 120 s".into()),
                    Ok(Err(e)) => Err(format!("health command could not run: {e}")),
                    Ok(Ok(out)) if out.status.success() => Ok(()),
                    Ok(Ok(out)) => Err(format!(
                        "health command failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                }
            }
            None => {
                let slots = self.slots.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    slots.lock().expect("slots lock").check_running_slot()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                if ok {
                    Ok(())
                } else {
                    Err("booted slot content does not match its recorded sha256".into())
                }
            }
        }
    }

    /// Tries the pending slot until it is confirmed healthy or the boot
    /// counter gives up, starting from the boot loader's choice `boot`.
    async fn settle(&self, mut boot: Boot, expected: &str) -> Result<String, Failure> {
        let mut last_problem = String::new();
        loop {
            match boot {
                Boot::Trying { .. } => match self.health_check().await {
                    Ok(()) => {
                        return self
                            .slots
                            .lock()
                            .expect("slots lock")
                            .confirm()
                            .map_err(|e| Failure::new(FailedStep::Install, e.to_string()));
                    }
                    Err(problem) => last_problem = problem,
                },
                Boot::FellBack {
                    abandoned_version,
                    tries,
                    ..
                } => {
                    let running = self.running_version();
                    let why = if last_problem.is_empty() {
                        String::new()
                    } else {
                        format!(": {last_problem}")
                    };
                    return Err(Failure::new(
                        FailedStep::Health,
                        format!(
                            "version {abandoned_version} was not confirmed after {tries} boots{why}; fell back to {running}"
                        ),
                    ));
                }
                Boot::Active { .. } => {
                    let running = self.running_version();
                    return if running == expected {
                        Ok(running)
                    } else {
                        Err(Failure::new(
                            FailedStep::Health,
                            format!("device booted {running}, not {expected}"),
                        ))
                    };
                }
            }
            // Not confirmed: the device reboots and the boot counter decides.
            if let Some(cmd) = &self.cfg.reboot_command {
                self.run_reboot(cmd).await?;
            }
            boot = self
                .slots
                .lock()
                .expect("slots lock")
                .boot()
                .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))?;
        }
    }

    /// Runs the reboot command; a device that reboots never returns from it.
    async fn run_reboot(&self, cmd: &str) -> Result<(), Failure> {
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .await
            .map_err(|e| {
                Failure::new(
                    FailedStep::Install,
                    format!("reboot command could not run: {e}"),
                )
            })?;
        if !status.success() {
            return Err(Failure::new(
                FailedStep::Install,
                format!("reboot command failed: {status}"),
            ));
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
        Err(Failure::new(
            FailedStep::Install,
            "the reboot command succeeded but the device did not reboot within 300 s",
        ))
    }

    fn expected_version(job: &JobRecord) -> String {
        match &job.command.kind {
            cutover_core::protocol::CommandKind::Install { artifact, .. } => {
                artifact.version.clone()
            }
            _ => String::new(),
        }
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

impl Device for SlotDevice {
    type Fetched = PathBuf;

    fn running_version(&self) -> String {
        self.slots.lock().expect("slots lock").running_version()
    }

    fn slots(&self) -> Vec<SlotInfo> {
        self.slots.lock().expect("slots lock").slot_infos()
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
                    "artifact is for {:?}, this device is {}",
                    artifact.hardware, self.cfg.hardware_model
                ),
            ));
        }
        let base = self.cfg.server_url.clone().unwrap_or_default();
        let url = Url::join(&base, &artifact.url);
        let dest = self.download_path(artifact);
        let mut last = String::new();
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            match self
                .http
                .download_resume(&url, &dest, artifact.size, &self.auth_headers())
                .await
            {
                Ok(from) => {
                    if from > 0 {
                        tracing::info!(url, from, "download resumed");
                    }
                    return Ok(dest);
                }
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
        let (path, artifact2, keys) = (fetched.clone(), artifact.clone(), self.keys.clone());
        let result =
            tokio::task::spawn_blocking(move || verify::verify_file(&path, &artifact2, &keys))
                .await
                .map_err(|e| Failure::new(FailedStep::Verify, e.to_string()))?;
        if let Err(e) = result {
            // A bad file is not resumed next time.
            let _ = std::fs::remove_file(fetched);
            return Err(Failure::new(
                FailedStep::Verify,
                format!("artifact {} refused: {e}", artifact.version),
            ));
        }
        Ok(())
    }

    async fn install(
        &self,
        artifact: &ArtifactRef,
        fetched: PathBuf,
        stage_only: bool,
    ) -> Result<(), Failure> {
        let result = if let Some(cmd) = &self.cfg.installer_command {
            let line = cmd.replace("{file}", &shell_quote(&fetched));
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .env("CUTOVER_VERSION", &artifact.version)
                .output()
                .await
                .map_err(|e| {
                    Failure::new(FailedStep::Install, format!("installer could not run: {e}"))
                })?;
            if !out.status.success() {
                return Err(Failure::new(
                    FailedStep::Install,
                    format!(
                        "installer failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
            self.slots.lock().expect("slots lock").record_external(
                &artifact.version,
                &artifact.sha256,
                stage_only,
            )
        } else {
            let (slots, version, sha, rate) = (
                self.slots.clone(),
                artifact.version.clone(),
                artifact.sha256.clone(),
                self.cfg.slot_write_bytes_per_s,
            );
            let src = fetched.clone();
            tokio::task::spawn_blocking(move || {
                slots
                    .lock()
                    .expect("slots lock")
                    .write_inactive(&src, &version, &sha, stage_only, rate)
            })
            .await
            .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))?
        };
        let _ = std::fs::remove_file(&fetched);
        result
            .map(|_| ())
            .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))
    }

    async fn boot_new(&self, job: &JobRecord) -> Result<String, Failure> {
        if let Some(cmd) = &self.cfg.reboot_command {
            // The job record says `rebooting`; the next start finishes it.
            self.run_reboot(cmd).await?;
        }
        let boot = self
            .slots
            .lock()
            .expect("slots lock")
            .boot()
            .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))?;
        self.settle(boot, &Self::expected_version(job)).await
    }

    async fn activate(&self) -> Result<(), Failure> {
        self.slots
            .lock()
            .expect("slots lock")
            .activate_staged()
            .map(|_| ())
            .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))
    }

    async fn rollback(&self, previous: Option<&str>) -> Result<String, Failure> {
        let mut s = self.slots.lock().expect("slots lock");
        let fail = |e: super::slots::SlotError| Failure::new(FailedStep::Install, e.to_string());
        let abandoned = s.state().pending.is_some() || s.state().staged.is_some();
        if abandoned {
            s.abandon_pending().map_err(fail)?;
        }
        let running = s.running_version();
        match previous {
            Some(p) if p == running => Ok(running),
            Some(p) => {
                let other = 1 - s.running_slot();
                if s.state().slots[other].version.as_deref() == Some(p) {
                    s.switch_back().map_err(fail)
                } else {
                    Err(Failure::new(
                        FailedStep::Install,
                        format!("version {p} is in neither slot; running {running}"),
                    ))
                }
            }
            None if abandoned => Ok(running),
            None => s.switch_back().map_err(fail),
        }
    }

    async fn cancel(&self) {
        let _ = self.slots.lock().expect("slots lock").abandon_pending();
    }

    async fn resume_boot(&self, job: &JobRecord) -> Result<String, Failure> {
        let boot = self.first_boot.lock().expect("boot lock").take();
        let boot = match boot {
            Some(b) => b,
            None => self
                .slots
                .lock()
                .expect("slots lock")
                .boot()
                .map_err(|e| Failure::new(FailedStep::Install, e.to_string()))?,
        };
        self.settle(boot, &Self::expected_version(job)).await
    }

    fn save_job(&self, job: Option<&JobRecord>) {
        crate::device::agent::save_job_file(&self.job_path(), job);
    }

    fn load_job(&self) -> Option<JobRecord> {
        crate::device::agent::load_job_file(&self.job_path())
    }

    fn health(&self) -> Option<Health> {
        Some(Health {
            healthy: true,
            detail: String::new(),
        })
    }
}

/// At start: a pending slot that was booted outside any job (the job file
/// lost) is settled too, so the device never stays on an unconfirmed slot.
pub async fn settle_orphan_boot(device: &SlotDevice) {
    if device.load_job().is_some() {
        return;
    }
    let boot = device.first_boot.lock().expect("boot lock").take();
    if let Some(boot @ Boot::Trying { .. }) = boot {
        let expected = device.running_version();
        if let Err(f) = device.settle(boot, &expected).await {
            tracing::warn!(reason = %f.reason, "unconfirmed slot abandoned");
        }
    }
}
