//! The served OpenAPI description must equal the committed `docs/openapi.json`, so the
//! contract never drifts unnoticed. To accept a deliberate change, regenerate the copy:
//!
//! ```text
//! CUTOVER_UPDATE_OPENAPI=1 cargo test -p cutover-server --test api_openapi
//! ```

mod api_support;

use api_support::*;
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[tokio::test]
async fn served_spec_matches_the_committed_copy() {
    let server = spawn().await;
    let r = server
        .http
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served = r.text().await.unwrap();
    server.stop().await;

    let spec: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        spec["openapi"]
    );
    for path in [
        "/api/environments",
        "/api/environments/{name}",
        "/api/deployment-plans",
        "/api/deployment-plans/{id}/approve",
        "/api/deployments/execute",
        "/api/deployments/{id}/rollback",
        "/api/health-checks",
        "/api/metrics",
        "/api/reports/deployment/{id}",
        "/api/reports/summary",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }

    let path = committed_path();
    if std::env::var_os("CUTOVER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &served).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json differs from the spec the server serves; if the change is intended, run\n  CUTOVER_UPDATE_OPENAPI=1 cargo test -p cutover-server --test api_openapi\nand commit docs/openapi.json"
    );
}
