//! Authentication and authorisation over real HTTP: every route refuses a caller without
//! credentials, keys and tokens are checked in full, and the role matrix holds.

mod api_support;

use api_support::*;
use cutover_server::auth::Role;
use serde_json::{Value, json};

/// Every route, with the least role that may call it.
const ROUTES: &[(&str, &str, Role)] = &[
    ("GET", "/api/environments", Role::Viewer),
    ("GET", "/api/environments/production", Role::Viewer),
    ("POST", "/api/deployment-plans", Role::Operator),
    ("GET", "/api/deployment-plans", Role::Viewer),
    ("GET", "/api/deployment-plans/plan_x", Role::Viewer),
    (
        "POST",
        "/api/deployment-plans/plan_x/approve",
        Role::Approver,
    ),
    ("POST", "/api/deployments/execute", Role::Operator),
    ("GET", "/api/deployments", Role::Viewer),
    ("GET", "/api/deployments/exec_x", Role::Viewer),
    ("GET", "/api/deployments/exec_x/events", Role::Viewer),
    ("POST", "/api/deployments/exec_x/cancel", Role::Operator),
    ("POST", "/api/deployments/exec_x/rollback", Role::Operator),
    ("POST", "/api/deployments/exec_x/pause", Role::Operator),
    ("POST", "/api/deployments/exec_x/resume", Role::Operator),
    ("POST", "/api/deployments/exec_x/promote", Role::Operator),
    ("GET", "/api/health-checks", Role::Viewer),
    ("GET", "/api/metrics", Role::Viewer),
    ("GET", "/api/reports/deployment/exec_x", Role::Viewer),
    ("GET", "/api/reports/summary?days=30", Role::Viewer),
    ("GET", "/api/targets", Role::Viewer),
    ("POST", "/api/keys", Role::Admin),
    ("GET", "/api/keys", Role::Admin),
    ("POST", "/api/keys/key_x/revoke", Role::Admin),
    ("GET", "/api/audit", Role::Admin),
    ("GET", "/api/audit/verify", Role::Admin),
    ("GET", "/metrics", Role::Viewer),
];

fn request(server: &TestServer, method: &str, path: &str) -> reqwest::RequestBuilder {
    let url = server.url(path);
    match method {
        "GET" => server.http.get(url),
        _ => server.http.post(url).json(&json!({})),
    }
}

#[tokio::test]
async fn every_route_without_credentials_is_401() {
    let server = spawn().await;
    for (method, path, _) in ROUTES {
        let r = request(&server, method, path).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        assert!(r.headers().contains_key("www-authenticate"));
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], 401);
    }
    // An unknown path is not a way around it.
    let r = server
        .http
        .get(server.url("/api/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The public ones.
    for path in ["/healthz", "/api/openapi.json", "/"] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn role_matrix() {
    let server = spawn().await;
    for (method, path, least) in ROUTES {
        for role in Role::ALL {
            let r = request(&server, method, path)
                .header("X-API-Key", server.key(role))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            if role < *least {
                assert_eq!(status, 403, "{role} {method} {path}");
                let p: Value = r.json().await.unwrap();
                assert!(
                    p["detail"].as_str().unwrap().contains(least.as_str()),
                    "{p}"
                );
            } else {
                assert!(
                    status != 401 && status != 403,
                    "{role} {method} {path}: {status} {}",
                    r.text().await.unwrap()
                );
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn keys_are_checked_and_revocable() {
    let server = spawn().await;
    // Malformed, unknown, and a right prefix with a wrong secret.
    let admin = server.key(Role::Admin).to_string();
    let forged = format!("{}{}", &admin[..admin.len() - 4], "0000");
    for key in [
        "nonsense",
        "cut_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
        forged.as_str(),
    ] {
        let r = server
            .http
            .get(server.url("/api/environments"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{key}");
    }
    // An admin creates a key over the API; it works; revoking it stops it at once.
    let r = server
        .post(Role::Admin, "/api/keys")
        .json(&json!({"name": "ci", "role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("cut_"));
    let r = server
        .http
        .get(server.url("/api/deployments"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = server
        .get(Role::Admin, "/api/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains("\"ci\""));
    assert!(
        !listed.to_string().contains(&key),
        "the key is never shown again"
    );
    let id = created["id"].as_str().unwrap();
    let r = server
        .post(Role::Admin, &format!("/api/keys/{id}/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .http
        .get(server.url("/api/deployments"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    // Bad role names are a 400 naming the field.
    let r = server
        .post(Role::Admin, "/api/keys")
        .json(&json!({"name": "x", "role": "root"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "role");
    server.stop().await;
}

fn hs256(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// PKCS#8 v1 DER of an Ed25519 private key (RFC 8410), as jsonwebtoken signs with.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(seed);
    der
}

#[tokio::test]
async fn bearer_tokens_hs256_and_eddsa_with_every_claim_checked() {
    let seed = [7u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let server = spawn_with(|s| {
        s.security.jwt.ed25519_public_keys = vec![public];
        s.security.jwt.issuer = Some("https://id.example".into());
        s.security.jwt.audience = Some("cutover".into());
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let good = json!({"sub": "alice", "role": "operator", "iss": "https://id.example", "aud": "cutover", "exp": now + 300, "nbf": now - 10});
    let call = |token: String| {
        server
            .http
            .get(server.url("/api/deployments"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        call(hs256(good.clone(), JWT_SECRET))
            .await
            .unwrap()
            .status(),
        200
    );
    let eddsa = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &good,
        &jsonwebtoken::EncodingKey::from_ed_der(&ed25519_pkcs8(&seed)),
    )
    .unwrap();
    assert_eq!(call(eddsa).await.unwrap().status(), 200);
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &good,
        &jsonwebtoken::EncodingKey::from_ed_der(&ed25519_pkcs8(&[9u8; 32])),
    )
    .unwrap();
    assert_eq!(call(other_key).await.unwrap().status(), 401);

    let mut cases = Vec::new();
    let mut c = good.clone();
    c["exp"] = json!(now - 120);
    cases.push((c, "exp"));
    let mut c = good.clone();
    c["nbf"] = json!(now + 600);
    cases.push((c, "nbf"));
    let mut c = good.clone();
    c["iss"] = json!("https://evil.example");
    cases.push((c, "iss"));
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    cases.push((c, "aud"));
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("exp");
    cases.push((c, "exp"));
    for (claims, what) in cases {
        let r = call(hs256(claims.clone(), JWT_SECRET)).await.unwrap();
        assert_eq!(r.status(), 401, "{claims}");
        let p: Value = r.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(what), "{what}: {p}");
    }
    // The wrong secret.
    assert_eq!(
        call(hs256(good.clone(), b"another-secret-another-secret-xx"))
            .await
            .unwrap()
            .status(),
        401
    );
    // A token's role is honoured.
    let mut viewer = good.clone();
    viewer["role"] = json!("viewer");
    let r = server
        .http
        .post(server.url("/api/deployments/execute"))
        .bearer_auth(hs256(viewer, JWT_SECRET))
        .json(&json!({"plan_id": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    server.stop().await;
}
