//! The seed's curl examples and its deployment flow, over real HTTP: environments, plan
//! creation with its rules, approvals (the creator never counts), execution, status,
//! operator commands, progress events, health checks, metrics and reports.

mod api_support;

use api_support::*;
use cutover_server::auth::Role;
use serde_json::{Value, json};

#[tokio::test]
async fn seed_curl_examples_work_as_written() {
    seed_flow(spawn().await).await;
}

#[tokio::test]
async fn seed_curl_examples_on_postgres() {
    match spawn_postgres().await {
        Some(server) => seed_flow(server).await,
        None => eprintln!("skipping: CUTOVER_TEST_DATABASE_URL is not set"),
    }
}

async fn seed_flow(server: TestServer) {
    seed_fleet(server.store(), 20).await;

    // curl -H "X-API-Key: your-api-key" http://localhost:5001/api/environments
    let r = server
        .get(Role::Viewer, "/api/environments")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let envs: Value = r.json().await.unwrap();
    let names: Vec<&str> = envs["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["development", "testing", "staging", "production"]);

    // curl .../api/environments/production
    let r = server
        .get(Role::Viewer, "/api/environments/production")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prod: Value = r.json().await.unwrap();
    assert_eq!(prod["approval_required"], true);
    assert_eq!(prod["target_count"], 20);
    assert_eq!(prod["versions"]["1.1.0"], 20);
    let r = server
        .get(Role::Viewer, "/api/environments/nowhere")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // The seed's plan is refused until 1.2.0 succeeded in staging, naming the rule.
    let r = server
        .post(Role::Operator, "/api/deployment-plans")
        .json(&seed_plan())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["rule"], "promotion_from_staging", "{problem}");

    succeed_in_staging(&server).await;

    // curl -X POST .../api/deployment-plans -d @deployment-plan.json
    let r = server
        .post(Role::Operator, "/api/deployment-plans")
        .header("Content-Type", "application/json")
        .body(seed_plan().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let plan: Value = r.json().await.unwrap();
    let plan_id = plan["plan_id"].as_str().unwrap().to_string();
    assert_eq!(plan["status"], "pending_approval");
    assert_eq!(plan["required_approvals"], 1);

    // Executing before approval is a conflict.
    let r = server
        .post(Role::Operator, "/api/deployments/execute")
        .json(&json!({"plan_id": plan_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // The approver role is needed, and the creator never counts.
    let r = server
        .post(
            Role::Operator,
            &format!("/api/deployment-plans/{plan_id}/approve"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = server
        .post(
            Role::Approver,
            &format!("/api/deployment-plans/{plan_id}/approve"),
        )
        .json(&json!({"comment": "staging looked good"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let approval: Value = r.json().await.unwrap();
    assert_eq!(approval["approved"], true);
    assert_eq!(approval["plan"]["status"], "approved");
    // The same approver twice is a conflict.
    let r = server
        .post(
            Role::Approver,
            &format!("/api/deployment-plans/{plan_id}/approve"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // curl -X POST .../api/deployments/execute -d '{"plan_id": "PLAN_ID"}'
    let r = server
        .post(Role::Operator, "/api/deployments/execute")
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"plan_id": "{plan_id}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let exec: Value = r.json().await.unwrap();
    let exec_id = exec["execution_id"].as_str().unwrap().to_string();
    assert_eq!(exec["status"], "pending");
    assert_eq!(exec["target_count"], 20);
    // rolling with the default batch of 10 %: 10 waves of 2.
    assert_eq!(exec["waves"].as_array().unwrap().len(), 10);
    assert_eq!(exec["progress"]["pending"], 20);

    // Executing twice, or approving an executed plan, is a conflict.
    let r = server
        .post(Role::Operator, "/api/deployments/execute")
        .json(&json!({"plan_id": plan_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = server
        .post(
            Role::Admin,
            &format!("/api/deployment-plans/{plan_id}/approve"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // GET /api/deployment-plans, /{id}, /api/deployments, /{id}
    let plans: Value = server
        .get(Role::Viewer, "/api/deployment-plans")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plans["plans"].as_array().unwrap().len(), 2);
    let shown: Value = server
        .get(Role::Viewer, &format!("/api/deployment-plans/{plan_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "executing");
    assert_eq!(shown["approvals"].as_array().unwrap().len(), 1);
    let list: Value = server
        .get(Role::Viewer, "/api/deployments?status=pending")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["deployments"][0]["execution_id"], exec_id.as_str());
    let status: Value = server
        .get(Role::Viewer, &format!("/api/deployments/{exec_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["version"], "1.2.0");

    // Operator commands are appended to the execution's event log for the orchestrator.
    for command in ["pause", "cancel"] {
        let r = server
            .post(
                Role::Operator,
                &format!("/api/deployments/{exec_id}/{command}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{command}");
    }
    let r = server
        .post(
            Role::Operator,
            &format!("/api/deployments/{exec_id}/resume"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "resume needs a paused execution");
    let events = server
        .store()
        .load_execution_events(&exec_id, 0)
        .await
        .unwrap();
    let commands: Vec<&Value> = events.iter().map(|e| &e.payload["command"]).collect();
    assert_eq!(commands, [&json!("pause"), &json!("cancel")]);
    assert_eq!(events[0].payload["type"], "operator");

    // Health checks, metrics, reports.
    let health: Value = server
        .get(Role::Viewer, "/api/health-checks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"][0]["name"], "database");
    assert_eq!(health["status"], "healthy");
    let metrics: Value = server
        .get(Role::Viewer, "/api/metrics")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metrics["deployments_total"], 2);
    assert_eq!(metrics["deployments_by_status"]["succeeded"], 1);
    assert_eq!(metrics["targets_total"], 40);
    let report: Value = server
        .get(Role::Viewer, &format!("/api/reports/deployment/{exec_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["plan"]["id"], plan_id.as_str());
    assert_eq!(report["timeline"].as_array().unwrap().len(), 2);
    let summary: Value = server
        .get(Role::Viewer, "/api/reports/summary?days=30")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["days"], 30);
    assert_eq!(summary["deployments_total"], 2);
    assert_eq!(summary["by_environment"]["staging"], 1);
    let r = server
        .get(Role::Viewer, "/api/reports/summary?days=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Prometheus text.
    let text = server
        .get(Role::Viewer, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("cutover_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/deployments/{id}\""), "{text}");

    // Every change was audited, with who and from where.
    let audit: Value = server
        .get(Role::Admin, "/api/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for wanted in [
        "plan.create",
        "plan.approve",
        "deployment.execute",
        "deployment.pause",
        "deployment.cancel",
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
    assert!(
        entries.iter().any(|e| e["result"] == "denied"),
        "the refused approval is audited"
    );
    assert!(entries.iter().all(|e| e["source_ip"] == "127.0.0.1"));
    server.stop().await;
}

#[tokio::test]
async fn plan_rules_name_what_failed() {
    let server = spawn().await;
    seed_fleet(server.store(), 3).await;
    let post = |body: Value| {
        server
            .post(Role::Operator, "/api/deployment-plans")
            .json(&body)
            .send()
    };
    let cases = [
        (
            json!({"name": "x", "firmware_version": "9.9.9", "target_environment": "staging", "strategy": "immediate"}),
            "artifact_exists",
        ),
        (
            json!({"name": "x", "firmware_version": "1.2.0", "target_environment": "moon", "strategy": "immediate"}),
            "target_environment_exists",
        ),
        (
            json!({"name": "x", "firmware_version": "1.2.0", "source_environment": "production", "target_environment": "staging", "strategy": "immediate"}),
            "promotion_order",
        ),
        (
            json!({"name": "x", "firmware_version": "1.2.0", "target_environment": "staging", "strategy": "canary", "canary_steps": [50, 20, 100]}),
            "strategy_parameters",
        ),
        (
            json!({"name": "x", "firmware_version": "1.2.0", "target_environment": "staging", "strategy": "immediate", "hardware_model": "board-b"}),
            "",
        ),
    ];
    for (body, rule) in cases {
        let r = post(body.clone()).await.unwrap();
        if rule.is_empty() {
            // A selector matching nothing is allowed at plan time (targets may register later).
            assert_eq!(r.status(), 201, "{body}");
            continue;
        }
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["rule"], rule, "{p}");
        assert!(p["detail"].as_str().unwrap().contains(rule), "{p}");
    }
    // Hardware that does not fit.
    server
        .store()
        .upsert_target(&cutover_store::NewTarget {
            id: "staging-odd".into(),
            name: "odd".into(),
            environment: "staging".into(),
            kind: "device".into(),
            hardware_model: Some("board-z".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let p: Value = post(json!({"name": "x", "firmware_version": "1.2.0", "target_environment": "staging", "strategy": "immediate"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["rule"], "artifact_fits_hardware", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("staging-odd"), "{p}");

    // Bad JSON names the field.
    let r = post(json!({"name": "x", "target_environment": "staging", "strategy": "sideways"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "strategy", "{p}");
    let r = post(json!({"firmware_version": "1.2.0", "target_environment": "staging", "strategy": "rolling"})).await.unwrap();
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "name", "{p}");
    let r = post(json!({"name": "x", "target_environment": "staging", "strategy": "rolling", "rollout_percentage": 140})).await.unwrap();
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "rollout_percentage", "{p}");
    let r = post(json!({"name": "x", "target_environment": "staging", "strategy": "rolling", "canary_percentag": 5})).await.unwrap();
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("canary_percentag"),
        "{p}"
    );
    server.stop().await;
}

#[tokio::test]
async fn two_approvers_when_the_environment_asks_for_two() {
    let server = spawn_with(|s| {
        let prod = s
            .environments
            .iter_mut()
            .find(|e| e.name == "production")
            .unwrap();
        prod.required_approvals = 2;
    })
    .await;
    seed_fleet(server.store(), 2).await;
    succeed_in_staging(&server).await;
    // An admin creates the plan: the admin's own approval never counts.
    let plan: Value = server
        .post(Role::Admin, "/api/deployment-plans")
        .json(&seed_plan())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = plan["id"].as_str().unwrap();
    let r = server
        .post(Role::Admin, &format!("/api/deployment-plans/{id}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let a: Value = server
        .post(
            Role::Approver,
            &format!("/api/deployment-plans/{id}/approve"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["approvals_counted"], 1);
    assert_eq!(a["approved"], false);
    // A second approver: a JWT for another person.
    let token = api_support_jwt("carol", "approver");
    let r = server
        .http
        .post(server.url(&format!("/api/deployment-plans/{id}/approve")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["approvals_counted"], 2);
    assert_eq!(a["approved"], true);
    server.stop().await;
}

fn api_support_jwt(sub: &str, role: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "role": role, "exp": now + 600, "nbf": now - 5}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn progress_streams_as_server_sent_events() {
    let server = spawn().await;
    seed_fleet(server.store(), 4).await;
    succeed_in_staging(&server).await;
    let list: Value = server
        .get(Role::Viewer, "/api/deployments")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["deployments"][0]["id"].as_str().unwrap().to_string();
    // A finished execution: one progress event, then end.
    let text = server
        .get(Role::Viewer, &format!("/api/deployments/{id}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("\"status\":\"succeeded\""), "{text}");
    assert!(
        text.trim_end()
            .ends_with(&format!("event: end\ndata: {id}")),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn audit_verify_detects_tampering() {
    // A changed row, then a deleted one: each breaks the chain at that row. The tamperer
    // first drops the store's append-only triggers, as someone with the database file could.
    for (trigger, tamper, seq) in [
        (
            "audit_log_no_update",
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 1",
            1,
        ),
        (
            "audit_log_no_delete",
            "DELETE FROM audit_log WHERE seq = 2",
            2,
        ),
    ] {
        let server = spawn().await;
        seed_fleet(server.store(), 2).await;
        succeed_in_staging(&server).await;
        let r = server
            .post(Role::Admin, "/api/keys")
            .json(&json!({"name": "x", "role": "viewer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = server
            .get(Role::Admin, "/api/audit/verify")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "ok", "{v}");
        assert_eq!(v["rows"], 3, "{v}");
        server
            .store()
            .execute_raw(&format!("DROP TRIGGER {trigger}"))
            .await
            .unwrap();
        server.store().execute_raw(tamper).await.unwrap();
        let v: Value = server
            .get(Role::Admin, "/api/audit/verify")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "broken", "{tamper}: {v}");
        assert_eq!(v["seq"], seq, "{tamper}: {v}");
        server.stop().await;
    }
}
