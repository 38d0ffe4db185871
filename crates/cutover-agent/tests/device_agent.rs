//! The agent's state machine over a simulated device: acknowledgements,
//! repeats handled once, reports re-sent until acknowledged, a later attempt
//! superseding an earlier one, and MACs the server can check.

use cutover_agent::device::agent::{Agent, Identity, Outgoing};
use cutover_agent::device::mac;
use cutover_agent::device::sim::{SimDevice, SimProfile};
use cutover_core::protocol::{
    AgentMessage, ArtifactRef, Command, CommandKind, FailedStep, PROTOCOL_VERSION, ServerMessage,
    Stage,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const CREDENTIAL: &str = "a-long-enough-credential";

/// A command as the server sends it to `target`: with its MAC.
fn signed(target: &str, mut cmd: Command) -> ServerMessage {
    mac::sign_command(&mut cmd, target, &mac::target_key(CREDENTIAL));
    ServerMessage::Command(cmd)
}

fn install(target: &str, attempt: u32) -> ServerMessage {
    signed(
        target,
        Command {
            v: PROTOCOL_VERSION,
            execution: "exec_1".into(),
            action: "act_1".into(),
            attempt,
            kind: CommandKind::Install {
                artifact: ArtifactRef {
                    id: "art_1".into(),
                    version: "2.0.0".into(),
                    sha256: "00".repeat(32),
                    size: 1,
                    signature: String::new(),
                    key_id: String::new(),
                    url: "/x".into(),
                    hardware: vec![],
                },
                stage_only: false,
            },
            mac: String::new(),
        },
    )
}

fn agent(id: &str, profile: SimProfile) -> (Arc<Agent<SimDevice>>, UnboundedReceiver<Outgoing>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let identity = Identity {
        target: id.into(),
        key: mac::target_key(CREDENTIAL),
        kind: "device".into(),
        environment: "staging".into(),
        hardware_model: "sim".into(),
    };
    let device = Arc::new(SimDevice::new(id, "1.0.0", Arc::new(profile)));
    (
        Agent::new(identity, device, tx, Duration::from_millis(200)),
        rx,
    )
}

/// Collects messages until a final status arrives (or a second passes).
async fn until_final(rx: &mut UnboundedReceiver<Outgoing>) -> Vec<AgentMessage> {
    until_final_within(rx, Duration::from_secs(1)).await
}

async fn until_final_within(
    rx: &mut UnboundedReceiver<Outgoing>,
    within: Duration,
) -> Vec<AgentMessage> {
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            let done = matches!(&m.message, AgentMessage::Status(s) if s.stage.is_final());
            out.push(m.message);
            if done {
                break;
            }
        }
    }
    out
}

