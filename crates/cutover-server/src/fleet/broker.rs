//! The embedded MQTT broker (rumqttd), started in its own thread because
//! `Broker::start` blocks. It listens on loopback by default, on a port the
//! caller gives or a free one picked by binding port 0 first.
//!
//! Its TLS listener (mqtts) is ours: each TLS connection is accepted with
//! tokio-rustls and relayed to the broker's plain listener. rumqttd's own TLS
//! would bring a second, older rustls (0.22) beside the one everything else
//! here uses, and would report a bad certificate only in its own thread's log.

use anyhow::Context;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running embedded broker.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// `mqtt://addr` for clients.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// Starts rumqttd on `listen` (port 0: a free port) and waits until it accepts connections.
pub fn start(listen: SocketAddr, max_connections: usize) -> anyhow::Result<EmbeddedBroker> {
    // Probe the address first, also for a fixed port: rumqttd only logs a bind
    // failure from its own thread, and agents would then reach whatever broker
    // already holds the port (Mosquitto holds 1883 on many machines).
    let probe = TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {listen} for the embedded MQTT broker: {e}; \
             set mqtt.listen (or --mqtt-listen) to a free address, or mqtt.url to use the broker already there"
        )
    })?;
    let addr = probe.local_addr()?;
    drop(probe);
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 1024 * 1024,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: max_connections.max(16),
        max_outgoing_packet_count: 20_000,
        max_segment_size: 100 * 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("v4-1".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("the embedded broker did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(EmbeddedBroker { addr })
}

/// The embedded broker's TLS listener: where, and the server certificate
/// chain and private key as PEM files.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The TLS server configuration from the PEM files, with errors naming the file.
pub fn tls_server_config(tls: &BrokerTls) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_file = tls.cert_file.display();
    let key_file = tls.key_file.display();
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("mqtt.tls.cert_file {cert_file}: cannot read a PEM certificate")
        })?;
    if certs.is_empty() {
        anyhow::bail!("mqtt.tls.cert_file {cert_file}: no CERTIFICATE block in the file");
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("mqtt.tls.key_file {key_file}: cannot read a PEM private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("mqtt.tls.cert_file {cert_file} and mqtt.tls.key_file {key_file} do not form a usable pair")
        })
}

/// Listens on `tls.listen` and relays each TLS connection to the broker's
/// plain listener at `broker`; returns the address it listens on.
pub async fn start_tls(tls: &BrokerTls, broker: SocketAddr) -> anyhow::Result<SocketAddr> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_server_config(tls)?));
    let listener = tokio::net::TcpListener::bind(tls.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the embedded broker's TLS (mqtt.tls.listen)",
                tls.listen
            )
        })?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "mqtts accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(relay(acceptor.clone(), stream, peer, broker));
        }
    });
    Ok(addr)
}

/// One mqtts connection: the TLS handshake, then bytes both ways to the broker.
async fn relay(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    broker: SocketAddr,
) {
    // Small packets leave at once (see `MqttSettings::client`).
    let _ = stream.set_nodelay(true);
    let mut tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "mqtts handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "mqtts handshake did not finish within 10 s");
            return;
        }
    };
    let mut plain = match tokio::net::TcpStream::connect(broker).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot reach the embedded broker for an mqtts client");
            return;
        }
    };
    let _ = plain.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
}
