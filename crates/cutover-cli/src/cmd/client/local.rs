//! Commands that work on the database directly, without a server: creating the first
//! admin key, and verifying the audit chain from the database itself.

use super::LocalStore;
use crate::output::{OutputFormat, print_json};
use anyhow::Context;
use cutover_server::auth::{Role, create_key as store_key, resolve_secret};
use cutover_server::dto::AuditVerifyView;
use cutover_store::Store;

/// The database a local command uses when none is given.
pub const DEFAULT_DATABASE: &str = "sqlite://cutover.db";

async fn open(url: &str) -> anyhow::Result<Store> {
    Store::connect(url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            cutover_store::redact_url(url)
        )
    })
}

pub async fn create_key(
    local: &LocalStore,
    role: Role,
    name: &str,
    expires_in_days: Option<u32>,
    out: OutputFormat,
) -> anyhow::Result<u8> {
    let url = local
        .database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
    let store = open(&url).await?;
    let secret = resolve_secret(local.secret_file.as_deref(), &url)
        .context("cannot read or create the key secret")?;
    let expires_at =
        expires_in_days.map(|d| chrono::Utc::now() + chrono::TimeDelta::days(i64::from(d)));
    let (row, key) = store_key(&store, &secret, name, role, Some("cli:local"), expires_at)
        .await
        .context("cannot store the key")?;
    store
        .append_audit(&cutover_store::NewAuditEntry {
            actor: "cli:local".into(),
            action: "key.create".into(),
            subject: row.id.clone(),
            source_ip: None,
            result: "success".into(),
            details: serde_json::json!({"name": row.name, "role": row.role, "prefix": row.prefix}),
            at: None,
        })
        .await
        .context("cannot write the audit log")?;
    store.close().await;
    if out == OutputFormat::Json {
        print_json(&serde_json::json!({ "key": key }))?;
    } else {
        println!("{key}");
        eprintln!(
            "created {} ({}, role {}) in {}; the key is shown only this once",
            row.id,
            row.name,
            row.role,
            cutover_store::redact_url(&url)
        );
    }
    Ok(0)
}

pub async fn verify_audit(url: &str) -> anyhow::Result<AuditVerifyView> {
    let store = open(url).await?;
    let v = store
        .verify_audit()
        .await
        .context("cannot read the audit log")?;
    store.close().await;
    Ok(cutover_server::routes::admin::verification_view(v))
}
