//! The MQTT transport: one connection carries one agent, or many (the fleet
//! simulator, like a gateway). Subscribes to each target's commands topic (or,
//! for many agents, to all of them at once; or, for a simulated fleet on
//! several connections, on one of them only) on every connect (the session is
//! not assumed kept), sends each agent's
//! inventory, publishes outgoing messages with QoS 1, and drives re-sends
//! and heartbeats.

use super::agent::{Agent, Device, Outgoing};
use cutover_core::protocol::{Channel, ServerMessage, parse_topic, topic, topic_filter_all};
/// The MQTT client crate, for callers that measure the broker itself.
pub use rumqttc;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, Transport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Above this many agents on one connection (a gateway, the fleet simulator), the
/// connection subscribes to every target's commands with one wildcard filter and drops
/// those of targets it does not carry. rumqttd, the embedded broker, matches every new
/// topic against every filter on one thread: with one filter per device, 10,000 devices
/// kept its router busy past the clients' keep-alive, and the reconnects and
/// resubscriptions that followed kept it there. The price is that each such connection
/// receives every target's commands.
pub const GATEWAY_AGENTS: usize = 64;

/// Which commands a connection reads.
pub enum Listen<D: Device> {
    /// Its own agents': one filter each, or the wildcard above [`GATEWAY_AGENTS`].
    Own,
    /// Every target's, through the wildcard, handed to these agents: one
    /// connection reads for a whole simulated fleet, so each command crosses
    /// the broker once rather than once per connection. It subscribes at
    /// QoS 0: rumqttd keeps at most 100 QoS 1 messages unacknowledged per
    /// connection (a fixed window, meant for one device), so at QoS 1 a
    /// command for one device waited behind round trips for the others.
    /// Nothing depends on the broker's acknowledgement here: agents
    /// acknowledge commands themselves and the server sends again what they
    /// do not.
    Fleet {
        agents: Arc<HashMap<String, Arc<Agent<D>>>>,
        /// Set once the broker has confirmed the subscription.
        subscribed: watch::Sender<bool>,
    },
    /// None: the connection only publishes (another one reads for its
    /// agents). Its agents say hello once `reader_subscribed` is set: an
    /// acknowledgement published before the reader subscribed reaches nobody.
    Nothing {
        reader_subscribed: watch::Receiver<bool>,
    },
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA for mqtts; the system roots otherwise.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key, for a broker that asks clients
    /// for a certificate (mqtts).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    pub keep_alive: Duration,
    pub inflight: u16,
}

impl MqttSettings {
    pub fn new(url: &str, client_id: &str) -> Self {
        Self {
            url: url.to_string(),
            client_id: client_id.to_string(),
            username: None,
            password: None,
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            keep_alive: Duration::from_secs(30),
            inflight: 100,
        }
    }

    /// rumqttc options for these settings.
    pub fn options(&self) -> Result<MqttOptions, String> {
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = self
            .url
            .strip_prefix("mqtt://")
            .or_else(|| self.url.strip_prefix("tcp://"))
        {
            (false, r)
        } else {
            return Err(format!(
                "mqtt url {:?} must start with mqtt:// or mqtts://",
                self.url
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("mqtt url {:?}: bad port", self.url))?,
            ),
            None => (rest.to_string(), if tls { 8883 } else { 1883 }),
        };
        let mut o = MqttOptions::new(&self.client_id, host, port);
        o.set_keep_alive(self.keep_alive);
        o.set_inflight(self.inflight.max(1));
        o.set_max_packet_size(1024 * 1024, 1024 * 1024);
        if let Some(u) = &self.username {
            o.set_credentials(u, self.password.clone().unwrap_or_default());
        }
        if tls {
            let client_auth = match (&self.client_cert_pem, &self.client_key_pem) {
                (Some(cert), Some(key)) => Some((cert.as_slice(), key.as_slice())),
                (None, None) => None,
                _ => return Err("a client certificate needs both its chain and its key".into()),
            };
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls_client_config(
                    self.ca_pem.as_deref(),
                    client_auth,
                )?)),
            ));
        }
        Ok(o)
    }

    /// A client for these settings, with its event loop. Nagle's algorithm is
    /// off: a command or report is a small packet that should leave at once,
    /// not wait for the acknowledgement of the one before (measured: 40 ms
    /// stalls, the delayed-ACK timer, on a busy connection).
    pub fn client(&self, capacity: usize) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
        let (client, mut eventloop) = AsyncClient::new(self.options()?, capacity);
        eventloop.network_options.set_tcp_nodelay(true);
        Ok((client, eventloop))
    }
}

