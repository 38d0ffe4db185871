//! The fleet plane: the MQTT broker (embedded rumqttd, or an external broker
//! by URL), the orchestrator that drives the rollout engine, artifact storage
//! and download with range requests, and the agent endpoints for HTTP polling.
//!
//! The REST API merges [`FleetPlane::router`] into its app and calls
//! [`FleetPlane::wake`] after it creates an execution or appends an operator
//! command; the orchestrator claims pending executions from the store.

pub mod artifacts;
pub mod broker;
mod gates;
mod inventory;
mod orchestrator;
mod routes;

use cutover_agent::device::mqtt::MqttSettings;
use cutover_core::protocol::{
    AgentMessage, Channel, ServerMessage, parse_topic, topic, topic_filter_all,
};
use cutover_store::{NewTarget, Store};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How the fleet plane runs.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The embedded broker's address (port 0: a free port). Ignored when `mqtt_url` is set.
    pub broker_listen: SocketAddr,
    /// An external broker (`mqtt://` or `mqtts://`); none starts the embedded one.
    pub mqtt_url: Option<String>,
    pub mqtt_username: Option<String>,
    pub mqtt_password: Option<String>,
    pub mqtt_ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and key (PEM) for an external broker that asks for one.
    pub mqtt_client_cert_pem: Option<Vec<u8>>,
    pub mqtt_client_key_pem: Option<Vec<u8>>,
    /// The embedded broker's TLS listener, if it has one.
    pub broker_tls: Option<broker::BrokerTls>,
    /// The configured health checks as each environment runs them, for gates
    /// named after one (`ServerSettings::health_check`).
    pub health_checks: HashMap<String, Vec<crate::health_checks::CheckToRun>>,
    /// Where artifact blobs live.
    pub artifact_dir: PathBuf,
    /// This replica's name in leases.
    pub owner: String,
    pub lease_ttl_ms: u64,
    pub claim_interval_ms: u64,
    /// Commands not acknowledged this long are sent again.
    pub resend_ms: u64,
    /// Reports gathered into one transaction at most.
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    /// MQTT connections the server publishes on with an external broker (it
    /// subscribes on one more; 0: it publishes on that one too): a target's
    /// messages always leave on the same one, so they keep their order.
    pub mqtt_connections: usize,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            broker_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt_url: None,
            mqtt_username: None,
            mqtt_password: None,
            mqtt_ca_pem: None,
            mqtt_client_cert_pem: None,
            mqtt_client_key_pem: None,
            broker_tls: None,
            health_checks: HashMap::new(),
            artifact_dir: PathBuf::from("artifacts"),
            owner: format!("replica-{}", uuid::Uuid::new_v4()),
            lease_ttl_ms: 30_000,
            claim_interval_ms: 1000,
            resend_ms: 3000,
            batch_max: 5000,
            batch_wait_ms: 5,
            mqtt_connections: 4,
        }
    }
}

/// Live progress for the SSE stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProgressEvent {
    Execution {
        execution_id: String,
        status: String,
        progress: serde_json::Value,
    },
    Decision {
        execution_id: String,
        message: String,
    },
}

/// An agent message as it arrived, with the target its topic or URL named.
pub(crate) struct Inbound {
    pub topic_target: String,
    pub message: AgentMessage,
}

pub(crate) struct Shared {
    pub store: Store,
    pub settings: FleetSettings,
    pub blobs: artifacts::BlobStore,
    pub progress: broadcast::Sender<ProgressEvent>,
    pub inbound: mpsc::Sender<Inbound>,
    pub inventory: mpsc::UnboundedSender<inventory::Job>,
    /// Where commands and acknowledgements leave for the broker.
    pub outbound: Outbound,
    /// Targets that poll over HTTP, and what waits for them.
    pub http_targets: Mutex<HashSet<String>>,
    pub http_outbox: Mutex<HashMap<String, Vec<ServerMessage>>>,
}

impl Shared {
    /// Sends a message to a target by MQTT, or queues it for its next poll.
    pub fn send(&self, target: &str, msg: ServerMessage) {
        if self
            .http_targets
            .lock()
            .expect("http targets")
            .contains(target)
        {
            self.http_outbox
                .lock()
                .expect("http outbox")
                .entry(target.to_string())
                .or_default()
                .push(msg);
            return;
        }
        let payload = serde_json::to_vec(&msg).expect("server messages serialize");
        let topic = topic(target, Channel::Commands);
        let queued = match &self.outbound {
            Outbound::Clients(clients) => clients[publisher_of(target, clients.len())]
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_ok(),
            Outbound::Link(link) => link.try_send((topic, payload)).is_ok(),
        };
        if !queued {
            // The queue is full: the re-send timer sends it again.
            tracing::debug!(target, "mqtt outgoing queue full");
        }
    }
}

/// How the server's messages reach the broker.
pub(crate) enum Outbound {
    /// MQTT connections to an external broker; a target's messages always go
    /// out on `clients[hash % len]`, so they keep their order.
    Clients(Vec<AsyncClient>),
    /// The embedded broker's in-process link, fed by [`link_publisher`].
    Link(std::sync::mpsc::SyncSender<(String, Vec<u8>)>),
}

