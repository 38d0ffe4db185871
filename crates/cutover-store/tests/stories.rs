//! Store stories, each run on SQLite (a fresh file) and on PostgreSQL (a fresh schema of
//! `CUTOVER_TEST_DATABASE_URL`, dropped afterwards; skipped with a note when the variable is
//! unset, failing when `CI=true`).

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use cutover_store::testing::TestDb;
use cutover_store::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Runs `$story(&TestDb)` once per backend, as tests `$story::sqlite` and `$story::postgres`.
macro_rules! story {
    ($($story:ident),* $(,)?) => {$(
        mod $story {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = cutover_store::testing::TestDb::sqlite().await;
                super::$story(&db).await.expect(concat!(stringify!($story), " on sqlite"));
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = cutover_store::testing::TestDb::postgres().await else { return };
                super::$story(&db).await.expect(concat!(stringify!($story), " on postgres"));
            }
        }
    )*};
}

story!(
    migrations_are_idempotent,
    concurrent_connects_on_a_fresh_database,
    environments_round_trip,
    targets_with_groups_and_labels,
    targets_seen_record_kind_and_version,
    artifacts_are_immutable,
    plan_transitions_are_compare_and_set,
    duplicate_approval_is_refused,
    execution_with_a_thousand_actions,
    commit_step_is_atomic,
    commit_step_refuses_a_writer_without_the_lease,
    batched_action_events_keep_order,
    execution_events_replay_and_refuse_repeats,
    append_only_tables_refuse_changes,
    audit_chain_detects_an_update,
    audit_chain_detects_a_deleted_row,
    audit_chain_detects_removed_newest_rows,
    concurrent_writers_do_not_fail,
    leases_two_owners_expiry_takeover,
    runnable_executions_are_claimed_once,
    outbox_claim_complete_fail_retry,
    api_keys_by_prefix_and_revoke,
    users_upsert_keeps_password,
    schedules_fire_once,
    gate_results_round_trip,
);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
}

fn env(name: &str, position: i64) -> EnvironmentRow {
    EnvironmentRow {
        name: name.into(),
        position,
        approval_required: position >= 2,
        required_approvals: if position >= 3 { 2 } else { 0 },
        auto_rollback: true,
        max_concurrent_deployments: Some(3),
        config: json!({"health_check_url": format!("https://{name}.example/health")}),
        created_at: t0(),
        updated_at: t0(),
    }
}

fn target(id: &str, env: &str) -> NewTarget {
    NewTarget {
        id: id.into(),
        name: id.into(),
        environment: env.into(),
        kind: "device".into(),
        hardware_model: Some("rpi4".into()),
        current_version: Some("1.0.0".into()),
        groups: vec!["edge".into()],
        labels: BTreeMap::from([("region".to_string(), "eu".to_string())]),
    }
}

/// An environment, `n` targets, a plan and an execution with one wave of all targets.
async fn setup_execution(store: &Store, n: usize) -> Result<(PlanRow, ExecutionRow)> {
    store.upsert_environment(&env("production", 3)).await?;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("dev-{i:05}");
        store.upsert_target(&target(&id, "production")).await?;
        ids.push(id);
    }
    let plan = store
        .insert_plan(&NewPlan {
            name: "fw 2.0".into(),
            version: "2.0.0".into(),
            target_environment: "production".into(),
            strategy: "rolling".into(),
            spec: json!({"batch_size": "25%"}),
            created_by: "alice".into(),
            ..Default::default()
        })
        .await?;
    let exec = store
        .insert_execution(&NewExecution {
            plan_id: plan.id.clone(),
            environment: "production".into(),
            spec: json!({"waves": 1}),
            state: json!({"phase": "start"}),
            waves: vec![ids],
            created_by: "alice".into(),
            ..Default::default()
        })
        .await?;
    Ok((plan, exec))
}

fn action_event(exec: &str, action: &str, target: &str, seq: i64) -> NewActionEvent {
    NewActionEvent {
        execution_id: exec.into(),
        action_id: action.into(),
        target_id: target.into(),
        seq,
        kind: "downloading".into(),
        at: t0() + TimeDelta::milliseconds(seq),
        detail: json!({"progress": seq % 100}),
    }
}

async fn migrations_are_idempotent(db: &TestDb) -> Result<()> {
    db.store.migrate().await?;
    db.store.migrate().await?;
    // A second store on the same database runs the migrations again: nothing to do.
    let again = Store::connect(db.url()).await.context("reconnecting")?;
    again.upsert_environment(&env("staging", 2)).await?;
    ensure!(db.store.get_environment("staging").await?.position == 2);
    again.close().await;
    Ok(())
}

async fn concurrent_connects_on_a_fresh_database(db: &TestDb) -> Result<()> {
    // A new, empty database beside the test's one: two replicas start at once.
    match db.store.backend() {
        BackendKind::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("fresh.db").display());
            let (a, b, c) = tokio::join!(
                Store::connect(&url),
                Store::connect(&url),
                Store::connect(&url)
            );
            let (a, b, c) = (a?, b?, c?);
            a.upsert_environment(&env("dev", 0)).await?;
            ensure!(b.list_environments().await?.len() == 1);
            ensure!(c.list_environments().await?.len() == 1);
        }
        BackendKind::Postgres => {
            let admin = cutover_store::testing::postgres_url_or_skip().context("no url")?;
            let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
            cutover_store::testing::create_schema(&admin, &schema).await;
            let url = cutover_store::testing::url_with_schema(&admin, &schema);
            let (a, b, c) = tokio::join!(
                Store::connect(&url),
                Store::connect(&url),
                Store::connect(&url)
            );
            let result = async {
                let (a, b, c) = (a?, b?, c?);
                a.upsert_environment(&env("dev", 0)).await?;
                ensure!(b.list_environments().await?.len() == 1);
                ensure!(c.list_environments().await?.len() == 1);
                for s in [a, b, c] {
                    s.close().await;
                }
                Ok(())
            }
            .await;
            cutover_store::testing::drop_schema(&admin, &schema).await;
            result?;
        }
    }
    Ok(())
}

async fn environments_round_trip(db: &TestDb) -> Result<()> {
    let s = &db.store;
    for (i, name) in ["production", "development", "staging", "testing"]
        .iter()
        .enumerate()
    {
        let pos = match *name {
            "development" => 0,
            "testing" => 1,
            "staging" => 2,
            _ => 3,
        };
        let _ = i;
        s.upsert_environment(&env(name, pos)).await?;
    }
    let names: Vec<String> = s
        .list_environments()
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    ensure!(
        names == ["development", "testing", "staging", "production"],
        "{names:?}"
    );
    let mut prod = s.get_environment("production").await?;
    ensure!(prod.required_approvals == 2 && prod.approval_required);
    ensure!(prod.config["health_check_url"] == "https://production.example/health");
    prod.max_concurrent_deployments = None;
    s.upsert_environment(&prod).await?;
    ensure!(
        s.get_environment("production")
            .await?
            .max_concurrent_deployments
            .is_none()
    );
    ensure!(matches!(
        s.get_environment("nowhere").await,
        Err(StoreError::NotFound)
    ));
    Ok(())
}

