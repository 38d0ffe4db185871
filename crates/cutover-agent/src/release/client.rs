//! Talks to the host daemon over its Unix socket, starting it when needed.

use super::host::HostPaths;
use super::protocol::{Request, Response};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the host daemon is not running (no answer on {0})")]
    NotRunning(PathBuf),
    #[error("cannot start the host daemon {program}: {source}")]
    Launch {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the host daemon did not come up within {waited:?}; see {log}")]
    StartTimeout { waited: Duration, log: PathBuf },
    #[error("talking to the host daemon failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the host daemon sent a bad answer: {0}")]
    BadAnswer(String),
    #[error("the host daemon refused: {0}")]
    Refused(String),
}

/// How to start the daemon: a program and its arguments (for the `cutover`
/// binary, `cutover host run --deployments-dir DIR`).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

#[derive(Debug, Clone)]
pub struct HostClient {
    paths: HostPaths,
}

impl HostClient {
    pub fn new(deployments_dir: &Path) -> Self {
        Self {
            paths: HostPaths::new(deployments_dir),
        }
    }

    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }

    /// Whether a daemon answers now.
    pub async fn is_running(&self) -> bool {
        self.call(&Request::Ping).await.is_ok()
    }

    /// Connects to the daemon, starting it detached when none answers.
    pub async fn ensure_running(&self, launcher: &Launcher) -> Result<bool, HostError> {
        if self.is_running().await {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.paths.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)?;
        let mut command = std::process::Command::new(&launcher.program);
        command
            .args(&launcher.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Started from a git hook: none of git's variables belong to the apps.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().map_err(|source| HostError::Launch {
            program: launcher.program.clone(),
            source,
        })?;
        let started = Instant::now();
        let limit = Duration::from_secs(10);
        loop {
            if self.is_running().await {
                // The daemon lives on by itself; reap it in the background
                // if it ever exits while this process still runs.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(true);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HostError::Launch {
                    program: launcher.program.clone(),
                    source: std::io::Error::other(format!(
                        "it exited with {status}; see {}",
                        self.paths.log.display()
                    )),
                });
            }
            if started.elapsed() > limit {
                return Err(HostError::StartTimeout {
                    waited: limit,
                    log: self.paths.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one request; a refusal becomes `HostError::Refused`.
    pub async fn request(&self, request: &Request) -> Result<Response, HostError> {
        let response = self.call(request).await?;
        if response.ok {
            Ok(response)
        } else {
            Err(HostError::Refused(
                response
                    .error
                    .unwrap_or_else(|| "no reason given".to_string()),
            ))
        }
    }

    async fn call(&self, request: &Request) -> Result<Response, HostError> {
        let stream = UnixStream::connect(&self.paths.socket)
            .await
            .map_err(|_| HostError::NotRunning(self.paths.socket.clone()))?;
        let (read, mut write) = stream.into_split();
        let mut line =
            serde_json::to_vec(request).map_err(|e| HostError::BadAnswer(e.to_string()))?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut reader = BufReader::new(read);
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        if answer.is_empty() {
            return Err(HostError::BadAnswer("the connection closed".to_string()));
        }
        serde_json::from_str(&answer).map_err(|e| HostError::BadAnswer(e.to_string()))
    }
}
