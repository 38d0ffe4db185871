//! The release log: who deployed which sha when, and how it ended.
//!
//! One JSON object per line in `{app}/releases.log`, appended, never rewritten.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deployed,
    Failed,
    RolledBack,
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub time: chrono::DateTime<chrono::Utc>,
    pub action: String,
    pub release: String,
    pub sha: String,
    pub user: String,
    pub outcome: Outcome,
    /// The step that failed, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: u64,
}

pub fn append(path: &Path, entry: &LogEntry) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
    line.push(b'\n');
    file.write_all(&line)
}

/// Every entry, oldest first; lines that do not parse are skipped.
pub fn read(path: &Path) -> io::Result<Vec<LogEntry>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut entries = Vec::new();
    for line in io::BufReader::new(file).lines() {
        if let Ok(entry) = serde_json::from_str(&line?) {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// The user behind a push: the pushing user when git tells us, else $USER.
pub fn current_user() -> String {
    for var in ["GL_USERNAME", "GITHUB_ACTOR", "USER", "LOGNAME"] {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            return value;
        }
    }
    "unknown".to_string()
}
