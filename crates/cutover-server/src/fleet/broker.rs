//! The embedded MQTT broker (rumqttd), started in its own thread because
//! `Broker::start` blocks. It listens on loopback by default, on a port the
//! caller gives or a free one picked by binding port 0 first.
//!
//! The server itself reaches the broker's router through an in-process link
//! ([`EmbeddedBroker::link`]), not a socket: no MQTT encoding, no TCP, and
//! none of the 40 ms delayed-acknowledgement stalls of rumqttd's sockets,
//! which leave Nagle's algorithm on.
//!
//! Its TLS listener (mqtts) is ours: each TLS connection is accepted with
//! tokio-rustls and relayed to the broker's plain listener. rumqttd's own TLS
//! would bring a second, older rustls (0.22) beside the one everything else
//! here uses, and would report a bad certificate only in its own thread's log.

use anyhow::Context;
use rumqttd::local::{LinkRx, LinkTx};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running embedded broker.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    /// The server's in-process connection to the router. It publishes at
    /// QoS 0 (nothing is lost in memory; agents still get QoS 1, the QoS they
    /// subscribed with), also to topics nobody has subscribed to yet.
    pub link: (LinkTx, LinkRx),
}

impl EmbeddedBroker {
    /// `mqtt://addr` for clients.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

/// Starts rumqttd on `listen` (port 0: a free port) and waits until it accepts connections.
pub fn start(mut listen: SocketAddr, max_connections: usize) -> anyhow::Result<EmbeddedBroker> {
    // rumqttd binds the port itself, after the probe below lets go of it; a
    // kernel-chosen port could go to another listener in between.
    if listen.port() == 0 {
        listen.set_port(cutover_agent::ports::fixed_port()?);
    }
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
    let mut broker = rumqttd::Broker::new(config);
    // The router runs from `new` on; the link must exist before `start` takes the broker.
    let link = broker
        .link("cutover-server")
        .map_err(|e| anyhow::anyhow!("the embedded broker refused the server's link: {e}"))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
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
    Ok(EmbeddedBroker { addr, link })
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

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_agent::device::mqtt::MqttSettings;
    use rumqttc::{Event, Packet, QoS};

    /// What the server relies on: its link may publish where nobody has
    /// subscribed yet (a command for a device still offline) and goes on
    /// carrying messages both ways, QoS 1 to the subscriber that asked for it.
    #[tokio::test]
    async fn the_link_publishes_to_unsubscribed_topics_and_keeps_working() {
        let broker =
            tokio::task::spawn_blocking(|| start("127.0.0.1:0".parse().unwrap(), 16).unwrap())
                .await
                .unwrap();
        let url = broker.url();
        let (mut tx, mut rx) = broker.link;
        tx.subscribe("t/+/up").unwrap();
        tx.publish("t/offline/down", "lost on nobody").unwrap();

        let (client, mut events) = MqttSettings::new(&url, "device").client(16).unwrap();
        client
            .subscribe("t/dev/down", QoS::AtLeastOnce)
            .await
            .unwrap();
        let within = Duration::from_secs(10);
        let p = tokio::time::timeout(within, async {
            loop {
                match events.poll().await.unwrap() {
                    Event::Incoming(Packet::Publish(p)) => return p,
                    Event::Incoming(Packet::SubAck(_)) => {
                        tx.publish("t/dev/down", "for the device").unwrap();
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("the device hears from the server's link");
        assert_eq!(&p.payload[..], b"for the device");
        assert_eq!(p.qos, QoS::AtLeastOnce);

        client
            .publish("t/dev/up", QoS::AtLeastOnce, false, "from the device")
            .await
            .unwrap();
        let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        let heard = tokio::time::timeout(within, async {
            loop {
                if let Ok(Some(rumqttd::Notification::Forward(f))) = rx.next().await {
                    return f.publish;
                }
            }
        })
        .await
        .expect("the server's link hears from the device");
        assert_eq!(&heard.topic[..], b"t/dev/up");
        assert_eq!(&heard.payload[..], b"from the device");
        driver.abort();
    }
}
