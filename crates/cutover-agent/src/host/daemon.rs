//! `cutover-agent host-daemon`: the same per-host daemon as `cutover host
//! run`, so a host needs only the agent binary.

use crate::release::client::HostClient;
use crate::release::{host, install};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Runs the daemon for `deployments_dir` until SIGTERM, Ctrl-C or a Shutdown
/// request; first brings back the current release of every built-in app.
pub async fn run(
    deployments_dir: &Path,
    bind_host: &str,
    keep_warm: Duration,
) -> std::io::Result<()> {
    std::fs::create_dir_all(deployments_dir)?;
    // Outlive the agent that started it: apps keep serving while it restarts.
    host::detach_session();
    let shutdown = Arc::new(tokio::sync::Notify::new());
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            shutdown.notify_one();
        });
    }
    {
        let (deployments, bind_host) = (deployments_dir.to_path_buf(), bind_host.to_string());
        tokio::spawn(async move {
            let client = HostClient::new(&deployments);
            for _ in 0..200 {
                if client.is_running().await {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let printer = |line: &str| eprintln!("{line}");
            install::restore_all(&deployments, &bind_host, keep_warm, &printer).await;
        });
    }
    host::run(deployments_dir, shutdown).await
}
