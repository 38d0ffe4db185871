//! The HTTP polling transport for agents without MQTT: the same messages, in
//! batches, over `POST /api/agent/v1/targets/{id}/exchange`. The agent sends
//! what it has (reports, acknowledgements, inventory) and gets back what the
//! server has for it (commands, acknowledgements).

use super::agent::{Agent, Device, Outgoing};
use super::http::{HttpClient, Url};
use cutover_core::protocol::{AgentMessage, ServerMessage};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The exchange path of a target.
pub fn exchange_path(target: &str) -> String {
    format!("/api/agent/v1/targets/{target}/exchange")
}

/// Polls the server every `interval` (sooner when there is something to
/// send) until `shutdown` turns true.
pub async fn run_polling<D: Device>(
    server_url: String,
    credential: String,
    agent: Arc<Agent<D>>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = HttpClient::new(Duration::from_secs(30));
    let url = Url::join(&server_url, &exchange_path(agent.target()));
    let headers = vec![
        ("authorization", format!("Bearer {credential}")),
        ("content-type", "application/json".to_string()),
    ];
    let mut said_hello = false;
    let mut backoff = interval;
    loop {
        if !said_hello {
            agent.hello();
            said_hello = true;
        }
        agent.resend_due(Instant::now());
        let mut batch: Vec<AgentMessage> = Vec::new();
        while let Ok(m) = outgoing.try_recv() {
            batch.push(m.message);
        }
        let body = serde_json::to_vec(&batch).expect("agent messages serialize");
        match http.fetch("POST", &url, &headers, Some(body)).await {
            Ok((_, bytes)) => {
                backoff = interval;
                match serde_json::from_slice::<Vec<ServerMessage>>(&bytes) {
                    Ok(msgs) => {
                        for m in msgs {
                            agent.handle(m);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable answer from the server"),
                }
            }
            Err(e) => {
                // The reports stay unacknowledged and are sent again.
                tracing::warn!(error = %e, "poll failed");
                said_hello = false;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
        tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { return },
            _ = tokio::time::sleep(backoff) => {}
            Some(m) = outgoing.recv() => {
                // Something to say: send it at once with the next poll.
                let body = serde_json::to_vec(&vec![m.message]).expect("agent messages serialize");
                if let Ok((_, bytes)) = http.fetch("POST", &url, &headers, Some(body)).await
                    && let Ok(msgs) = serde_json::from_slice::<Vec<ServerMessage>>(&bytes)
                {
                    for m in msgs {
                        agent.handle(m);
                    }
                }
            }
        }
    }
}