/// Messages queued for the broker at most, as with the external broker's clients.
const OUTGOING_CAPACITY: usize = 500_000;

/// Which publishing connection carries a target's messages (FNV-1a of its id).
fn publisher_of(target: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// The running fleet plane.
#[derive(Clone)]
pub struct FleetPlane {
    shared: Arc<Shared>,
    wake: mpsc::UnboundedSender<String>,
    broker_url: String,
    tls_broker_url: Option<String>,
}

impl FleetPlane {
    /// Starts the broker (unless external), the MQTT client and the orchestrator.
    pub async fn start(
        settings: FleetSettings,
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<FleetPlane> {
        let (broker_url, tls_broker_url, link) = match &settings.mqtt_url {
            Some(url) => (url.clone(), None, None),
            None => {
                let listen = settings.broker_listen;
                let b =
                    tokio::task::spawn_blocking(move || broker::start(listen, 1_000_000)).await??;
                tracing::info!(addr = %b.addr, "embedded mqtt broker listening");
                let tls = match &settings.broker_tls {
                    Some(tls) => {
                        let addr = broker::start_tls(tls, b.addr).await?;
                        tracing::info!(%addr, "embedded mqtt broker listening for mqtts");
                        Some(format!("mqtts://{addr}"))
                    }
                    None => None,
                };
                (b.url(), tls, Some(b.link))
            }
        };
        let blobs = artifacts::BlobStore::open(&settings.artifact_dir)?;
        let (inbound_tx, inbound_rx) = mpsc::channel(200_000);
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        let (progress, _) = broadcast::channel(4096);
        let (inventory_tx, inventory_rx) = mpsc::unbounded_channel();

        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (error_tx, error_rx) = watch::channel(None);
        let outbound = match link {
            Some((tx, rx)) => {
                let (out_tx, out_rx) = std::sync::mpsc::sync_channel(OUTGOING_CAPACITY);
                std::thread::Builder::new()
                    .name("mqtt-link-publisher".into())
                    .spawn(move || link_publisher(tx, out_rx))?;
                tokio::spawn(link_loop(rx, inbound_tx.clone(), ready_tx));
                Outbound::Link(out_tx)
            }
            None => {
                let client_id = |role: &str| {
                    format!(
                        "cutover-server-{}-{role}-{}",
                        settings.owner,
                        &uuid::Uuid::new_v4().simple().to_string()[..8]
                    )
                };
                let options = |id: String| {
                    let mut ms = MqttSettings::new(&broker_url, &id);
                    ms.username = settings.mqtt_username.clone();
                    ms.password = settings.mqtt_password.clone();
                    ms.ca_pem = settings.mqtt_ca_pem.clone();
                    ms.client_cert_pem = settings.mqtt_client_cert_pem.clone();
                    ms.client_key_pem = settings.mqtt_client_key_pem.clone();
                    ms.inflight = 1000;
                    ms.client(OUTGOING_CAPACITY).map_err(anyhow::Error::msg)
                };
                // Reports arrive on one connection; commands and acknowledgements
                // leave on others, so a full outgoing window never stalls reading.
                let (client, eventloop) = options(client_id("sub"))?;
                let mut publishers = Vec::new();
                for i in 0..settings.mqtt_connections {
                    let (p, el) = options(client_id(&format!("pub{i}")))?;
                    tokio::spawn(publish_loop(p.clone(), el, shutdown.clone()));
                    publishers.push(p);
                }
                if publishers.is_empty() {
                    publishers.push(client.clone());
                }
                tokio::spawn(mqtt_loop(
                    client,
                    eventloop,
                    inbound_tx.clone(),
                    shutdown.clone(),
                    ready_tx,
                    error_tx,
                ));
                Outbound::Clients(publishers)
            }
        };
        let shared = Arc::new(Shared {
            store,
            settings: settings.clone(),
            blobs,
            progress,
            inbound: inbound_tx,
            inventory: inventory_tx,
            outbound,
            http_targets: Mutex::new(HashSet::new()),
            http_outbox: Mutex::new(HashMap::new()),
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .map_err(|_| {
                let why = match error_rx.borrow().as_deref() {
                    Some(e) => format!(": {e}"),
                    None => String::new(),
                };
                anyhow::anyhow!(
                    "could not subscribe at the mqtt broker {broker_url} within 10 s{why}"
                )
            })?
            .ok();
        tokio::spawn(inventory::run(shared.clone(), inventory_rx));
        let orch = orchestrator::Orchestrator::new(shared.clone());
        tokio::spawn(orch.run(inbound_rx, wake_rx, shutdown));
        Ok(FleetPlane {
            shared,
            wake: wake_tx,
            broker_url,
            tls_broker_url,
        })
    }

    /// The broker agents connect to.
    pub fn broker_url(&self) -> &str {
        &self.broker_url
    }

    /// The embedded broker's mqtts listener, when it has one.
    pub fn tls_broker_url(&self) -> Option<&str> {
        self.tls_broker_url.as_deref()
    }

    /// Artifact upload and download (`/api/artifacts`) and the agent endpoints (`/api/agent/v1`).
    pub fn router(&self) -> axum::Router {
        routes::router(self.shared.clone())
    }

    /// Asks the orchestrator to look for new executions and operator commands now.
    pub fn wake(&self, execution_id: &str) {
        let _ = self.wake.send(execution_id.to_string());
    }

    pub fn progress(&self) -> broadcast::Receiver<ProgressEvent> {
        self.shared.progress.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn blobs(&self) -> &artifacts::BlobStore {
        &self.shared.blobs
    }
}

/// The API wakes the orchestrator through this after it creates an execution
/// or appends an operator command.
impl crate::state::ExecutionWaker for FleetPlane {
    fn wake(&self, execution_id: &str) {
        FleetPlane::wake(self, execution_id);
    }
}

/// Registers a target with its own credential (the store keeps only the derived key).
pub async fn enroll_target(
    store: &Store,
    target: &NewTarget,
    credential: &str,
) -> anyhow::Result<()> {
    store.upsert_target(target).await?;
    store
        .set_target_credential(
            &target.id,
            &cutover_agent::device::mac::target_key_hex(credential),
        )
        .await?;
    Ok(())
}

/// Drives a publishing connection: it only sends (and reads acknowledgements).
async fn publish_loop(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { let _ = client.disconnect().await; return },
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => backoff = Duration::from_millis(100),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt publishing connection lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Registers many targets with their credentials in batched transactions.
pub async fn enroll_targets(
    store: &Store,
    targets: impl IntoIterator<Item = (NewTarget, String)>,
) -> anyhow::Result<()> {
    let rows: Vec<(NewTarget, String)> = targets
        .into_iter()
        .map(|(t, credential)| (t, cutover_agent::device::mac::target_key_hex(&credential)))
        .collect();
    store.enroll_targets(&rows).await?;
    Ok(())
}

async fn mqtt_loop(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    inbound: mpsc::Sender<Inbound>,
    mut shutdown: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
    last_error: watch::Sender<Option<String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = shutdown.changed() => if *shutdown.borrow() { let _ = client.disconnect().await; return },
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    for ch in SUBSCRIBED {
                        let _ = client.try_subscribe(topic_filter_all(ch), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(m) = decode(&p.topic, &p.payload)
                        && inbound.send(m).await.is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt connection lost; reconnecting");
                    last_error.send_replace(Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// An agent message from its topic and payload; none for foreign topics and
/// unreadable payloads.
fn decode(topic: &str, payload: &[u8]) -> Option<Inbound> {
    let (target, _) = parse_topic(topic)?;
    match serde_json::from_slice::<AgentMessage>(payload) {
        Ok(message) => Some(Inbound {
            topic_target: target.to_string(),
            message,
        }),
        Err(e) => {
            tracing::debug!(target, error = %e, "unreadable agent message");
            None
        }
    }
}

/// The agents' channels the server subscribes to.
const SUBSCRIBED: [Channel; 3] = [Channel::Status, Channel::Hello, Channel::Heartbeat];

/// Publishes what the server sends through the embedded broker's link. Its
/// own thread, because the link hands each batch to the router with a
/// blocking send; a batch is whatever queued up meanwhile, one router wake-up
/// for all of it.
fn link_publisher(
    mut tx: rumqttd::local::LinkTx,
    queue: std::sync::mpsc::Receiver<(String, Vec<u8>)>,
) {
    for ch in SUBSCRIBED {
        if let Err(e) = tx.subscribe(topic_filter_all(ch)) {
            return tracing::error!(error = %e, "cannot subscribe on the embedded broker");
        }
    }
    while let Ok(first) = queue.recv() {
        let mut last = first;
        {
            let mut buffer = tx.buffer();
            while let Ok(next) = queue.try_recv() {
                let (topic, payload) = std::mem::replace(&mut last, next);
                buffer.push_back(rumqttd::protocol::Packet::Publish(
                    rumqttd::protocol::Publish::new(
                        bytes::Bytes::from(topic),
                        payload.into(),
                        false,
                    ),
                    None,
                ));
                if buffer.len() >= 10_000 {
                    break;
                }
            }
        }
        // Queues the last message and wakes the router for the whole batch.
        let (topic, payload) = last;
        if let Err(e) = tx.publish(topic, payload) {
            return tracing::error!(error = %e, "the embedded broker's router stopped");
        }
    }
}

/// Reads what the embedded broker forwards to the server's link.
async fn link_loop(
    mut rx: rumqttd::local::LinkRx,
    inbound: mpsc::Sender<Inbound>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match rx.next().await {
            Ok(Some(rumqttd::Notification::Forward(f))) => {
                let topic = std::str::from_utf8(&f.publish.topic).unwrap_or_default();
                if let Some(m) = decode(topic, &f.publish.payload)
                    && inbound.send(m).await.is_err()
                {
                    return;
                }
            }
            // The router paused the link because its buffer filled: read on.
            Ok(Some(rumqttd::Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(Some(rumqttd::Notification::DeviceAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(_) => {}
            Err(e) => return tracing::error!(error = %e, "the embedded broker's link closed"),
        }
    }
}