async fn targets_seen_record_kind_and_version(db: &TestDb) -> Result<()> {
    let s = &db.store;
    s.upsert_environment(&env("production", 3)).await?;
    for id in ["web-1", "dev-1", "dev-2", "dev-3"] {
        let mut t = target(id, "production");
        t.current_version = Some("0.9.0".into());
        s.upsert_target(&t).await?;
    }
    s.record_targets_seen(
        &[(
            "dev-3".to_string(),
            "0.9.0".to_string(),
            Some(json!({"kind": "device", "slots": 2})),
        )],
        t0(),
    )
    .await?;
    let seen = vec![
        // A host with nothing installed yet says "" and calls itself a host.
        (
            "web-1".to_string(),
            String::new(),
            Some(json!({"kind": "host"})),
        ),
        (
            "dev-1".to_string(),
            "1.0.0".to_string(),
            Some(json!({"kind": "toaster"})),
        ),
        (
            "dev-2".to_string(),
            "1.1.0".to_string(),
            Some(json!({"slots": 2})),
        ),
        ("unknown".to_string(), "1.0.0".to_string(), None),
        // Seen twice in one batch: the later report wins, a missing inventory keeps the earlier.
        ("dev-2".to_string(), "1.2.0".to_string(), None),
        // Only a version (a finished action): the inventory stays as it was.
        ("dev-3".to_string(), "1.0.0".to_string(), None),
    ];
    let later = t0() + TimeDelta::seconds(5);
    s.record_targets_seen(&seen, later).await?;
    let web = s.get_target("web-1").await?;
    ensure!(
        web.kind == "host" && web.current_version.is_none(),
        "{web:?}"
    );
    let dev1 = s.get_target("dev-1").await?;
    ensure!(dev1.kind == "device" && dev1.current_version.as_deref() == Some("1.0.0"));
    ensure!(dev1.inventory == json!({"kind": "toaster"}) && dev1.last_seen_at == Some(later));
    let dev2 = s.get_target("dev-2").await?;
    ensure!(
        dev2.kind == "device"
            && dev2.current_version.as_deref() == Some("1.2.0")
            && dev2.inventory == json!({"slots": 2}),
        "{dev2:?}"
    );
    let dev3 = s.get_target("dev-3").await?;
    ensure!(
        dev3.kind == "device"
            && dev3.current_version.as_deref() == Some("1.0.0")
            && dev3.inventory == json!({"kind": "device", "slots": 2})
            && dev3.last_seen_at == Some(later),
        "{dev3:?}"
    );
    Ok(())
}