fn stages(msgs: &[AgentMessage]) -> Vec<Stage> {
    msgs.iter()
        .filter_map(|m| {
            if let AgentMessage::Status(s) = m {
                Some(s.stage)
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test]
async fn an_install_is_answered_by_its_reports_run_once_and_its_latest_report_resent_until_acked() {
    let (agent, mut rx) = agent("d-1", SimProfile::default());
    agent.handle(install(agent.target(), 1));
    let msgs = until_final(&mut rx).await;
    // A new install is answered by its first report, not by an acknowledgement.
    assert!(
        matches!(&msgs[0], AgentMessage::Status(s) if s.stage == Stage::Downloading && s.attempt == 1),
        "{msgs:?}"
    );
    assert_eq!(
        stages(&msgs),
        [
            Stage::Downloading,
            Stage::Installing,
            Stage::Verifying,
            Stage::Succeeded
        ]
    );
    let key = mac::target_key("a-long-enough-credential");
    assert!(
        msgs.iter().all(|m| mac::verify_message(m, &key)),
        "every message carries a valid mac"
    );
    assert!(
        msgs.iter()
            .all(|m| !mac::verify_message(m, &mac::target_key("another-credential!")))
    );

    // The same command again: acknowledged, not run again.
    agent.handle(install(agent.target(), 1));
    let again = until_final(&mut rx).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(matches!(&again[0], AgentMessage::Ack { key, .. } if key.sequence == 1));
    assert_eq!(agent.stats().duplicates, 1);

    // Nothing acknowledged: the latest report (the final one) goes out again;
    // the progress reports it superseded do not.
    assert_eq!(agent.unacked(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(agent.resend_due(Instant::now()), 1);
    let resent = rx.recv().await.expect("open");
    let AgentMessage::Status(last) = &resent.message else {
        panic!("{resent:?}")
    };
    assert_eq!(last.stage, Stage::Succeeded);
    // Acknowledged: nothing more.
    agent.handle(ServerMessage::Ack {
        v: PROTOCOL_VERSION,
        key: last.key(),
    });
    assert_eq!(agent.unacked(), 0);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(agent.resend_due(Instant::now()), 0);
}

#[tokio::test]
async fn a_progress_report_that_lasts_is_resent_until_acked_then_superseded() {
    // Each slow stage lasts 1.5 s; reports are re-sent after 200 ms.
    let (agent, mut rx) = agent(
        "d-6",
        SimProfile {
            latency: Duration::from_millis(1500),
            ..SimProfile::default()
        },
    );
    agent.handle(install(agent.target(), 1));
    let first = rx.recv().await.expect("open");
    let AgentMessage::Status(downloading) = &first.message else {
        panic!("{first:?}")
    };
    assert_eq!(downloading.stage, Stage::Downloading);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Still downloading, not acknowledged: sent again.
    assert_eq!(agent.resend_due(Instant::now()), 1);
    let again = rx.recv().await.expect("open");
    assert!(
        matches!(&again.message, AgentMessage::Status(s) if s.key() == downloading.key()),
        "{again:?}"
    );
    // The server acknowledges the repeat: nothing waits any more.
    agent.handle(ServerMessage::Ack {
        v: PROTOCOL_VERSION,
        key: downloading.key(),
    });
    assert_eq!(agent.unacked(), 0);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(agent.resend_due(Instant::now()), 0);
    // The install goes on; its final report supersedes every unacknowledged one.
    let rest = until_final_within(&mut rx, Duration::from_secs(20)).await;
    let stages = stages(&rest);
    assert_eq!(stages.last(), Some(&Stage::Succeeded), "{rest:?}");
    assert_eq!(agent.unacked(), 1);
}

#[tokio::test]
async fn a_rollback_supersedes_and_restores_the_previous_version() {
    let (agent, mut rx) = agent("d-2", SimProfile::default());
    agent.handle(install(agent.target(), 1));
    until_final(&mut rx).await;
    assert_eq!(
        cutover_agent::device::Device::running_version(agent.device().as_ref()),
        "2.0.0"
    );
    agent.handle(signed(
        agent.target(),
        Command {
            v: PROTOCOL_VERSION,
            execution: "exec_1".into(),
            action: "act_1".into(),
            attempt: 2,
            kind: CommandKind::Rollback {
                previous_version: Some("1.0.0".into()),
            },
            mac: String::new(),
        },
    ));
    let msgs = until_final(&mut rx).await;
    let last = msgs
        .iter()
        .rev()
        .find_map(|m| {
            if let AgentMessage::Status(s) = m {
                Some(s.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(
        (last.stage, last.attempt, last.running_version.as_str()),
        (Stage::RolledBack, 2, "1.0.0")
    );
    // An older attempt arriving late is ignored.
    agent.handle(install(agent.target(), 1));
    assert_eq!(until_final(&mut rx).await.len(), 1);
}

#[tokio::test]
async fn an_injected_health_failure_reports_the_step_and_keeps_the_old_version() {
    // Every device fails (rate 1.0) at health.
    let (agent, mut rx) = agent(
        "d-3",
        SimProfile {
            latency: Duration::ZERO,
            failure_rate: 1.0,
            fail_stage: FailedStep::Health,
        },
    );
    agent.handle(install(agent.target(), 1));
    let msgs = until_final(&mut rx).await;
    let AgentMessage::Status(last) = msgs.last().unwrap() else {
        panic!("{msgs:?}")
    };
    assert_eq!(last.stage, Stage::Failed);
    assert_eq!(last.failed_step, Some(FailedStep::Health));
    assert_eq!(last.running_version, "1.0.0");
    assert!(
        last.reason.contains("fell back to 1.0.0"),
        "{}",
        last.reason
    );
}

#[tokio::test]
async fn a_command_without_the_targets_mac_is_refused_and_reported() {
    let (agent, mut rx) = agent("d-4", SimProfile::default());
    // Signed for another target, then signed with another credential, then unsigned.
    let ServerMessage::Command(mut cmd) = install("d-5", 1) else {
        unreachable!()
    };
    let forged = [
        cmd.clone(),
        {
            mac::sign_command(
                &mut cmd,
                "d-4",
                &mac::target_key("someone-elses-credential"),
            );
            cmd.clone()
        },
        {
            cmd.mac.clear();
            cmd.clone()
        },
    ];
    for (i, c) in forged.into_iter().enumerate() {
        agent.handle(ServerMessage::Command(c));
        let m = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("the refusal is reported")
            .expect("open");
        match &m.message {
            AgentMessage::Refused { target, reason, .. } => {
                assert_eq!(target, "d-4");
                assert!(reason.contains("authentication code"), "{reason}");
                assert!(mac::verify_message(
                    &m.message,
                    &mac::target_key(CREDENTIAL)
                ));
            }
            other => panic!("forged command {i}: expected a refusal, got {other:?}"),
        }
        assert_eq!(agent.stats().refused, i as u64 + 1);
    }
    assert!(!agent.busy(), "a forged command never runs");
    assert_eq!(
        cutover_agent::device::Device::running_version(agent.device().as_ref()),
        "1.0.0"
    );
    assert_eq!(agent.stats().commands, 0);
    // The genuine command still runs.
    agent.handle(install("d-4", 1));
    let msgs = until_final(&mut rx).await;
    assert_eq!(stages(&msgs).last(), Some(&Stage::Succeeded), "{msgs:?}");
}
