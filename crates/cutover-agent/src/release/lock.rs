//! The deploy lock: one deploy of an application at a time.
//!
//! The lock is a file created exclusively, holding who has it (pid, sha, time).
//! A second push waits for it; a lock whose holder process is gone is stale and
//! taken over; `cutover lock release APP` clears it by hand.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Who holds the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub sha: String,
    pub since: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot use lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock {path} is still held by pid {} for {} after waiting {waited:?}", holder.pid, holder.sha)]
    Timeout {
        path: PathBuf,
        holder: LockHolder,
        waited: Duration,
    },
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DeployLock {
    path: PathBuf,
    pid: u32,
}

impl DeployLock {
    /// Takes the lock, waiting up to `timeout` for another holder; `on_wait`
    /// is told once who is being waited for.
    pub fn acquire(
        path: &Path,
        sha: &str,
        timeout: Duration,
        mut on_wait: impl FnMut(&LockHolder),
    ) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let me = LockHolder {
            pid: std::process::id(),
            sha: sha.to_string(),
            since: chrono::Utc::now(),
            user: std::env::var("USER").unwrap_or_default(),
        };
        let started = Instant::now();
        let mut told = false;
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut file) => {
                    let body = serde_json::to_vec(&me).expect("holder serialises");
                    file.write_all(&body).map_err(io_err)?;
                    file.sync_all().map_err(io_err)?;
                    return Ok(Self {
                        path: path.to_path_buf(),
                        pid: me.pid,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    match status(path).map_err(io_err)? {
                        Some(holder) if !process_alive(holder.pid) => {
                            // Stale: its holder died without releasing it.
                            let _ = fs::remove_file(path);
                            continue;
                        }
                        Some(holder) => {
                            if !told {
                                on_wait(&holder);
                                told = true;
                            }
                            if started.elapsed() >= timeout {
                                return Err(LockError::Timeout {
                                    path: path.to_path_buf(),
                                    holder,
                                    waited: started.elapsed(),
                                });
                            }
                        }
                        // Being written right now, or unreadable: wait a moment.
                        None => {}
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(io_err(error)),
            }
        }
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        // Only remove the file if it is still ours (it may have been released by hand).
        if let Ok(Some(holder)) = status(&self.path)
            && holder.pid == self.pid
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Who holds the lock at `path`, if anyone.
pub fn status(path: &Path) -> io::Result<Option<LockHolder>> {
    match fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Clears the lock by hand; returns who held it.
pub fn force_release(path: &Path) -> io::Result<Option<LockHolder>> {
    let holder = status(path)?;
    match fs::remove_file(path) {
        Ok(()) => Ok(holder),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether a process with this id exists (signal 0 probes without sending).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let first = DeployLock::acquire(&path, "aaa", Duration::from_secs(1), |_| {}).unwrap();
        assert_eq!(status(&path).unwrap().unwrap().sha, "aaa");
        let err =
            DeployLock::acquire(&path, "bbb", Duration::from_millis(200), |_| {}).unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut waited_for = None;
                let lock = DeployLock::acquire(&path, "bbb", Duration::from_secs(5), |h| {
                    waited_for = Some(h.sha.clone())
                })
                .unwrap();
                drop(lock);
                waited_for
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        drop(first);
        assert_eq!(waiter.join().unwrap().as_deref(), Some("aaa"));
        assert_eq!(status(&path).unwrap(), None);
    }

    #[test]
    fn stale_lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let holder = LockHolder {
            pid: dead,
            sha: "old".into(),
            since: chrono::Utc::now(),
            user: String::new(),
        };
        fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        let lock = DeployLock::acquire(&path, "new", Duration::from_millis(500), |_| {}).unwrap();
        assert_eq!(status(&path).unwrap().unwrap().sha, "new");
        drop(lock);
        assert_eq!(force_release(&path).unwrap(), None);
    }
}