/// A rustls client config with the ring provider and either the given CA or the system roots.
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    tls_client_config(ca_pem, None)
}

/// Like [`tls_config`], presenting a client certificate (chain PEM, key PEM) when given.
pub fn tls_client_config(
    ca_pem: Option<&[u8]>,
    client_auth: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("ca certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca certificate: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            if chain.is_empty() {
                return Err("client certificate: no CERTIFICATE block".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("client certificate key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
    }
}

/// How often a connection looks for reports to send again and heartbeats due.
const TICK: Duration = Duration::from_millis(250);

/// Which of a connection's agents send their heartbeat at each tick: each
/// once per period, spread evenly over it. A gateway's agents beating all at
/// the same tick would send thousands of messages at once every period.
struct HeartbeatSpread {
    agents: usize,
    /// Agents per tick (a fraction for fewer agents than ticks in a period).
    rate: f64,
    /// Heartbeats owed and not yet sent.
    owed: f64,
    next: usize,
}

impl HeartbeatSpread {
    fn new(agents: usize, tick: Duration, period: Duration) -> Self {
        let rate = if period.is_zero() || agents == 0 {
            0.0
        } else {
            // A period shorter than a tick still beats each agent once a tick.
            (agents as f64 * tick.as_secs_f64() / period.as_secs_f64()).min(agents as f64)
        };
        Self {
            agents,
            rate,
            owed: 0.0,
            next: 0,
        }
    }

    /// The agents (by index) whose heartbeat is due at this tick.
    fn next_tick(&mut self) -> impl Iterator<Item = usize> + use<> {
        self.owed += self.rate;
        // A hair over a whole beat counts as one: rounding must not let a
        // period end one beat short.
        let due = (self.owed + 1e-9).floor() as usize;
        self.owed -= due as f64;
        let (start, agents) = (self.next, self.agents.max(1));
        self.next = (start + due) % agents;
        (0..due).map(move |k| (start + k) % agents)
    }
}

/// Runs one MQTT connection for `agents` until `shutdown` turns true.
/// `outgoing` receives what the agents send; `listen` says whose commands it reads.
pub async fn run_connection<D: Device>(
    settings: MqttSettings,
    agents: Arc<HashMap<String, Arc<Agent<D>>>>,
    listen: Listen<D>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    heartbeat: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let (client, mut eventloop) = settings.client(1024)?;

    // Publisher: agents' messages out, QoS 1.
    let pub_client = client.clone();
    let publisher = tokio::spawn(async move {
        while let Some(msg) = outgoing.recv().await {
            if pub_client
                .publish(msg.topic(), QoS::AtLeastOnce, false, msg.payload())
                .await
                .is_err()
            {
                break;
            }
        }
    });

    // Ticker: re-sends and heartbeats.
    let tick_agents: Vec<Arc<Agent<D>>> = agents.values().cloned().collect();
    let ticker = tokio::spawn(async move {
        let mut beats = HeartbeatSpread::new(tick_agents.len(), TICK, heartbeat);
        let mut interval = tokio::time::interval(TICK);
        loop {
            interval.tick().await;
            let now = Instant::now();
            for a in &tick_agents {
                a.resend_due(now);
            }
            for i in beats.next_tick() {
                tick_agents[i].heartbeat();
            }
        }
    });

    let filters: Vec<SubscribeFilter> = match &listen {
        Listen::Nothing { .. } => Vec::new(),
        Listen::Own if agents.len() <= GATEWAY_AGENTS => agents
            .keys()
            .map(|id| SubscribeFilter::new(topic(id, Channel::Commands), QoS::AtLeastOnce))
            .collect(),
        Listen::Own => vec![SubscribeFilter::new(
            topic_filter_all(Channel::Commands),
            QoS::AtLeastOnce,
        )],
        Listen::Fleet { .. } => vec![SubscribeFilter::new(
            topic_filter_all(Channel::Commands),
            QoS::AtMostOnce,
        )],
    };
    let (readers, subscribed, reader_subscribed) = match listen {
        Listen::Own => (agents.clone(), None, None),
        Listen::Fleet {
            agents: all,
            subscribed,
        } => (all, Some(subscribed), None),
        Listen::Nothing { reader_subscribed } => (agents.clone(), None, Some(reader_subscribed)),
    };
    let mut backoff = Duration::from_millis(100);
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    let _ = client.disconnect().await;
                    break Ok(());
                }
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    let filters = filters.clone();
                    let client = client.clone();
                    let hello_agents = agents.clone();
                    let mut reader_subscribed = reader_subscribed.clone();
                    // Subscribing from another task keeps this loop polling.
                    tokio::spawn(async move {
                        for chunk in filters.chunks(200) {
                            if client.subscribe_many(chunk.to_vec()).await.is_err() {
                                return;
                            }
                        }
                        if let Some(ready) = reader_subscribed.as_mut()
                            && ready.wait_for(|s| *s).await.is_err()
                        {
                            return;
                        }
                        for a in hello_agents.values() {
                            a.hello();
                        }
                    });
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let granted = ack
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
                    if !granted {
                        tracing::warn!("the broker refused the subscription to commands");
                    } else if let Some(s) = &subscribed {
                        s.send_replace(true);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some((target, Channel::Commands)) = parse_topic(&p.topic)
                        && let Some(agent) = readers.get(target)
                    {
                        match serde_json::from_slice::<ServerMessage>(&p.payload) {
                            Ok(msg) => agent.handle(msg),
                            Err(e) => tracing::warn!(target, error = %e, "unreadable server message"),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt connection lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    };
    publisher.abort();
    ticker.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_beats_once_per_period_spread_over_its_ticks() {
        let period = Duration::from_secs(60);
        // 240 ticks a period.
        let mut spread = HeartbeatSpread::new(25_000, TICK, period);
        let mut beats = vec![0u32; 25_000];
        let mut busiest = 0;
        for _ in 0..240 {
            let tick: Vec<usize> = spread.next_tick().collect();
            busiest = busiest.max(tick.len());
            for i in tick {
                beats[i] += 1;
            }
        }
        assert!(beats.iter().all(|&b| b == 1), "every agent once a period");
        assert!(busiest <= 105, "{busiest} of 25,000 beat at one tick");
    }

    #[test]
    fn a_lone_agent_beats_once_a_period_and_none_without_a_period() {
        let mut spread = HeartbeatSpread::new(1, TICK, Duration::from_secs(60));
        let ticks: Vec<usize> = (1..=480)
            .filter(|_| spread.next_tick().count() == 1)
            .collect();
        assert_eq!(ticks, [240, 480], "at the end of each period");
        let mut off = HeartbeatSpread::new(10, TICK, Duration::ZERO);
        assert!((0..1000).all(|_| off.next_tick().count() == 0));
        let mut fast = HeartbeatSpread::new(3, TICK, Duration::from_millis(100));
        let tick: Vec<usize> = fast.next_tick().collect();
        assert_eq!(tick, [0, 1, 2], "each agent at most once a tick");
    }
}
