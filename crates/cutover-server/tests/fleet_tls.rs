//! mqtts end to end, with certificates made for each test: real agent
//! processes on the embedded broker's TLS listener, and the server itself on
//! an external broker over TLS.

mod fleet_common;

use cutover_core::engine::{RolloutSpec, Strategy};
use cutover_server::fleet::broker::{self, BrokerTls};
use cutover_server::fleet::{FleetPlane, FleetSettings};
use fleet_common::{Broker, Fleet, firmware, wait_for};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A CA, and a broker certificate it signed for localhost and 127.0.0.1, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let pki = Pki {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-broker.pem")),
            key: dir.join(format!("{name}-broker.key")),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, leaf.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }

    fn listener(&self) -> BrokerTls {
        BrokerTls {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
        }
    }
}

/// An embedded broker of its own, without TLS, on a free port.
async fn plain_broker() -> broker::EmbeddedBroker {
    tokio::task::spawn_blocking(|| broker::start("127.0.0.1:0".parse().unwrap(), 64))
        .await
        .unwrap()
        .unwrap()
}

fn immediate() -> RolloutSpec {
    let mut spec = RolloutSpec::new(Strategy::Immediate);
    spec.min_finished_for_error_rate = 1;
    spec.action_timeout_ms = 60_000;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_take_a_rollout_through_the_embedded_brokers_mqtts_listener() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "cutover");
    let tls = pki.listener();
    let mut fleet = Fleet::start_with(Broker::Embedded, |s| s.broker_tls = Some(tls)).await;
    let url = fleet.plane.tls_broker_url().expect("an mqtts listener");
    assert!(url.starts_with("mqtts://127.0.0.1:"), "{url}");
    let art = fleet.upload(firmware(64 * 1024, 7), "2.0.0", None).await;
    let trusts = format!("mqtt_ca_file: {}\n", pki.ca.display());
    for id in ["tls-1", "tls-2"] {
        let i = fleet.add_agent(id, &trusts).await;
        fleet.agents[i].spawn();
    }
    // An agent that trusts another CA does not get past the handshake.
    let other = Pki::new(certs.path(), "other");
    let stranger = fleet
        .add_agent(
            "tls-stranger",
            &format!("mqtt_ca_file: {}\n", other.ca.display()),
        )
        .await;
    fleet.agents[stranger].spawn();

    let exec = fleet
        .execute(&art, "2.0.0", immediate(), &["tls-1", "tls-2"])
        .await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
    for a in fleet.agents.iter_mut().take(2) {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "2.0.0", "{}: {s}", a.id);
    }
    let log_of_stranger = || fleet.agents[stranger].log().to_lowercase();
    wait_for(
        "the stranger agent to log the broker's certificate as untrusted",
        Duration::from_secs(20),
        || log_of_stranger().contains("certificate"),
    );
    let seen = fleet.store.get_target("tls-stranger").await.unwrap();
    assert!(
        seen.last_seen_at.is_none(),
        "an agent that refused the broker's certificate was seen: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_and_its_agents_use_an_external_broker_over_mqtts() {
    // A broker of its own with an mqtts listener stands in for a TLS Mosquitto.
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "external");
    let plain = plain_broker().await;
    let tls_addr = broker::start_tls(&pki.listener(), plain.addr)
        .await
        .unwrap();
    let url = format!("mqtts://127.0.0.1:{}", tls_addr.port());

    let ca = std::fs::read(&pki.ca).unwrap();
    let mut fleet = Fleet::start_with(Broker::External(url.clone()), |s| {
        s.mqtt_ca_pem = Some(ca);
    })
    .await;
    assert_eq!(fleet.plane.broker_url(), url);
    let art = fleet.upload(firmware(64 * 1024, 8), "2.0.0", None).await;
    let i = fleet
        .add_agent("ext-1", &format!("mqtt_ca_file: {}\n", pki.ca.display()))
        .await;
    fleet.agents[i].spawn();
    let exec = fleet.execute(&art, "2.0.0", immediate(), &["ext-1"]).await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
    fleet.agents[i].kill();
    assert_eq!(fleet.agents[i].status()["running_version"], "2.0.0");

    // Without the CA (the system roots), the server refuses the broker and says why.
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let refused = FleetPlane::start(
        FleetSettings {
            mqtt_url: Some(url.clone()),
            artifact_dir: certs.path().join("artifacts"),
            ..Default::default()
        },
        fleet.store.clone(),
        stop_rx,
    )
    .await
    .err()
    .expect("a broker whose certificate nobody trusts is refused");
    let why = format!("{refused:#}");
    assert!(why.contains(&url), "{why}");
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_broker_certificate_that_cannot_be_read_is_named() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), "named");
    let plain = plain_broker().await;
    let mut tls = pki.listener();
    tls.cert_file = certs.path().join("missing.pem");
    let e = broker::start_tls(&tls, plain.addr).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("mqtt.tls.cert_file"), "{msg}");
    assert!(msg.contains("missing.pem"), "{msg}");

    // A key that is not the certificate's is refused before anything listens.
    let other = Pki::new(certs.path(), "other");
    let mut tls = pki.listener();
    tls.key_file = other.key.clone();
    let e = broker::start_tls(&tls, plain.addr).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("do not form a usable pair"), "{msg}");

    // The key file holding a certificate instead.
    let mut tls = pki.listener();
    tls.key_file = pki.cert.clone();
    let e = broker::start_tls(&tls, plain.addr).await.unwrap_err();
    assert!(format!("{e:#}").contains("mqtt.tls.key_file"), "{e:#}");
}
