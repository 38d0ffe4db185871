//! The host daemon's local protocol: one JSON request per line on a Unix
//! socket, one JSON response line back.
//!
//! Pure types only; the daemon is in `host`, the client in `client`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a release is run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunSpec {
    /// A command run with `sh -c` in `cwd`, in its own process group.
    Process {
        command: String,
        cwd: PathBuf,
        #[serde(default)]
        env: Vec<(String, String)>,
    },
    /// Files served by the daemon itself from `root`.
    Static { root: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Start a release on `port` (0: the daemon picks a free one).
    Start {
        app: String,
        release: String,
        run: RunSpec,
        port: u16,
        log: PathBuf,
    },
    /// Point the app's public proxy (bound on `listen`) at a running release.
    /// The release it replaces keeps running for `keep_warm_ms` (for an instant
    /// rollback), then is drained (up to `drain_ms`) and stopped.
    Switch {
        app: String,
        release: String,
        listen: String,
        keep_warm_ms: u64,
        drain_ms: u64,
        /// Only when nothing is served yet (restoring after a restart must
        /// not undo a deploy that got there first).
        #[serde(default)]
        if_unserved: bool,
    },
    /// Stop a release (a failed one, or on request), after draining.
    Stop {
        app: String,
        release: String,
        drain_ms: u64,
    },
    Status {
        #[serde(default)]
        app: Option<String>,
    },
    /// Stop every release and the daemon.
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Starting,
    Running,
    /// Exited and waiting to be restarted.
    Backoff,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseStatus {
    pub release: String,
    pub port: u16,
    pub state: ProcessState,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Requests being served by this release through the proxy now.
    pub in_flight: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: String,
    pub listen: Option<String>,
    pub serving: Option<String>,
    pub releases: Vec<ReleaseStatus>,
    pub proxied_requests: u64,
    pub proxy_errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The port a started release listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The release a switch replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Response {
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let request = Request::Start {
            app: "web".into(),
            release: "r1".into(),
            run: RunSpec::Static { root: "/x".into() },
            port: 0,
            log: "/x/app.log".into(),
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(line.contains(r#""op":"start""#), "{line}");
        assert!(line.contains(r#""kind":"static""#), "{line}");
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Request::Start { port: 0, .. }));
        let status: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert!(matches!(status, Request::Status { app: None }));
    }
}
