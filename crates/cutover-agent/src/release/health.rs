//! Health checks of a release on its internal port, before any traffic moves.
//!
//! Kamal's defaults: every 1 s, each probe may take 5 s, one success is
//! enough, give up after 30 s. A probe passes on a 2xx answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct HealthPolicy {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub deadline: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            path: "/health".to_string(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            success_threshold: 1,
            deadline: Duration::from_secs(30),
        }
    }
}

/// One GET of `path` on 127.0.0.1:`port`; the status code, or why none came.
pub async fn probe(port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot connect to port {port}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| format!("http handshake failed: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
            .header("user-agent", "cutover-health")
            .body(Empty::new())
            .map_err(|e| format!("bad health path {path:?}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        Ok(status)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// The result of waiting for a release to become healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthOutcome {
    Healthy { probes: u32, took: Duration },
    Unhealthy { probes: u32, last: String },
}

/// Probes until `success_threshold` passes in a row, or the deadline.
/// The first probe goes out at once, then a quick ramp (25 ms doubling up to
/// the interval) so that a fast app is found healthy in milliseconds.
pub async fn wait_healthy(
    port: u16,
    policy: &HealthPolicy,
    mut on_probe: impl FnMut(&Result<u16, String>),
) -> HealthOutcome {
    let started = Instant::now();
    let mut probes = 0;
    let mut streak = 0;
    let mut pause = Duration::from_millis(25).min(policy.interval);
    loop {
        probes += 1;
        let result = probe(port, &policy.path, policy.timeout).await;
        on_probe(&result);
        let last = match &result {
            Ok(status) if (200..300).contains(status) => {
                streak += 1;
                if streak >= policy.success_threshold.max(1) {
                    return HealthOutcome::Healthy {
                        probes,
                        took: started.elapsed(),
                    };
                }
                // Consecutive successes are spaced by the full interval.
                pause = policy.interval;
                format!("status {status}")
            }
            Ok(status) => {
                streak = 0;
                format!("{} answered {status}", policy.path)
            }
            Err(error) => {
                streak = 0;
                error.clone()
            }
        };
        if started.elapsed() + pause >= policy.deadline {
            return HealthOutcome::Unhealthy { probes, last };
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(policy.interval);
    }
}