async fn targets_with_groups_and_labels(db: &TestDb) -> Result<()> {
    let s = &db.store;
    s.upsert_environment(&env("production", 3)).await?;
    s.upsert_environment(&env("staging", 2)).await?;
    let mut a = target("dev-a", "production");
    a.groups = vec!["edge".into(), "canary".into()];
    s.upsert_target(&a).await?;
    let mut b = target("dev-b", "production");
    b.labels.insert("region".into(), "us".into());
    b.hardware_model = Some("jetson".into());
    s.upsert_target(&b).await?;
    let mut h = target("web-1", "staging");
    h.kind = "host".into();
    h.groups = vec![];
    s.upsert_target(&h).await?;

    let got = s.get_target("dev-a").await?;
    ensure!(got.groups == ["canary", "edge"], "{:?}", got.groups);
    ensure!(got.labels.get("region").map(String::as_str) == Some("eu"));

    let by = |f: TargetFilter| async move {
        s.list_targets(&f)
            .await
            .map(|v| v.into_iter().map(|t| t.id).collect::<Vec<_>>())
    };
    ensure!(
        by(TargetFilter {
            environment: Some("production".into()),
            ..Default::default()
        })
        .await?
            == ["dev-a", "dev-b"]
    );
    ensure!(
        by(TargetFilter {
            group: Some("canary".into()),
            ..Default::default()
        })
        .await?
            == ["dev-a"]
    );
    ensure!(
        by(TargetFilter {
            labels: vec![("region".into(), "us".into())],
            ..Default::default()
        })
        .await?
            == ["dev-b"]
    );
    ensure!(
        by(TargetFilter {
            hardware_model: Some("rpi4".into()),
            kind: Some("device".into()),
            ..Default::default()
        })
        .await?
            == ["dev-a"]
    );
    ensure!(
        by(TargetFilter {
            kind: Some("host".into()),
            ..Default::default()
        })
        .await?
            == ["web-1"]
    );

    // Upsert replaces groups and labels; inventory updates keep them.
    a.groups = vec!["edge".into()];
    a.labels.clear();
    s.upsert_target(&a).await?;
    s.update_target_inventory("dev-a", "1.1.0", &json!({"slots": ["a", "b"]}), t0())
        .await?;
    s.set_target_credential("dev-a", "hash-of-secret").await?;
    let got = s.get_target("dev-a").await?;
    ensure!(got.groups == ["edge"] && got.labels.is_empty());
    ensure!(got.current_version.as_deref() == Some("1.1.0"));
    ensure!(got.inventory["slots"][1] == "b");
    ensure!(got.last_seen_at == Some(t0()));
    ensure!(got.credential_hash.as_deref() == Some("hash-of-secret"));

    ensure!(matches!(
        s.update_target_inventory("nope", "1", &json!({}), t0())
            .await,
        Err(StoreError::NotFound)
    ));
    let mut bad = target("dev-x", "production");
    bad.kind = "toaster".into();
    ensure!(matches!(
        s.upsert_target(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    let orphan = target("dev-y", "mars");
    ensure!(matches!(
        s.upsert_target(&orphan).await,
        Err(StoreError::Invalid(_))
    ));
    Ok(())
}

async fn artifacts_are_immutable(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let new = NewArtifact {
        version: "2.0.0".into(),
        kind: "firmware".into(),
        sha256: "ab".repeat(32),
        size_bytes: 1 << 20,
        compatible_hardware: vec!["rpi4".into()],
        metadata: json!({"min_bootloader": "3"}),
        ..Default::default()
    };
    let a = s.insert_artifact(&new).await?;
    ensure!(a.id.starts_with("art_"));
    let again = s.insert_artifact(&new).await?;
    ensure!(again.id == a.id, "same content twice is the same artifact");
    let other = NewArtifact {
        sha256: "cd".repeat(32),
        ..new.clone()
    };
    ensure!(matches!(
        s.insert_artifact(&other).await,
        Err(StoreError::Conflict(_))
    ));
    let bad = NewArtifact {
        sha256: "xyz".into(),
        ..new.clone()
    };
    ensure!(matches!(
        s.insert_artifact(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    ensure!(s.get_artifact(&a.id).await?.compatible_hardware == ["rpi4"]);
    ensure!(s.find_artifact("2.0.0", "firmware").await?.is_some());
    ensure!(s.find_artifact("2.0.0", "release").await?.is_none());
    ensure!(s.list_artifacts().await?.len() == 1);
    Ok(())
}

async fn plan_transitions_are_compare_and_set(db: &TestDb) -> Result<()> {
    let s = &db.store;
    s.upsert_environment(&env("production", 3)).await?;
    let p = s
        .insert_plan(&NewPlan {
            name: "p".into(),
            version: "1".into(),
            target_environment: "production".into(),
            strategy: "canary".into(),
            spec: json!({"canary_percentage": 5}),
            created_by: "alice".into(),
            ..Default::default()
        })
        .await?;
    ensure!(p.status == "draft" && p.revision == 1 && p.id.starts_with("plan_"));
    let p2 = s
        .transition_plan(&p.id, &["draft"], "pending_approval")
        .await?;
    ensure!(p2.status == "pending_approval" && p2.revision == 2);
    // A second operator acting on the stale state loses.
    match s.transition_plan(&p.id, &["draft"], "canceled").await {
        Err(StoreError::Conflict(msg)) => ensure!(msg.contains("pending_approval"), "{msg}"),
        other => anyhow::bail!("expected a conflict, got {other:?}"),
    }
    let p3 = s
        .transition_plan(&p.id, &["draft", "pending_approval"], "approved")
        .await?;
    ensure!(p3.status == "approved" && p3.revision == 3);
    ensure!(matches!(
        s.transition_plan("plan_missing", &["draft"], "approved")
            .await,
        Err(StoreError::NotFound)
    ));
    ensure!(matches!(
        s.transition_plan(&p.id, &["approved"], "bogus").await,
        Err(StoreError::Invalid(_))
    ));
    ensure!(s.get_plan(&p.id).await?.status == "approved");
    ensure!(s.list_plans(10).await?.len() == 1);
    Ok(())
}

async fn duplicate_approval_is_refused(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (plan, _) = setup_execution(s, 1).await?;
    let a = NewApproval {
        plan_id: plan.id.clone(),
        approver: "bob".into(),
        decision: "approve".into(),
        comment: Some("lgtm".into()),
    };
    s.insert_approval(&a).await?;
    match s.insert_approval(&a).await {
        Err(StoreError::Conflict(msg)) => ensure!(msg.contains("bob"), "{msg}"),
        other => anyhow::bail!("expected a conflict, got {other:?}"),
    }
    s.insert_approval(&NewApproval {
        approver: "carol".into(),
        ..a.clone()
    })
    .await?;
    let list = s.list_approvals(&plan.id).await?;
    ensure!(list.len() == 2 && list[0].approver == "bob");
    ensure!(matches!(
        s.insert_approval(&NewApproval {
            plan_id: "plan_missing".into(),
            ..a.clone()
        })
        .await,
        Err(StoreError::Invalid(_))
    ));
    ensure!(matches!(
        s.insert_approval(&NewApproval {
            decision: "maybe".into(),
            approver: "dave".into(),
            ..a.clone()
        })
        .await,
        Err(StoreError::Invalid(_))
    ));
    Ok(())
}

async fn execution_with_a_thousand_actions(db: &TestDb) -> Result<()> {
    let s = &db.store;
    s.upsert_environment(&env("production", 3)).await?;
    let ids: Vec<String> = (0..1000).map(|i| format!("dev-{i:05}")).collect();
    for id in &ids {
        s.upsert_target(&target(id, "production")).await?;
    }
    let plan = s
        .insert_plan(&NewPlan {
            name: "big".into(),
            version: "2".into(),
            target_environment: "production".into(),
            strategy: "rolling".into(),
            spec: json!({}),
            created_by: "alice".into(),
            ..Default::default()
        })
        .await?;
    let exec = s
        .insert_execution(&NewExecution {
            plan_id: plan.id.clone(),
            environment: "production".into(),
            spec: json!({}),
            state: json!({}),
            waves: vec![ids[..100].to_vec(), ids[100..].to_vec()],
            created_by: "alice".into(),
            ..Default::default()
        })
        .await?;
    ensure!(exec.status == "pending" && exec.target_count == 1000);
    let actions = s.list_actions(&exec.id).await?;
    ensure!(actions.len() == 1000);
    ensure!(
        actions
            .iter()
            .all(|a| a.status == "pending" && a.last_seq == 0)
    );
    ensure!(actions.iter().filter(|a| a.wave_index == 0).count() == 100);
    ensure!(actions[0].target_id == "dev-00000" && actions[999].target_id == "dev-00999");
    // The orchestrator's light read: one (target, action) pair per action, the same pairs.
    let mut pairs = s.action_ids(&exec.id).await?;
    pairs.sort();
    let mut full: Vec<(String, String)> = actions
        .iter()
        .map(|a| (a.target_id.clone(), a.id.clone()))
        .collect();
    full.sort();
    ensure!(pairs == full);
    let waves = s.list_waves(&exec.id).await?;
    ensure!(waves.len() == 2 && waves[0].target_count == 100 && waves[1].target_count == 900);
    let open = s.actions_for_target("dev-00500", true).await?;
    ensure!(open.len() == 1 && open[0].execution_id == exec.id);
    ensure!(s.get_action(&open[0].id).await?.wave_index == 1);
    // A finished action leaves the target's open list and stays in the full one.
    let mut done = step_for(&exec, &open, 1);
    done.action_updates[0].status = "succeeded".into();
    s.commit_step(&done).await?;
    ensure!(s.actions_for_target("dev-00500", true).await?.is_empty());
    let all = s.actions_for_target("dev-00500", false).await?;
    ensure!(all.len() == 1 && all[0].status == "succeeded");
    ensure!(s.actions_for_target("dev-00501", true).await?.len() == 1);
    let listed = s
        .list_executions(&ExecutionFilter {
            status: vec!["pending".into(), "running".into()],
            environment: Some("production".into()),
            ..Default::default()
        })
        .await?;
    ensure!(listed.len() == 1 && listed[0].id == exec.id);
    ensure!(
        s.list_executions(&ExecutionFilter {
            status: vec!["failed".into()],
            ..Default::default()
        })
        .await?
        .is_empty()
    );
    // A target that does not exist refuses the whole execution.
    let bad = s
        .insert_execution(&NewExecution {
            plan_id: plan.id.clone(),
            environment: "production".into(),
            spec: json!({}),
            state: json!({}),
            waves: vec![vec!["dev-00001".into(), "ghost".into()]],
            created_by: "alice".into(),
            ..Default::default()
        })
        .await;
    ensure!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    ensure!(s.list_executions(&ExecutionFilter::default()).await?.len() == 1);
    Ok(())
}

fn step_for(exec: &ExecutionRow, actions: &[ActionRow], seq: i64) -> StepBatch {
    StepBatch {
        fence: None,
        execution_events: vec![NewExecutionEvent {
            execution_id: exec.id.clone(),
            seq,
            kind: "report".into(),
            payload: json!({"n": seq}),
            at: t0(),
        }],
        action_updates: actions
            .iter()
            .map(|a| ActionUpdate {
                action_id: a.id.clone(),
                status: "dispatched".into(),
                last_seq: Some(seq),
                error: None,
                bump_attempt: true,
                at: t0(),
            })
            .collect(),
        wave_updates: vec![WaveUpdate {
            execution_id: exec.id.clone(),
            wave_index: 0,
            status: "running".into(),
            started_at: Some(t0()),
            finished_at: None,
        }],
        execution_update: Some(ExecutionUpdate {
            execution_id: exec.id.clone(),
            status: Some("running".into()),
            state: Some(json!({"phase": "wave0"})),
            started_at: Some(t0()),
            finished_at: None,
            at: t0(),
        }),
        action_events: actions
            .iter()
            .map(|a| action_event(&exec.id, &a.id, &a.target_id, seq))
            .collect(),
        outbox: vec![NewOutboxMessage {
            idempotency_key: format!("{}-started", exec.id),
            channel: "slack".into(),
            payload: json!({"text": "started"}),
            available_at: t0(),
        }],
        gate_results: vec![NewGateResult {
            execution_id: exec.id.clone(),
            wave_index: Some(0),
            gate: "firmware_validation".into(),
            kind: "builtin".into(),
            phase: "before".into(),
            passed: true,
            detail: json!({}),
            at: t0(),
        }],
    }
}

async fn commit_step_is_atomic(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 20).await?;
    let actions = s.list_actions(&exec.id).await?;

    // A batch whose last action update names a missing action: nothing of it is stored.
    let mut bad = step_for(&exec, &actions, 1);
    bad.action_updates.push(ActionUpdate {
        action_id: "act_missing".into(),
        status: "failed".into(),
        last_seq: None,
        error: Some("x".into()),
        bump_attempt: false,
        at: t0(),
    });
    ensure!(s.commit_step(&bad).await.is_err());
    ensure!(s.load_execution_events(&exec.id, 0).await?.is_empty());
    ensure!(
        s.list_actions(&exec.id)
            .await?
            .iter()
            .all(|a| a.status == "pending" && a.attempt == 0)
    );
    ensure!(s.count_action_events(&exec.id).await? == 0);
    ensure!(s.list_outbox(10).await?.is_empty());
    ensure!(s.list_gate_results(&exec.id).await?.is_empty());
    ensure!(s.get_execution(&exec.id).await?.status == "pending");
    ensure!(s.list_waves(&exec.id).await?[0].status == "pending");

    // An invalid status is refused before anything is written.
    let mut bad = step_for(&exec, &actions, 1);
    bad.action_updates[0].status = "exploded".into();
    ensure!(matches!(
        s.commit_step(&bad).await,
        Err(StoreError::Invalid(_))
    ));

    // The same batch without the bad update commits whole.
    s.commit_step(&step_for(&exec, &actions, 1)).await?;
    let after = s.list_actions(&exec.id).await?;
    ensure!(
        after
            .iter()
            .all(|a| a.status == "dispatched" && a.attempt == 1 && a.last_seq == 1)
    );
    ensure!(s.load_execution_events(&exec.id, 0).await?.len() == 1);
    ensure!(s.count_action_events(&exec.id).await? == 20);
    ensure!(s.list_outbox(10).await?.len() == 1);
    ensure!(s.list_gate_results(&exec.id).await?.len() == 1);
    let e = s.get_execution(&exec.id).await?;
    ensure!(e.status == "running" && e.state["phase"] == "wave0" && e.started_at == Some(t0()));
    ensure!(s.execution_status(&exec.id).await? == "running");
    let w = &s.list_waves(&exec.id).await?[0];
    ensure!(w.status == "running" && w.started_at == Some(t0()));

    // last_seq never goes down; several updates of one action in a batch apply in order,
    // and each new attempt among them counts.
    let a0 = &after[0];
    let b = StepBatch {
        action_updates: vec![
            ActionUpdate {
                action_id: a0.id.clone(),
                status: "downloading".into(),
                last_seq: Some(5),
                error: None,
                bump_attempt: true,
                at: t0(),
            },
            ActionUpdate {
                action_id: a0.id.clone(),
                status: "installing".into(),
                last_seq: Some(3),
                error: None,
                bump_attempt: true,
                at: t0(),
            },
        ],
        ..Default::default()
    };
    let attempt_before = a0.attempt;
    s.commit_step(&b).await?;
    let a0 = s.get_action(&a0.id).await?;
    ensure!(
        a0.status == "installing" && a0.last_seq == 5 && a0.attempt == attempt_before + 2,
        "{a0:?}"
    );
    Ok(())
}

async fn commit_step_refuses_a_writer_without_the_lease(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 3).await?;
    let actions = s.list_actions(&exec.id).await?;
    let res = lease_resource(&exec.id);
    let ttl = Duration::from_secs(30);
    ensure!(s.try_claim_lease(&res, "replica-a", t0(), ttl).await?);
    let mut step = step_for(&exec, &actions, 1);
    step.fence = Some(LeaseFence {
        resource: res.clone(),
        owner: "replica-a".into(),
    });
    s.commit_step(&step).await?;
    // replica-a stalls, its lease expires, replica-b takes over.
    let later = t0() + TimeDelta::seconds(31);
    ensure!(s.try_claim_lease(&res, "replica-b", later, ttl).await?);
    let mut stale = step_for(&exec, &actions, 2);
    stale.fence = Some(LeaseFence {
        resource: res.clone(),
        owner: "replica-a".into(),
    });
    ensure!(matches!(
        s.commit_step(&stale).await,
        Err(StoreError::Conflict(_))
    ));
    ensure!(s.load_execution_events(&exec.id, 0).await?.len() == 1);
    Ok(())
}

fn lease_resource(exec: &str) -> String {
    format!("execution:{exec}")
}

async fn batched_action_events_keep_order(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 3).await?;
    let actions = s.list_actions(&exec.id).await?;
    // 12,000 events in one call: more rows than one SQLite statement can bind.
    let mut events = Vec::new();
    for seq in 1..=4000 {
        for a in &actions {
            events.push(action_event(&exec.id, &a.id, &a.target_id, seq));
        }
    }
    s.append_action_events(&events).await?;
    s.append_action_events(&[]).await?;
    ensure!(s.count_action_events(&exec.id).await? == 12_000);
    let all = s.list_action_events(&exec.id, None).await?;
    ensure!(all.len() == 12_000);
    ensure!(all.windows(2).all(|w| w[0].id < w[1].id));
    for (got, want) in all.iter().zip(&events) {
        ensure!(got.seq == want.seq && got.target_id == want.target_id && got.at == want.at);
        ensure!(got.detail == want.detail);
    }
    let one = s
        .list_action_events(&exec.id, Some(&actions[1].target_id))
        .await?;
    ensure!(one.len() == 4000);
    ensure!(one.iter().map(|e| e.seq).eq(1..=4000));
    Ok(())
}

async fn execution_events_replay_and_refuse_repeats(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 1).await?;
    let ev = |seq: i64| NewExecutionEvent {
        execution_id: exec.id.clone(),
        seq,
        kind: if seq % 2 == 0 { "tick" } else { "report" }.into(),
        payload: json!({"seq": seq}),
        at: t0() + TimeDelta::seconds(seq),
    };
    s.commit_step(&StepBatch {
        execution_events: (1..=2500).map(ev).collect(),
        ..Default::default()
    })
    .await?;
    let all = s.load_execution_events(&exec.id, 0).await?;
    ensure!(all.len() == 2500 && all.iter().map(|e| e.seq).eq(1..=2500));
    let tail = s.load_execution_events(&exec.id, 2490).await?;
    ensure!(tail.len() == 10 && tail[0].seq == 2491 && tail[0].payload["seq"] == 2491);
    ensure!(tail[0].at == t0() + TimeDelta::seconds(2491));
    // A second writer repeating a sequence number is refused, and its batch is not applied.
    let dup = StepBatch {
        execution_events: vec![ev(2501), ev(2500)],
        ..Default::default()
    };
    ensure!(matches!(
        s.commit_step(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    ensure!(s.load_execution_events(&exec.id, 2500).await?.is_empty());
    Ok(())
}

/// Raw SQL that would change an append-only table, as a careless tool would.
async fn append_only_tables_refuse_changes(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 1).await?;
    let a = &s.list_actions(&exec.id).await?[0];
    s.append_action_events(&[action_event(&exec.id, &a.id, &a.target_id, 1)])
        .await?;
    s.append_audit(&audit_entry(1)).await?;
    s.commit_step(&StepBatch {
        execution_events: vec![NewExecutionEvent {
            execution_id: exec.id.clone(),
            seq: 1,
            kind: "start".into(),
            payload: json!({}),
            at: t0(),
        }],
        ..Default::default()
    })
    .await?;
    for sql in [
        "UPDATE action_events SET kind = 'x'",
        "DELETE FROM action_events",
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "UPDATE execution_events SET kind = 'x'",
        "DELETE FROM execution_events",
    ] {
        let err = s.execute_raw(sql).await.err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        ensure!(msg.contains("append-only"), "{sql}: {msg:?}");
    }
    if s.backend() == BackendKind::Postgres {
        ensure!(s.execute_raw("TRUNCATE audit_log").await.is_err());
    }
    ensure!(s.count_action_events(&exec.id).await? == 1);
    ensure!(s.verify_audit().await? == AuditVerification::Ok { rows: 1 });
    Ok(())
}

fn audit_entry(i: i64) -> NewAuditEntry {
    NewAuditEntry {
        actor: format!("user-{}", i % 3),
        action: "plan.approve".into(),
        subject: format!("plan_{i}"),
        source_ip: Some("127.0.0.1".into()),
        result: "success".into(),
        details: json!({"i": i, "z": [1, 2], "a": {"nested": true}}),
        at: Some(t0() + TimeDelta::microseconds(i * 1_234_567)),
    }
}

/// Lets raw SQL change the audit log, as a superuser behind the store's back could.
async fn disable_audit_protection(s: &Store) -> Result<()> {
    match s.backend() {
        BackendKind::Sqlite => {
            s.execute_raw("DROP TRIGGER audit_log_no_update").await?;
            s.execute_raw("DROP TRIGGER audit_log_no_delete").await?;
        }
        BackendKind::Postgres => {
            s.execute_raw("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
                .await?;
        }
    }
    Ok(())
}

async fn audit_chain_detects_an_update(db: &TestDb) -> Result<()> {
    let s = &db.store;
    for i in 1..=5 {
        let row = s.append_audit(&audit_entry(i)).await?;
        ensure!(row.seq == i);
    }
    ensure!(s.verify_audit().await? == AuditVerification::Ok { rows: 5 });
    let rows = s.list_audit(&AuditFilter::default()).await?;
    ensure!(rows.len() == 5 && rows[0].prev_hash == "0".repeat(64));
    ensure!(rows.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    ensure!(rows[2].details["a"]["nested"] == true);
    ensure!(rows[2].at == t0() + TimeDelta::microseconds(3 * 1_234_567));
    let by_actor = s
        .list_audit(&AuditFilter {
            actor: Some("user-1".into()),
            ..Default::default()
        })
        .await?;
    ensure!(by_actor.iter().map(|r| r.seq).eq([1, 4]));

    disable_audit_protection(s).await?;
    s.execute_raw("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        .await?;
    match s.verify_audit().await? {
        AuditVerification::Broken { seq: 3, reason } => {
            ensure!(reason.contains("changed"), "{reason}")
        }
        other => anyhow::bail!("expected row 3 broken, got {other:?}"),
    }
    Ok(())
}

async fn audit_chain_detects_a_deleted_row(db: &TestDb) -> Result<()> {
    let s = &db.store;
    for i in 1..=4 {
        s.append_audit(&audit_entry(i)).await?;
    }
    disable_audit_protection(s).await?;
    s.execute_raw("DELETE FROM audit_log WHERE seq = 2").await?;
    match s.verify_audit().await? {
        AuditVerification::Broken { seq: 2, reason } => {
            ensure!(reason.contains("missing"), "{reason}")
        }
        other => anyhow::bail!("expected row 2 missing, got {other:?}"),
    }
    Ok(())
}

async fn audit_chain_detects_removed_newest_rows(db: &TestDb) -> Result<()> {
    let s = &db.store;
    ensure!(s.audit_head().await?.is_none());
    ensure!(s.verify_audit().await? == AuditVerification::Ok { rows: 0 });
    let mut last = None;
    for i in 1..=5 {
        last = Some(s.append_audit(&audit_entry(i)).await?);
    }
    let last = last.expect("five rows");
    ensure!(s.audit_head().await? == Some((5, last.hash.clone())));
    // The head only moves forward, even for a writer that bypasses the store's API.
    ensure!(
        s.execute_raw("UPDATE audit_head SET seq = 3")
            .await
            .is_err(),
        "moving the head back must be refused"
    );
    ensure!(s.execute_raw("DELETE FROM audit_head").await.is_err());

    disable_audit_protection(s).await?;
    s.execute_raw("DELETE FROM audit_log WHERE seq >= 4")
        .await?;
    match s.verify_audit().await? {
        AuditVerification::Broken { seq: 4, reason } => {
            ensure!(reason.contains("rows 4 to 5 are missing"), "{reason}")
        }
        other => anyhow::bail!("expected rows 4-5 missing, got {other:?}"),
    }
    // A later append chains to the recorded head, so the gap stays visible.
    let next = s.append_audit(&audit_entry(6)).await?;
    ensure!(next.seq == 6 && next.prev_hash == last.hash);
    match s.verify_audit().await? {
        AuditVerification::Broken { seq: 4, reason } => {
            ensure!(reason.contains("missing"), "{reason}")
        }
        other => anyhow::bail!("expected row 4 missing, got {other:?}"),
    }
    Ok(())
}

async fn concurrent_writers_do_not_fail(db: &TestDb) -> Result<()> {
    let (_, exec) = setup_execution(&db.store, 4).await?;
    let actions = db.store.list_actions(&exec.id).await?;
    let mut tasks = Vec::new();
    for w in 0..8_i64 {
        let s = db.store.clone();
        let exec = exec.id.clone();
        let a = actions[(w % 4) as usize].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.append_audit(&audit_entry(w * 100 + i)).await?;
                let evs: Vec<_> = (0..50)
                    .map(|k| action_event(&exec, &a.id, &a.target_id, i * 50 + k))
                    .collect();
                s.append_action_events(&evs).await?;
                s.try_claim_lease("shared", &format!("w{w}"), t0(), Duration::from_secs(1))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    ensure!(db.store.verify_audit().await? == AuditVerification::Ok { rows: 200 });
    ensure!(db.store.count_action_events(&exec.id).await? == 8 * 25 * 50);
    Ok(())
}

async fn leases_two_owners_expiry_takeover(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let ttl = Duration::from_secs(10);
    ensure!(s.try_claim_lease("exec:1", "a", t0(), ttl).await?);
    ensure!(!s.try_claim_lease("exec:1", "b", t0(), ttl).await?);
    // Claiming again by the owner extends it and keeps the epoch.
    ensure!(
        s.try_claim_lease("exec:1", "a", t0() + TimeDelta::seconds(5), ttl)
            .await?
    );
    let l = s.get_lease("exec:1").await?.context("lease row")?;
    ensure!(l.owner == "a" && l.epoch == 1 && l.expires_at == t0() + TimeDelta::seconds(15));
    ensure!(
        s.renew_lease("exec:1", "a", t0() + TimeDelta::seconds(10), ttl)
            .await?
    );
    ensure!(
        !s.renew_lease("exec:1", "b", t0() + TimeDelta::seconds(10), ttl)
            .await?
    );
    // Still held at 19 s, free at 20 s.
    ensure!(
        !s.try_claim_lease("exec:1", "b", t0() + TimeDelta::seconds(19), ttl)
            .await?
    );
    ensure!(
        s.try_claim_lease("exec:1", "b", t0() + TimeDelta::seconds(20), ttl)
            .await?
    );
    let l = s.get_lease("exec:1").await?.context("lease row")?;
    ensure!(l.owner == "b" && l.epoch == 2 && l.acquired_at == t0() + TimeDelta::seconds(20));
    // The old owner can neither renew nor release it.
    ensure!(
        !s.renew_lease("exec:1", "a", t0() + TimeDelta::seconds(21), ttl)
            .await?
    );
    s.release_lease("exec:1", "a").await?;
    ensure!(s.get_lease("exec:1").await?.is_some());
    s.release_lease("exec:1", "b").await?;
    ensure!(s.get_lease("exec:1").await?.is_none());
    ensure!(
        s.try_claim_lease("exec:1", "a", t0() + TimeDelta::seconds(22), ttl)
            .await?
    );
    Ok(())
}

async fn runnable_executions_are_claimed_once(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (plan, e1) = setup_execution(s, 2).await?;
    let mut ids = vec![e1.id.clone()];
    for _ in 0..2 {
        let e = s
            .insert_execution(&NewExecution {
                plan_id: plan.id.clone(),
                environment: "production".into(),
                spec: json!({}),
                state: json!({}),
                waves: vec![vec!["dev-00000".into()]],
                created_by: "alice".into(),
                ..Default::default()
            })
            .await?;
        ids.push(e.id);
    }
    // A finished execution is never claimed.
    let done = s
        .insert_execution(&NewExecution {
            plan_id: plan.id.clone(),
            environment: "production".into(),
            status: "succeeded".into(),
            spec: json!({}),
            state: json!({}),
            waves: vec![],
            created_by: "alice".into(),
            ..Default::default()
        })
        .await?;
    let ttl = Duration::from_secs(30);
    let a = s.claim_runnable_executions("a", t0(), ttl, 2).await?;
    let b = s.claim_runnable_executions("b", t0(), ttl, 10).await?;
    ensure!(a.len() == 2 && b.len() == 1, "a {} b {}", a.len(), b.len());
    let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
    all.sort();
    ids.sort();
    ensure!(all == ids && !all.contains(&done.id));
    // Nothing left for a third replica; the owner gets its own back.
    ensure!(
        s.claim_runnable_executions("c", t0(), ttl, 10)
            .await?
            .is_empty()
    );
    ensure!(s.claim_runnable_executions("a", t0(), ttl, 10).await?.len() == 2);
    // Replica a dies: after expiry, b takes its executions.
    let later = t0() + TimeDelta::seconds(31);
    ensure!(
        s.renew_lease(&lease_resource(&b[0]), "b", later, ttl)
            .await?
    );
    let taken = s.claim_runnable_executions("b", later, ttl, 10).await?;
    ensure!(taken.len() == 3);
    let l = s
        .get_lease(&lease_resource(&a[0]))
        .await?
        .context("lease")?;
    ensure!(l.owner == "b" && l.epoch == 2);

    // Two replicas polling at the same moment never share an execution.
    let later = later + TimeDelta::seconds(60);
    let (x, y) = tokio::join!(
        s.claim_runnable_executions("x", later, ttl, 10),
        s.claim_runnable_executions("y", later, ttl, 10)
    );
    let (x, y) = (x?, y?);
    ensure!(x.len() + y.len() == 3, "x {} y {}", x.len(), y.len());
    ensure!(x.iter().all(|e| !y.contains(e)));
    Ok(())
}

async fn outbox_claim_complete_fail_retry(db: &TestDb) -> Result<()> {
    let s = &db.store;
    for key in ["k1", "k2", "k3", "k1"] {
        s.enqueue_outbox(&NewOutboxMessage {
            idempotency_key: key.into(),
            channel: "webhook".into(),
            payload: json!({"key": key}),
            available_at: t0(),
        })
        .await?;
    }
    ensure!(
        s.list_outbox(10).await?.len() == 3,
        "the repeated key is stored once"
    );
    let lease = Duration::from_secs(60);
    ensure!(
        s.claim_outbox("n1", 10, t0() - TimeDelta::seconds(1), lease)
            .await?
            .is_empty(),
        "nothing is due before available_at"
    );
    let first = s.claim_outbox("n1", 2, t0(), lease).await?;
    let second = s.claim_outbox("n2", 10, t0(), lease).await?;
    ensure!(first.len() == 2 && second.len() == 1);
    ensure!(first[0].payload["key"] == "k1" && second[0].payload["key"] == "k3");
    ensure!(first[0].status == "claimed" && first[0].claimed_by.as_deref() == Some("n1"));

    s.complete_outbox(first[0].id).await?;
    let retry_at = t0() + TimeDelta::seconds(30);
    s.fail_outbox(first[1].id, "http 503", retry_at).await?;
    // n2 dies holding k3: its claim expires after the lease.
    ensure!(
        s.claim_outbox("n3", 10, t0() + TimeDelta::seconds(10), lease)
            .await?
            .is_empty()
    );
    let again = s.claim_outbox("n3", 10, retry_at, lease).await?;
    ensure!(again.len() == 1 && again[0].id == first[1].id);
    ensure!(again[0].attempts == 1 && again[0].last_error.as_deref() == Some("http 503"));
    let expired = s
        .claim_outbox("n3", 10, t0() + TimeDelta::seconds(61), lease)
        .await?;
    ensure!(expired.len() == 1 && expired[0].id == second[0].id);
    let done = s.get_outbox(first[0].id).await?;
    ensure!(done.status == "done" && done.completed_at.is_some());
    ensure!(
        s.claim_outbox("n4", 10, t0() + TimeDelta::days(1), lease)
            .await?
            .iter()
            .all(|m| m.id != first[0].id),
        "a delivered message is never claimed again"
    );
    ensure!(matches!(
        s.complete_outbox(9999).await,
        Err(StoreError::NotFound)
    ));
    ensure!(matches!(
        s.fail_outbox(first[0].id, "late", retry_at).await,
        Err(StoreError::NotFound)
    ));
    Ok(())
}

async fn api_keys_by_prefix_and_revoke(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let k = s
        .insert_api_key(&NewApiKey {
            prefix: "cut_ab12".into(),
            hash: "hmac-1".into(),
            name: "ci".into(),
            role: "operator".into(),
            created_by: Some("admin".into()),
            ..Default::default()
        })
        .await?;
    ensure!(k.id.starts_with("key_") && k.revoked_at.is_none());
    let found = s.find_api_key("cut_ab12").await?.context("found")?;
    ensure!(found.hash == "hmac-1" && found.role == "operator");
    ensure!(s.find_api_key("cut_zz99").await?.is_none());
    let dup = s
        .insert_api_key(&NewApiKey {
            prefix: "cut_ab12".into(),
            hash: "hmac-2".into(),
            name: "other".into(),
            role: "viewer".into(),
            ..Default::default()
        })
        .await;
    ensure!(matches!(dup, Err(StoreError::Conflict(_))));
    s.revoke_api_key(&k.id, t0()).await?;
    s.revoke_api_key(&k.id, t0() + TimeDelta::hours(1)).await?;
    let revoked = s.find_api_key("cut_ab12").await?.context("still there")?;
    ensure!(
        revoked.revoked_at == Some(t0()),
        "the first revocation time is kept"
    );
    ensure!(matches!(
        s.revoke_api_key("key_missing", t0()).await,
        Err(StoreError::NotFound)
    ));
    ensure!(s.list_api_keys().await?.len() == 1);
    ensure!(s.get_api_key(&k.id).await?.prefix == "cut_ab12");
    Ok(())
}

async fn users_upsert_keeps_password(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let u = s
        .upsert_user(&NewUser {
            username: "alice".into(),
            role: "approver".into(),
            password_hash: Some("$argon2id$...".into()),
            ..Default::default()
        })
        .await?;
    let u2 = s
        .upsert_user(&NewUser {
            username: "alice".into(),
            role: "admin".into(),
            email: Some("alice@example.com".into()),
            ..Default::default()
        })
        .await?;
    ensure!(u2.id == u.id && u2.role == "admin");
    ensure!(u2.password_hash.as_deref() == Some("$argon2id$..."));
    ensure!(s.get_user("alice").await?.email.as_deref() == Some("alice@example.com"));
    ensure!(matches!(s.get_user("bob").await, Err(StoreError::NotFound)));
    Ok(())
}

async fn schedules_fire_once(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (plan, _) = setup_execution(s, 1).await?;
    let early = s
        .insert_schedule(&NewSchedule {
            plan_id: plan.id.clone(),
            run_at: t0() + TimeDelta::hours(1),
            window_end: Some(t0() + TimeDelta::hours(3)),
            created_by: "alice".into(),
        })
        .await?;
    s.insert_schedule(&NewSchedule {
        plan_id: plan.id.clone(),
        run_at: t0() + TimeDelta::hours(5),
        window_end: None,
        created_by: "alice".into(),
    })
    .await?;
    ensure!(s.due_schedules(t0()).await?.is_empty());
    let due = s.due_schedules(t0() + TimeDelta::hours(2)).await?;
    ensure!(due.len() == 1 && due[0].id == early.id);
    ensure!(
        s.mark_schedule(&early.id, "fired", t0() + TimeDelta::hours(2))
            .await?
    );
    ensure!(
        !s.mark_schedule(&early.id, "fired", t0() + TimeDelta::hours(2))
            .await?,
        "a schedule fires once"
    );
    ensure!(
        s.due_schedules(t0() + TimeDelta::hours(2))
            .await?
            .is_empty()
    );
    ensure!(s.list_schedules(Some(&plan.id)).await?.len() == 2);
    let bad = s
        .insert_schedule(&NewSchedule {
            plan_id: plan.id.clone(),
            run_at: t0(),
            window_end: Some(t0() - TimeDelta::hours(1)),
            created_by: "alice".into(),
        })
        .await;
    ensure!(matches!(bad, Err(StoreError::Invalid(_))));
    Ok(())
}

async fn gate_results_round_trip(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 1).await?;
    for (i, passed) in [true, false].into_iter().enumerate() {
        s.insert_gate_result(&NewGateResult {
            execution_id: exec.id.clone(),
            wave_index: Some(i as i64),
            gate: "health_check".into(),
            kind: "http".into(),
            phase: "after".into(),
            passed,
            detail: json!({"status": if passed { 200 } else { 503 }}),
            at: t0(),
        })
        .await?;
    }
    let got = s.list_gate_results(&exec.id).await?;
    ensure!(got.len() == 2 && got[0].passed && !got[1].passed);
    ensure!(got[1].detail["status"] == 503 && got[1].wave_index == Some(1));
    Ok(())
}

/// The PostgreSQL test kit removes its schema when dropped, also after a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_test_schema_is_dropped() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let schema = db.schema().expect("schema").to_string();
    let admin = cutover_store::testing::postgres_url_or_skip().expect("url");
    let panicked = tokio::spawn(async move {
        let _db = db;
        panic!("a failing test");
    })
    .await;
    assert!(panicked.is_err());
    let check = Store::connect_with(
        &admin,
        &ConnectOptions {
            migrate: false,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(&schema)
    .fetch_one(check.pg_pool().expect("pg"))
    .await
    .expect("query");
    assert_eq!(n, 0, "schema {schema} should be gone");
}

/// A URL with an unknown scheme is refused with a message naming it.
#[tokio::test]
async fn unknown_scheme_is_refused() {
    let err = Store::connect("mysql://localhost/x").await.unwrap_err();
    assert!(err.to_string().contains("unknown scheme"), "{err}");
}

/// An in-memory database works for quick tools: migrations, a write, a read.
#[tokio::test]
async fn in_memory_sqlite_works() {
    let s = Store::connect("sqlite::memory:").await.expect("connect");
    s.upsert_environment(&env("dev", 0)).await.expect("write");
    assert_eq!(s.list_environments().await.expect("read").len(), 1);
}

async fn outbox_concurrent_claims_never_overlap(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let messages: Vec<NewOutboxMessage> = (0..200)
        .map(|i| NewOutboxMessage {
            idempotency_key: format!("m{i}"),
            channel: "email".into(),
            payload: json!({"i": i}),
            available_at: t0(),
        })
        .collect();
    s.commit_step(&StepBatch {
        outbox: messages,
        ..Default::default()
    })
    .await?;
    let mut tasks = Vec::new();
    for n in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim_outbox(&format!("n{n}"), 7, t0(), Duration::from_secs(60))
                    .await?;
                if got.is_empty() {
                    break;
                }
                for m in got {
                    s.complete_outbox(m.id).await?;
                    mine.push(m.id);
                }
            }
            anyhow::Ok(mine)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let n = all.len();
    all.dedup();
    ensure!(
        n == 200 && all.len() == 200,
        "claimed {n}, distinct {}",
        all.len()
    );
    Ok(())
}

story!(outbox_concurrent_claims_never_overlap);

/// SQLite runs with WAL, foreign keys, a busy timeout and synchronous=NORMAL.
#[tokio::test]
async fn sqlite_pragmas_are_set() {
    let db = TestDb::sqlite().await;
    let pool = db.store.sqlite_pool().expect("sqlite");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .expect("foreign_keys");
    assert_eq!(fk, 1);
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .expect("synchronous");
    assert_eq!(sync, 1, "NORMAL");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .expect("busy_timeout");
    assert!(busy >= 1000, "busy_timeout {busy}");
}

/// Two stores on one SQLite file (as two processes would be) write at once without
/// SQLITE_BUSY, and the audit chain stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlite_stores_on_one_file_write_at_once() {
    let db = TestDb::sqlite().await;
    let other = Store::connect(db.url()).await.expect("second store");
    let mut tasks = Vec::new();
    for (k, s) in [db.store.clone(), other.clone()].into_iter().enumerate() {
        for w in 0..3_i64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..30 {
                    s.append_audit(&audit_entry(k as i64 * 1000 + w * 100 + i))
                        .await
                        .expect("append");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        db.store.verify_audit().await.expect("verify"),
        AuditVerification::Ok { rows: 180 }
    );
    other.close().await;
}

async fn secrets_keep_ciphertext_and_key_id(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let sealed = vec![0_u8, 1, 2, 255, 254, 0, 7];
    s.put_secret(&NewSecret {
        name: "smtp.password".into(),
        key_id: "k1".into(),
        ciphertext: sealed.clone(),
    })
    .await?;
    s.put_secret(&NewSecret {
        name: "slack.token".into(),
        key_id: "k1".into(),
        ciphertext: vec![9; 40],
    })
    .await?;
    ensure!(s.get_secret("smtp.password").await?.ciphertext == sealed);
    // Rotation: re-seal the rows of k1 with k2.
    for old in s.list_secrets(Some("k1")).await? {
        s.put_secret(&NewSecret {
            name: old.name,
            key_id: "k2".into(),
            ciphertext: old.ciphertext.iter().rev().copied().collect(),
        })
        .await?;
    }
    ensure!(s.list_secrets(Some("k1")).await?.is_empty());
    ensure!(s.list_secrets(None).await?.len() == 2);
    let rotated = s.get_secret("smtp.password").await?;
    ensure!(rotated.key_id == "k2" && rotated.ciphertext[0] == 7);
    s.delete_secret("slack.token").await?;
    ensure!(matches!(
        s.get_secret("slack.token").await,
        Err(StoreError::NotFound)
    ));
    ensure!(matches!(
        s.delete_secret("slack.token").await,
        Err(StoreError::NotFound)
    ));
    Ok(())
}

async fn action_events_page_in_order(db: &TestDb) -> Result<()> {
    let s = &db.store;
    let (_, exec) = setup_execution(s, 2).await?;
    let actions = s.list_actions(&exec.id).await?;
    let events: Vec<_> = (1..=250)
        .map(|i| {
            let a = &actions[(i % 2) as usize];
            action_event(&exec.id, &a.id, &a.target_id, i)
        })
        .collect();
    s.append_action_events(&events).await?;
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = s.list_action_events_after(&exec.id, after, 100).await?;
        if page.is_empty() {
            break;
        }
        ensure!(page.len() <= 100);
        after = page.last().map(|e| e.id).unwrap_or(after);
        seen.extend(page.into_iter().map(|e| e.seq));
    }
    ensure!(seen.iter().copied().eq(1..=250), "{seen:?}");
    Ok(())
}

story!(
    secrets_keep_ciphertext_and_key_id,
    action_events_page_in_order
);

/// SQLite's write-ahead log is checkpointed in larger steps than SQLite's default (whose
/// log never passes about 5 MiB), but it stays bounded: 96 MiB written in 1 MiB commits
/// leaves a log of at most the 64 MiB checkpoint size (and one commit), with every row
/// readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_stays_bounded() -> Result<()> {
    let db = TestDb::sqlite().await;
    let store = db.store();
    let log = format!("{}-wal", db.url().trim_start_matches("sqlite://"));
    store.execute_raw("CREATE TABLE blobs (b BLOB)").await?;
    let mut largest = 0;
    for _ in 0..96 {
        store
            .execute_raw("INSERT INTO blobs SELECT randomblob(1048576)")
            .await?;
        largest = largest.max(std::fs::metadata(&log).with_context(|| log.clone())?.len());
    }
    ensure!(
        largest > 16 * 1024 * 1024,
        "the write-ahead log {log} never passed {largest} bytes: checkpointed as often as SQLite's default"
    );
    let bound = SQLITE_LOG_SIZE_LIMIT_BYTES + 2 * 1024 * 1024;
    ensure!(
        largest <= bound,
        "the write-ahead log {log} reached {largest} bytes, more than {bound}"
    );
    let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM blobs")
        .fetch_one(store.sqlite_pool().context("sqlite")?)
        .await?;
    ensure!(rows.0 == 96, "{} rows", rows.0);
    Ok(())
}
