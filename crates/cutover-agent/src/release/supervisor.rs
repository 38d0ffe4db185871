//! Supervises one app process: its own process group, output appended to a
//! log file, restarts with back-off, and a clean stop of the whole group
//! (SIGTERM, then SIGKILL after a grace period).

use super::protocol::ProcessState;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub command: String,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// How long SIGTERM has before SIGKILL.
    pub grace: Duration,
}

/// What the supervisor knows about its process now.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: ProcessState,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// A running supervisor; `stop` ends it and its process group.
#[derive(Debug)]
pub struct Supervisor {
    snapshot: Arc<Mutex<Snapshot>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long is considered healthy again: back-off resets.
const STABLE_AFTER: Duration = Duration::from_secs(10);

impl Supervisor {
    pub fn start(spec: ProcessSpec) -> Self {
        let snapshot = Arc::new(Mutex::new(Snapshot {
            state: ProcessState::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(spec, snapshot.clone(), stop_rx));
        Self {
            snapshot,
            stop,
            task: Some(task),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().expect("snapshot lock").clone()
    }

    /// Stops the process group and waits for the supervisor to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn set(snapshot: &Mutex<Snapshot>, f: impl FnOnce(&mut Snapshot)) {
    f(&mut snapshot.lock().expect("snapshot lock"));
}

async fn run(spec: ProcessSpec, snapshot: Arc<Mutex<Snapshot>>, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_START;
    loop {
        if *stop.borrow() {
            break;
        }
        let child = spawn(&spec);
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                append_log(
                    &spec.log,
                    &format!("cutover: cannot start {:?}: {error}", spec.command),
                );
                set(&snapshot, |s| {
                    s.state = ProcessState::Backoff;
                    s.last_exit = Some(format!("cannot start: {error}"));
                    s.restarts += 1;
                });
                if wait_or_stop(&mut stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id();
        set(&snapshot, |s| {
            s.state = ProcessState::Running;
            s.pid = pid;
        });
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                let exit = match status {
                    Ok(status) => status.to_string(),
                    Err(error) => format!("wait failed: {error}"),
                };
                // The leader is gone; make sure no stray member of its group lives on.
                if let Some(pid) = pid {
                    signal_group(pid, Signal::SIGKILL);
                }
                append_log(&spec.log, &format!("cutover: process {exit}, restarting in {backoff:?}"));
                if started.elapsed() >= STABLE_AFTER {
                    backoff = BACKOFF_START;
                }
                set(&snapshot, |s| {
                    s.state = ProcessState::Backoff;
                    s.pid = None;
                    s.last_exit = Some(exit);
                    s.restarts += 1;
                });
                if wait_or_stop(&mut stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            _ = stop.changed() => {
                if let Some(pid) = pid {
                    signal_group(pid, Signal::SIGTERM);
                    if tokio::time::timeout(spec.grace, child.wait()).await.is_err() {
                        signal_group(pid, Signal::SIGKILL);
                        let _ = child.wait().await;
                    }
                    // Members that ignored SIGTERM while the leader exited.
                    signal_group(pid, Signal::SIGKILL);
                }
                break;
            }
        }
    }
    set(&snapshot, |s| {
        s.state = ProcessState::Stopped;
        s.pid = None;
    });
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<tokio::process::Child> {
    if let Some(parent) = spec.log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let log_err = log.try_clone()?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

/// Sleeps for `delay`; true when asked to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

fn append_log(path: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, command: &str) -> ProcessSpec {
        ProcessSpec {
            command: command.to_string(),
            cwd: dir.to_path_buf(),
            env: vec![("GREETING".into(), "hello".into())],
            log: dir.join("app.log"),
            grace: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn restarts_a_crashing_process_with_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::start(spec(dir.path(), "echo $GREETING; exit 3"));
        tokio::time::sleep(Duration::from_millis(900)).await;
        let snap = sup.snapshot();
        // 200 ms then 400 ms back-off: two or three restarts in 900 ms, not dozens.
        assert!((1..=4).contains(&snap.restarts), "{snap:?}");
        assert!(snap.last_exit.unwrap().contains('3'));
        sup.stop().await;
        let log = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
        assert!(log.contains("hello"), "{log}");
    }

    #[tokio::test]
    async fn stop_kills_the_whole_group_even_when_sigterm_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let command = format!(
            "trap '' TERM; (trap '' TERM; sleep 30) & echo $! > {}; sleep 30",
            marker.display()
        );
        let sup = Supervisor::start(spec(dir.path(), &command));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !marker.exists() || std::fs::read_to_string(&marker).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "child never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let child: u32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let leader = sup.snapshot().pid.unwrap();
        let started = Instant::now();
        sup.stop().await;
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!super::super::lock::process_alive(leader) || is_zombie(leader));
        assert!(!super::super::lock::process_alive(child) || is_zombie(child));
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    }
}
