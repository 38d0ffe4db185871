//! A simulated device for the fleet simulator and tests: no slots on disk,
//! configurable latency per stage and injected failures, driven by the same
//! [`Agent`](super::agent::Agent) state machine as the real device.

use super::agent::{Device, Failure, JobRecord};
use cutover_core::protocol::{ArtifactRef, CommandKind, FailedStep, Health, SlotInfo};
use std::sync::Mutex;
use std::time::Duration;

/// How simulated devices behave.
#[derive(Debug, Clone)]
pub struct SimProfile {
    /// Time each stage takes (download, install, boot).
    pub latency: Duration,
    /// Share of devices that fail, 0.0 to 1.0 (chosen by a hash of the id, so
    /// the same devices fail on every run).
    pub failure_rate: f64,
    /// Where the failing devices fail.
    pub fail_stage: FailedStep,
}

impl Default for SimProfile {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            failure_rate: 0.0,
            fail_stage: FailedStep::Health,
        }
    }
}

/// Whether the device with this id is one of the failing share.
pub fn is_failing(target: &str, failure_rate: f64) -> bool {
    if failure_rate <= 0.0 {
        return false;
    }
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h % 10_000) as f64) < failure_rate * 10_000.0
}

struct State {
    running: String,
    previous: Option<String>,
    staged: Option<String>,
    job: Option<JobRecord>,
}

pub struct SimDevice {
    profile: std::sync::Arc<SimProfile>,
    failing: bool,
    state: Mutex<State>,
}

impl SimDevice {
    pub fn new(target: &str, version: &str, profile: std::sync::Arc<SimProfile>) -> Self {
        let failing = is_failing(target, profile.failure_rate);
        Self {
            profile,
            failing,
            state: Mutex::new(State {
                running: version.to_string(),
                previous: None,
                staged: None,
                job: None,
            }),
        }
    }

    pub fn failing(&self) -> bool {
        self.failing
    }

    fn fails_at(&self, step: FailedStep) -> bool {
        self.failing && self.profile.fail_stage == step
    }

    async fn wait(&self) {
        if !self.profile.latency.is_zero() {
            tokio::time::sleep(self.profile.latency).await;
        }
    }
}

impl Device for SimDevice {
    type Fetched = ();

    fn running_version(&self) -> String {
        self.state.lock().expect("sim lock").running.clone()
    }

    fn slots(&self) -> Vec<SlotInfo> {
        let s = self.state.lock().expect("sim lock");
        vec![
            SlotInfo {
                name: "a".into(),
                version: Some(s.running.clone()),
                active: true,
                pending: false,
            },
            SlotInfo {
                name: "b".into(),
                version: s.previous.clone(),
                active: false,
                pending: false,
            },
        ]
    }

    async fn fetch(&self, artifact: &ArtifactRef) -> Result<(), Failure> {
        self.wait().await;
        if self.fails_at(FailedStep::Download) {
            return Err(Failure::new(
                FailedStep::Download,
                format!("simulated download failure of {}", artifact.url),
            ));
        }
        Ok(())
    }

    async fn verify(&self, artifact: &ArtifactRef, _: &()) -> Result<(), Failure> {
        if self.fails_at(FailedStep::Verify) {
            return Err(Failure::new(
                FailedStep::Verify,
                format!(
                    "artifact {} refused: signature does not verify with any trusted key",
                    artifact.version
                ),
            ));
        }
        Ok(())
    }

    async fn install(
        &self,
        artifact: &ArtifactRef,
        _: (),
        stage_only: bool,
    ) -> Result<(), Failure> {
        self.wait().await;
        if self.fails_at(FailedStep::Install) {
            return Err(Failure::new(
                FailedStep::Install,
                "simulated flash write error",
            ));
        }
        self.state.lock().expect("sim lock").staged = Some(artifact.version.clone());
        let _ = stage_only;
        Ok(())
    }

    async fn boot_new(&self, _job: &JobRecord) -> Result<String, Failure> {
        self.wait().await;
        let mut s = self.state.lock().expect("sim lock");
        let Some(new) = s.staged.take() else {
            return Err(Failure::new(FailedStep::Install, "nothing staged to boot"));
        };
        if self.fails_at(FailedStep::Health) {
            return Err(Failure::new(
                FailedStep::Health,
                format!(
                    "version {new} was not confirmed after 3 boots; fell back to {}",
                    s.running
                ),
            ));
        }
        s.previous = Some(std::mem::replace(&mut s.running, new));
        Ok(s.running.clone())
    }

    async fn activate(&self) -> Result<(), Failure> {
        if self.state.lock().expect("sim lock").staged.is_none() {
            return Err(Failure::new(
                FailedStep::Install,
                "no staged slot to activate",
            ));
        }
        Ok(())
    }

    async fn rollback(&self, previous: Option<&str>) -> Result<String, Failure> {
        self.wait().await;
        let mut s = self.state.lock().expect("sim lock");
        s.staged = None;
        match previous {
            Some(p) if p == s.running => {}
            _ => {
                if let Some(prev) = s.previous.take() {
                    s.previous = Some(std::mem::replace(&mut s.running, prev));
                }
            }
        }
        Ok(s.running.clone())
    }

    async fn cancel(&self) {
        self.state.lock().expect("sim lock").staged = None;
    }

    async fn resume_boot(&self, job: &JobRecord) -> Result<String, Failure> {
        self.boot_new(job).await
    }

    fn save_job(&self, job: Option<&JobRecord>) {
        self.state.lock().expect("sim lock").job = job.cloned();
    }

    fn load_job(&self) -> Option<JobRecord> {
        self.state.lock().expect("sim lock").job.clone()
    }

    fn health(&self) -> Option<Health> {
        Some(Health {
            healthy: true,
            detail: String::new(),
        })
    }
}

/// The version an install command brings, for the simulator's bookkeeping.
pub fn command_version(kind: &CommandKind) -> Option<&str> {
    match kind {
        CommandKind::Install { artifact, .. } => Some(&artifact.version),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_share_is_close_to_the_rate() {
        let n = (0..10_000)
            .filter(|i| is_failing(&format!("sim-{i}"), 0.2))
            .count();
        assert!((1800..2200).contains(&n), "{n}");
        assert_eq!(
            (0..100)
                .filter(|i| is_failing(&format!("sim-{i}"), 0.0))
                .count(),
            0
        );
    }
}
