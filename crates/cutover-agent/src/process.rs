//! Shell commands that stop as a whole.
//!
//! `kill_on_drop` stops only the process tokio spawned: for `sh -c "a; b"`
//! that is `sh`, and what it started runs on, holding the output pipes open.
//! A command spawned in its own process group and watched by a
//! [`GroupGuard`] is stopped with everything it started when it times out or
//! its caller gives up on it.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Kills a child's process group when dropped, unless [`GroupGuard::disarm`]ed.
/// The child must have been spawned with `process_group(0)`.
#[derive(Debug)]
pub struct GroupGuard {
    group: Option<Pid>,
}

impl GroupGuard {
    /// Watches the group led by `child` (none if it has already been reaped).
    pub fn new(child: &tokio::process::Child) -> Self {
        GroupGuard {
            group: child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .map(Pid::from_raw),
        }
    }

    /// The command ended on its own: leave what it started alone.
    pub fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // The group id stays reserved while any member lives, so this cannot
        // reach an unrelated process.
        if let Some(group) = self.group.take() {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// Whether process `pid` still runs (a zombie does not count).
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    async fn grandchild_of(command: &str, dir: &std::path::Path) -> (tokio::process::Child, u32) {
        let pid_file = dir.join("pid");
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 30 & echo $! > {}; {command}",
                pid_file.display()
            ))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse()
            {
                return (child, pid);
            }
            assert!(started.elapsed() < Duration::from_secs(5), "no pid written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn gone(pid: u32) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if !is_running(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_dropped_guard_stops_what_the_shell_started() {
        let dir = tempfile::tempdir().unwrap();
        let (child, grandchild) = grandchild_of("wait", dir.path()).await;
        assert!(is_running(grandchild));
        let guard = GroupGuard::new(&child);
        drop(child);
        drop(guard);
        assert!(gone(grandchild).await, "sleep {grandchild} still runs");
    }

    #[tokio::test]
    async fn a_disarmed_guard_leaves_the_group_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, grandchild) = grandchild_of("exit 0", dir.path()).await;
        let mut guard = GroupGuard::new(&child);
        assert!(child.wait().await.unwrap().success());
        guard.disarm();
        drop(guard);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(is_running(grandchild));
        let _ = nix::sys::signal::kill(Pid::from_raw(grandchild as i32), Signal::SIGKILL);
    }
}
