//! Rate limits, the IP allow-list with trusted proxies, and request size limits, over real
//! HTTP.

mod api_support;

use api_support::*;
use cutover_server::auth::Role;
use cutover_server::settings::RateLimitSettings;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after() {
    let server = spawn_with(|s| {
        s.security.rate_limit = Some(RateLimitSettings {
            max_requests: 5,
            window: Duration::from_secs(60),
        });
    })
    .await;
    for i in 0..5 {
        let r = server
            .get(Role::Viewer, "/api/environments")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    let r = server
        .get(Role::Viewer, "/api/environments")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 429);
    // The address is over its budget whatever key it uses; /healthz still answers.
    let r = server
        .get(Role::Admin, "/api/environments")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn rate_limit_counts_per_key_behind_a_proxy() {
    // Behind a trusted proxy each client address has its own budget, and each key too.
    let server = spawn_with(|s| {
        s.security.rate_limit = Some(RateLimitSettings {
            max_requests: 3,
            window: Duration::from_secs(60),
        });
        s.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let from = |ip: &str, role: Role| {
        server
            .get(role, "/api/environments")
            .header("X-Forwarded-For", ip)
            .send()
    };
    // One key from three addresses: the key's budget of 3 runs out.
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(from(ip, Role::Viewer).await.unwrap().status(), 200);
    }
    assert_eq!(from("10.0.0.4", Role::Viewer).await.unwrap().status(), 429);
    // Another key from a fresh address is fine.
    assert_eq!(
        from("10.0.0.5", Role::Operator).await.unwrap().status(),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn allow_list_with_trusted_proxies_only() {
    // Loopback is not in the list: direct calls are refused.
    let server = spawn_with(|s| {
        s.security.ip_allowlist = vec![
            "192.168.1.0/24".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
    })
    .await;
    let r = server
        .get(Role::Admin, "/api/environments")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("127.0.0.1"), "{p}");
    // X-Forwarded-For from an untrusted peer is ignored.
    let r = server
        .get(Role::Admin, "/api/environments")
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    server.stop().await;

    // With loopback as a trusted proxy, the forwarded address decides.
    let server = spawn_with(|s| {
        s.security.ip_allowlist = vec![
            "192.168.1.0/24".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        s.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for (xff, expected) in [
        ("10.1.2.3", 200),
        ("192.168.1.77", 200),
        ("::ffff:10.9.9.9", 200),
        ("203.0.113.5", 403),
        // A client cannot smuggle an allowed address to the left of its own.
        ("10.1.2.3, 203.0.113.5", 403),
    ] {
        let r = server
            .get(Role::Viewer, "/api/environments")
            .header("X-Forwarded-For", xff)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "{xff}");
    }
    // The audit log records the forwarded address.
    let r = server
        .post(Role::Admin, "/api/keys")
        .header("X-Forwarded-For", "10.4.4.4")
        .json(&serde_json::json!({"name": "x", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let audit = server
        .store()
        .list_audit(&Default::default())
        .await
        .unwrap();
    let last = audit.last().unwrap();
    assert_eq!(last.action, "key.create");
    assert_eq!(last.source_ip.as_deref(), Some("10.4.4.4"));
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = spawn_with(|s| s.security.max_body_bytes = 2048).await;
    let big = format!(
        r#"{{"name": "{}", "target_environment": "staging", "strategy": "rolling"}}"#,
        "x".repeat(4096)
    );
    let r = server
        .post(Role::Operator, "/api/deployment-plans")
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Not JSON at all.
    let r = server
        .post(Role::Operator, "/api/deployment-plans")
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("not valid JSON"),
        "{p}"
    );
    server.stop().await;
}
