//! Device-level stories against the real fleet plane: resumed downloads, an
//! agent killed mid-write, a server restarted mid-rollout, a status forged
//! for another target, a command forged for a device, a simulated fleet
//! whose connections share one reader, and hellos sent again.

mod fleet_common;

use cutover_agent::device::http::HttpClient;
use cutover_agent::device::mac;
use cutover_core::engine::{RolloutSpec, Strategy, Threshold};
use cutover_core::protocol::{
    AgentMessage, Channel, Command, CommandKind, Hello, PROTOCOL_VERSION, ServerMessage, SlotInfo,
    Stage, StatusReport, topic,
};
use cutover_server::fleet::{FleetPlane, FleetSettings};
use fleet_common::{Broker, CREDENTIAL_PREFIX, Fleet, firmware, slot_len, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_with_a_range_request() {
    let fleet = Fleet::start(Broker::Embedded).await;
    let bytes = firmware(300_000, 9);
    let art = fleet.upload(bytes.clone(), "3.0.0", None).await;
    let dest = fleet.dir.path().join("partial.bin");
    std::fs::write(&dest, &bytes[..123_456]).unwrap();
    let url = format!("{}/api/artifacts/{art}/download", fleet.http_url);
    let from = HttpClient::default()
        .download_resume(&url, &dest, bytes.len() as u64, &[])
        .await
        .unwrap();
    assert_eq!(
        from, 123_456,
        "the download went on from the bytes already there"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // A whole file is not fetched again; a file longer than the artifact starts over.
    assert_eq!(
        HttpClient::default()
            .download_resume(&url, &dest, bytes.len() as u64, &[])
            .await
            .unwrap(),
        bytes.len() as u64
    );
    std::fs::write(&dest, vec![0u8; 400_000]).unwrap();
    assert_eq!(
        HttpClient::default()
            .download_resume(&url, &dest, bytes.len() as u64, &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_writing_its_slot_still_boots_the_old_slot_and_finishes_after_restart()
 {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let size = 1_000_000;
    let art = fleet.upload(firmware(size, 5), "2.0.0", None).await;
    // Slow flash: the write takes about four seconds.
    let i = fleet
        .add_agent("slow-1", "slot_write_bytes_per_s: 250000\n")
        .await;
    fleet.agents[i].spawn();
    let exec = fleet
        .execute(
            &art,
            "2.0.0",
            RolloutSpec::new(Strategy::Immediate),
            &["slow-1"],
        )
        .await;
    let slot_dir = fleet.agents[i].slot_dir.clone();
    wait_for("the slot write to start", Duration::from_secs(30), || {
        let n = slot_len(&slot_dir, "slot-b.img");
        n > 0 && n < size as u64
    });
    fleet.agents[i].kill();
    let written = slot_len(&slot_dir, "slot-b.img");
    assert!(written < size as u64, "killed mid-write ({written} bytes)");
    let s = fleet.agents[i].status();
    assert_eq!(s["running_version"], "1.0.0", "{s}");
    assert_eq!(
        s["slots"][1]["version"],
        serde_json::Value::Null,
        "the half-written slot is not bootable: {s}"
    );
    // Restarted, the agent finishes the job it had accepted.
    fleet.agents[i].spawn();
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
    fleet.agents[i].kill();
    assert_eq!(fleet.agents[i].status()["running_version"], "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_rollout_finishes_with_no_device_updated_twice() {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    let art = fleet.upload(firmware(500_000, 6), "2.0.0", None).await;
    let ids = ["r-1", "r-2", "r-3"];
    for id in ids {
        let i = fleet
            .add_agent(id, "slot_write_bytes_per_s: 500000\n")
            .await;
        fleet.agents[i].spawn();
    }
    let mut spec = RolloutSpec::new(Strategy::Rolling {
        batch_size: Threshold::Count(1),
    });
    spec.min_finished_for_error_rate = 1;
    let exec = fleet.execute(&art, "2.0.0", spec, &ids).await;
    // Wait for the first device, then stop the orchestrator.
    let first = fleet.agents[0].slot_dir.clone();
    wait_for(
        "the first device to be updated",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(first.join("boot.json"))
                .is_ok_and(|b| b.contains("2.0.0") && b.contains("\"pending\": null"))
        },
    );
    fleet.stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mid = fleet.store.get_execution(&exec).await.unwrap();
    assert_eq!(mid.status, "running");
    // A new orchestrator with the same replica name, on the same store and broker.
    let (_stop2, stop_rx) = tokio::sync::watch::channel(false);
    let settings = FleetSettings {
        artifact_dir: fleet.dir.path().join("artifacts"),
        mqtt_url: Some(fleet.plane.broker_url().to_string()),
        owner: fleet_common::OWNER.to_string(),
        resend_ms: 1000,
        claim_interval_ms: 200,
        ..Default::default()
    };
    let plane2 = FleetPlane::start(settings, fleet.store.clone(), stop_rx)
        .await
        .unwrap();
    plane2.wake(&exec);
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
    for a in fleet.agents.iter_mut() {
        a.kill();
        let s = a.status();
        assert_eq!(s["running_version"], "2.0.0", "{}: {s}", a.id);
        // Installed once: the factory image is still in slot a, the new one in b.
        assert_eq!(s["slots"][0]["version"], "1.0.0", "{}: {s}", a.id);
        assert_eq!(s["slots"][1]["version"], "2.0.0", "{}: {s}", a.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_published_for_another_target_is_refused_and_audited() {
    let mut fleet = Fleet::start(Broker::Embedded).await;
    fleet.add_agent("victim", "").await;
    fleet.add_agent("intruder", "").await;
    let intruder_key = mac::target_key(&format!("{CREDENTIAL_PREFIX}intruder-0123456789"));
    let mut report = StatusReport {
        v: PROTOCOL_VERSION,
        target: "victim".into(),
        execution: "exec_x".into(),
        action: "act_x".into(),
        attempt: 1,
        stage: Stage::Succeeded,
        failed_step: None,
        reason: String::new(),
        running_version: "6.6.6".into(),
        health: None,
        elapsed_ms: 0,
        mac: String::new(),
    };
    report.mac = mac::mac_hex(&intruder_key, report.mac_input().as_bytes());
    let payload = serde_json::to_vec(&AgentMessage::Status(report)).unwrap();
    let settings =
        cutover_agent::device::mqtt::MqttSettings::new(fleet.plane.broker_url(), "intruder-client");
    let (client, mut eventloop) = rumqttc::AsyncClient::new(settings.options().unwrap(), 10);
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish(
            topic("victim", Channel::Status),
            rumqttc::QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .unwrap();
    let mut refused = Vec::new();
    for _ in 0..100 {
        refused = fleet
            .store
            .list_audit(&cutover_store::AuditFilter {
                action: Some("agent.message.refused".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poll.abort();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].subject, "victim");
    assert_eq!(refused[0].result, "denied");
    assert!(
        refused[0]
            .details
            .to_string()
            .contains("bad message authentication code"),
        "{:?}",
        refused[0].details
    );
    let victim = fleet.store.get_target("victim").await.unwrap();
    assert_eq!(
        victim.current_version.as_deref(),
        Some("1.0.0"),
        "the forged report changed nothing"
    );
}

/// A command published on a device's topic by someone without the device's
/// credential: the real agent refuses it, runs nothing, and the server audits
/// the refusal; a genuine rollout afterwards still goes through.
async fn forged_command_is_refused(broker: Broker) {
    let mut fleet = Fleet::start(broker).await;
    let art = fleet.upload(firmware(20_000, 3), "2.0.0", None).await;
    let i = fleet.add_agent("guarded", "").await;
    fleet.agents[i].spawn();
    let artifact_row = fleet.store.get_artifact(&art).await.unwrap();
    let artifact = cutover_server::fleet::artifacts::artifact_ref(&artifact_row);
    let intruder_key = mac::target_key("not-the-devices-credential");
    let mut forged = Command {
        v: PROTOCOL_VERSION,
        execution: "exec_forged".into(),
        action: "act_forged".into(),
        attempt: 1,
        kind: CommandKind::Install {
            artifact,
            stage_only: false,
        },
        mac: String::new(),
    };
    mac::sign_command(&mut forged, "guarded", &intruder_key);
    let payload = serde_json::to_vec(&ServerMessage::Command(forged)).unwrap();
    let settings =
        cutover_agent::device::mqtt::MqttSettings::new(fleet.plane.broker_url(), "forger-client");
    let (client, mut eventloop) = rumqttc::AsyncClient::new(settings.options().unwrap(), 10);
    let poll = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    // The agent subscribes after it connects; publish until its refusal is audited.
    let mut refused = Vec::new();
    for _ in 0..60 {
        client
            .publish(
                topic("guarded", Channel::Commands),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload.clone(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        refused = fleet
            .store
            .list_audit(&cutover_store::AuditFilter {
                action: Some("agent.command.refused".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        if !refused.is_empty() {
            break;
        }
    }
    poll.abort();
    assert!(
        !refused.is_empty(),
        "no refusal audited; agent log:\n{}",
        fleet.agents[i].log()
    );
    assert_eq!(refused[0].subject, "guarded");
    assert!(
        refused[0]
            .details
            .to_string()
            .contains("bad message authentication code"),
        "{:?}",
        refused[0].details
    );
    assert!(
        fleet.agents[i]
            .log()
            .contains("command refused: bad message authentication code"),
        "{}",
        fleet.agents[i].log()
    );
    let status = fleet.agents[i].status();
    assert!(
        !status.to_string().contains("2.0.0"),
        "a forged command wrote a slot: {status}"
    );
    // The server's own commands carry the device's MAC and still run.
    let exec = fleet
        .execute(
            &art,
            "2.0.0",
            RolloutSpec::new(Strategy::Immediate),
            &["guarded"],
        )
        .await;
    assert_eq!(
        fleet.finish(&exec, Duration::from_secs(60)).await,
        "succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_command_is_refused_by_the_agent_and_audited_embedded() {
    forged_command_is_refused(Broker::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_command_is_refused_by_the_agent_and_audited_mosquitto() {
    if let Some(url) = fleet_common::external_broker() {
        forged_command_is_refused(Broker::External(url)).await;
    }
}

/// A simulated fleet on several connections reads its commands on one of
/// them; the others only publish. Their devices' hellos must wait until that
/// reader has subscribed, or the server's acknowledgements reach nobody and
/// every hello is sent again three seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishing_connection_says_hello_only_once_the_fleets_reader_has_subscribed() {
    use cutover_agent::device::agent::{Agent, Identity};
    use cutover_agent::device::mqtt::{Listen, MqttSettings, run_connection};
    use cutover_agent::device::sim::{SimDevice, SimProfile};
    use std::collections::HashMap;
    use std::sync::Arc;

    let fleet = Fleet::start(Broker::Embedded).await;
    let profile = Arc::new(SimProfile::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut groups = Vec::new();
    let mut all = HashMap::new();
    for c in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut group = HashMap::new();
        for i in 0..100 {
            let id = format!("gw{c}-{i}");
            let credential = fleet.enroll(&id).await;
            let identity = Identity {
                target: id.clone(),
                key: mac::target_key(&credential),
                kind: "device".into(),
                environment: "staging".into(),
                hardware_model: "board-x".into(),
            };
            let device = Arc::new(SimDevice::new(&id, "1.0.0", profile.clone()));
            let agent = Agent::new(identity, device, tx.clone(), Duration::from_secs(3));
            all.insert(id.clone(), agent.clone());
            group.insert(id, agent);
        }
        groups.push((Arc::new(group), rx));
    }
    let all = Arc::new(all);
    let (subscribed, reader_subscribed) = tokio::sync::watch::channel(false);
    let (reader_group, reader_rx) = groups.remove(0);
    let (writer_group, writer_rx) = groups.remove(0);
    let settings = |name: &str| MqttSettings::new(fleet.plane.broker_url(), name);
    tokio::spawn(run_connection(
        settings("gw-writer"),
        writer_group.clone(),
        Listen::Nothing { reader_subscribed },
        writer_rx,
        Duration::ZERO,
        stop_rx.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        writer_group.values().all(|a| a.unacked() == 0),
        "no hello leaves before the reader has subscribed"
    );
    tokio::spawn(run_connection(
        settings("gw-reader"),
        reader_group,
        Listen::Fleet {
            agents: all.clone(),
            subscribed,
        },
        reader_rx,
        Duration::ZERO,
        stop_rx,
    ));
    wait_for(
        "every hello of both connections to be acknowledged",
        Duration::from_secs(10),
        || {
            all.values()
                .all(|a| a.unacked() == 0 && a.stats().received > 0)
        },
    );
    let resent: u64 = all.values().map(|a| a.stats().resent).sum();
    assert_eq!(resent, 0, "no hello had to be sent again");
    let _ = stop.send(true);
}

/// An agent re-sends its hello until it is acknowledged, so a slow inventory
/// write brings a backlog of identical copies. Each copy is acknowledged, but
/// only a hello that says something new is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_sent_again_unchanged_is_acknowledged_without_being_written_again() {
    let fleet = Fleet::start(Broker::Embedded).await;
    let key = mac::target_key(&fleet.enroll("echo").await);
    let settings =
        cutover_agent::device::mqtt::MqttSettings::new(fleet.plane.broker_url(), "echo-client");
    let (client, mut eventloop) = settings.client(10).unwrap();
    client
        .subscribe(topic("echo", Channel::Commands), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let poll = tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev
                && let Ok(ServerMessage::HelloAck { .. }) = serde_json::from_slice(&p.payload)
            {
                let _ = acks_tx.send(());
            }
        }
    });
    let hello = async |version: &str| {
        let mut msg = AgentMessage::Hello(Hello {
            v: PROTOCOL_VERSION,
            target: "echo".into(),
            kind: "device".into(),
            environment: "staging".into(),
            hardware_model: "board-x".into(),
            running_version: version.into(),
            slots: vec![SlotInfo {
                name: "a".into(),
                version: Some(version.into()),
                active: true,
                pending: false,
            }],
            agent_version: "test".into(),
            mac: String::new(),
        });
        mac::sign_message(&mut msg, &key);
        client
            .publish(
                topic("echo", Channel::Hello),
                rumqttc::QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&msg).unwrap(),
            )
            .await
            .unwrap();
    };
    // The subscription may not be in place yet: say hello until one is answered.
    let mut answered = false;
    for _ in 0..50 {
        hello("1.0.0").await;
        if tokio::time::timeout(Duration::from_millis(200), acks.recv())
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "no hello was acknowledged");
    // Copies sent before that answer may still be on their way: let them be
    // answered too, so each acknowledgement below answers the hello before it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while acks.try_recv().is_ok() {}
    let mut acked = async |what: &str| {
        tokio::time::timeout(Duration::from_secs(10), acks.recv())
            .await
            .unwrap_or_else(|_| panic!("{what} was not acknowledged"));
        // Acknowledged after its write is committed.
        fleet.store.get_target("echo").await.unwrap()
    };
    let first = fleet.store.get_target("echo").await.unwrap();
    assert_eq!(first.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(first.inventory["slots"][0]["version"], "1.0.0");
    let stored_at = first.last_seen_at.expect("the hello was stored");

    tokio::time::sleep(Duration::from_millis(20)).await;
    hello("1.0.0").await;
    let again = acked("the same hello").await;
    assert_eq!(
        again.last_seen_at,
        Some(stored_at),
        "an unchanged hello was written again"
    );

    hello("2.0.0").await;
    let updated = acked("a hello with a new version").await;
    assert_eq!(updated.current_version.as_deref(), Some("2.0.0"));
    assert_eq!(updated.inventory["slots"][0]["version"], "2.0.0");
    assert!(updated.last_seen_at > Some(stored_at));

    // The first hello again is new relative to what is stored now.
    hello("1.0.0").await;
    let back = acked("the first hello again").await;
    assert_eq!(back.current_version.as_deref(), Some("1.0.0"));
    poll.abort();
}
