//! The CLI client of the REST API: env, plan, deploy, target, keys, audit, report, plus
//! shell completions and the man page.
//!
//! The seed's commands work as written (`cutover env list`, `cutover plan create
//! --interactive`, `cutover deploy execute --plan-id ID`, `cutover deploy status
//! --execution-id ID`). Every command prints a table for people, or one JSON document with
//! `--output json`.

mod deploy;
mod http;
mod local;
mod plan;

use super::GlobalArgs;
use crate::output::{OutputFormat, print_json};
use clap::{Args, CommandFactory, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use cutover_server::dto::{
    AuditList, AuditVerifyView, EnvironmentDetail, EnvironmentList, KeyCreated, KeyList, KeyView,
    SummaryReport, TargetList,
};
pub use http::{Api, Connection, seg};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Environments and their policy.
    Env {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Deployment plans: create, list, show, approve.
    Plan {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: plan::PlanCommand,
    },
    /// Deployments: execute a plan, follow it, pause, resume, promote, cancel, roll back.
    Deploy {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: deploy::DeployCommand,
    },
    /// Targets (devices and hosts).
    Target {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: TargetCommand,
    },
    /// API keys: create (also before any server runs), list, revoke.
    Keys {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit log: list, verify its hash chain.
    Audit {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Reports: one deployment, or a summary over days.
    Report {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List environments in promotion order.
    List,
    /// One environment: policy, targets' versions, active deployments.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// List targets.
    List {
        #[arg(long)]
        environment: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// device or host.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
}

/// Where the local store is, for commands that work without a server.
#[derive(Debug, Args, Clone, Default)]
pub struct LocalStore {
    /// Work on this database directly instead of through the server
    /// (sqlite://FILE or postgres://…).
    #[arg(long, env = "CUTOVER_DATABASE_URL")]
    pub database: Option<String>,
    /// The file holding the server's key secret (default: beside a SQLite database).
    #[arg(long, env = "CUTOVER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once. Works on the local database (--database, or
    /// sqlite://cutover.db when no API key is set), so the first admin key needs no server.
    Create {
        /// viewer, operator, approver or admin.
        #[arg(long)]
        role: cutover_server::auth::Role,
        /// A name for people ("ci", "alice").
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        local: LocalStore,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id (key_…).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, oldest first.
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Recompute the hash chain; exits 1 when a row was changed or deleted.
    Verify {
        #[command(flatten)]
        local: LocalStore,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// One deployment: plan, progress, failures, gates, timeline.
    Deployment {
        /// The execution id.
        #[arg(long = "execution-id", alias = "id")]
        execution_id: String,
    },
    /// Deployments of the last N days.
    Summary {
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

pub async fn run(command: ClientCommand, global: &GlobalArgs) -> anyhow::Result<u8> {
    let out = global.output;
    match command {
        ClientCommand::Env { conn, command } => env(&Api::new(&conn)?, command, out).await,
        ClientCommand::Plan { conn, command } => plan::run(&Api::new(&conn)?, command, out).await,
        ClientCommand::Deploy { conn, command } => {
            deploy::run(&Api::new(&conn)?, command, out).await
        }
        ClientCommand::Target { conn, command } => target(&Api::new(&conn)?, command, out).await,
        ClientCommand::Keys { conn, command } => keys(&conn, command, out).await,
        ClientCommand::Audit { conn, command } => audit(&conn, command, out).await,
        ClientCommand::Report { conn, command } => report(&Api::new(&conn)?, command, out).await,
        ClientCommand::Completions { shell } => {
            let mut cmd = crate::cmd::Cli::command();
            clap_complete::generate(shell, &mut cmd, "cutover", &mut std::io::stdout());
            Ok(0)
        }
        ClientCommand::Man => {
            let cmd = crate::cmd::Cli::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(0)
        }
    }
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    t
}

pub fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

async fn env(api: &Api, command: EnvCommand, out: OutputFormat) -> anyhow::Result<u8> {
    match command {
        EnvCommand::List => {
            let list: EnvironmentList = api.get("/api/environments").await?;
            if out == OutputFormat::Json {
                print_json(&list)?;
                return Ok(0);
            }
            let mut t = table(&[
                "name",
                "stage",
                "approvals",
                "auto rollback",
                "max concurrent",
                "description",
            ]);
            for e in &list.environments {
                t.add_row(vec![
                    e.name.clone(),
                    opt(&e.stage),
                    e.required_approvals.to_string(),
                    if e.auto_rollback { "yes" } else { "no" }.to_string(),
                    opt(&e.max_concurrent_deployments),
                    opt(&e.description),
                ]);
            }
            println!("{t}");
        }
        EnvCommand::Show { name } => {
            let d: EnvironmentDetail = api
                .get(&format!("/api/environments/{}", seg(&name)))
                .await?;
            if out == OutputFormat::Json {
                print_json(&d)?;
                return Ok(0);
            }
            let e = &d.environment;
            println!("{} ({})", e.name, opt(&e.stage));
            println!("  approvals needed: {}", e.required_approvals);
            println!("  auto rollback:    {}", e.auto_rollback);
            println!("  targets:          {}", d.target_count);
            for (version, n) in &d.versions {
                println!("    {version}: {n}");
            }
            println!("  active deployments: {}", d.active_deployments.len());
            for x in &d.active_deployments {
                println!("    {} {} {}", x.id, x.status, opt(&x.version));
            }
        }
    }
    Ok(0)
}

async fn target(api: &Api, command: TargetCommand, out: OutputFormat) -> anyhow::Result<u8> {
    let TargetCommand::List {
        environment,
        group,
        kind,
        limit,
    } = command;
    let mut query = vec![format!("limit={limit}")];
    for (k, v) in [
        ("environment", environment),
        ("group", group),
        ("kind", kind),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", seg(&v)));
        }
    }
    let list: TargetList = api
        .get(&format!("/api/targets?{}", query.join("&")))
        .await?;
    if out == OutputFormat::Json {
        print_json(&list)?;
        return Ok(0);
    }
    let mut t = table(&[
        "id",
        "environment",
        "kind",
        "hardware",
        "version",
        "groups",
        "last seen",
    ]);
    for x in &list.targets {
        t.add_row(vec![
            x.id.clone(),
            x.environment.clone(),
            x.kind.clone(),
            opt(&x.hardware_model),
            opt(&x.current_version),
            x.groups.join(","),
            opt(&x.last_seen_at),
        ]);
    }
    println!("{t}");
    Ok(0)
}

fn print_key(k: &KeyView) {
    println!(
        "{}  prefix {}  {}  role {}{}",
        k.id,
        k.prefix,
        k.name,
        k.role,
        if k.revoked_at.is_some() {
            "  (revoked)"
        } else {
            ""
        }
    );
}

async fn keys(conn: &Connection, command: KeysCommand, out: OutputFormat) -> anyhow::Result<u8> {
    match command {
        KeysCommand::Create {
            role,
            name,
            expires_in_days,
            local,
        } => {
            let name = name.unwrap_or_else(|| format!("{role} key"));
            // The local store when asked for, or when there is no key to ask a server with.
            if local.database.is_some() || conn.api_key.is_none() {
                return local::create_key(&local, role, &name, expires_in_days, out).await;
            }
            let created: KeyCreated = Api::new(conn)?
                .post(
                    "/api/keys",
                    &serde_json::json!({"name": name, "role": role, "expires_in_days": expires_in_days}),
                )
                .await?;
            if out == OutputFormat::Json {
                print_json(&created)?;
            } else {
                println!("{}", created.key);
                eprintln!(
                    "created {} ({}, role {}); the key is shown only this once",
                    created.info.id, created.info.name, created.info.role
                );
            }
        }
        KeysCommand::List => {
            let list: KeyList = Api::new(conn)?.get("/api/keys").await?;
            if out == OutputFormat::Json {
                print_json(&list)?;
            } else {
                for k in &list.keys {
                    print_key(k);
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let k: KeyView = Api::new(conn)?
                .post(
                    &format!("/api/keys/{}/revoke", seg(&id)),
                    &serde_json::json!({}),
                )
                .await?;
            if out == OutputFormat::Json {
                print_json(&k)?;
            } else {
                println!("revoked {} ({})", k.id, k.name);
            }
        }
    }
    Ok(0)
}

async fn audit(conn: &Connection, command: AuditCommand, out: OutputFormat) -> anyhow::Result<u8> {
    match command {
        AuditCommand::List {
            actor,
            action,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [("actor", actor), ("action", action)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", seg(&v)));
                }
            }
            let list: AuditList = Api::new(conn)?
                .get(&format!("/api/audit?{}", query.join("&")))
                .await?;
            if out == OutputFormat::Json {
                print_json(&list)?;
                return Ok(0);
            }
            let mut t = table(&["seq", "at", "actor", "action", "subject", "from", "result"]);
            for e in &list.entries {
                t.add_row(vec![
                    e.seq.to_string(),
                    e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.actor.clone(),
                    e.action.clone(),
                    e.subject.clone(),
                    opt(&e.source_ip),
                    e.result.clone(),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        AuditCommand::Verify { local } => {
            let v: AuditVerifyView = match &local.database {
                Some(url) => local::verify_audit(url).await?,
                None => Api::new(conn)?.get("/api/audit/verify").await?,
            };
            if out == OutputFormat::Json {
                print_json(&v)?;
            } else if v.status == "ok" {
                println!("audit log intact: {} rows", v.rows.unwrap_or(0));
            } else {
                println!(
                    "audit log BROKEN at row {}: {}",
                    opt(&v.seq),
                    v.reason.clone().unwrap_or_default()
                );
            }
            Ok(if v.status == "ok" { 0 } else { 1 })
        }
    }
}

async fn report(api: &Api, command: ReportCommand, out: OutputFormat) -> anyhow::Result<u8> {
    match command {
        ReportCommand::Deployment { execution_id } => {
            let r: serde_json::Value = api
                .get(&format!("/api/reports/deployment/{}", seg(&execution_id)))
                .await?;
            if out == OutputFormat::Json {
                print_json(&r)?;
                return Ok(0);
            }
            let r: cutover_server::dto::DeploymentReport = serde_json::from_value(r)?;
            let e = &r.execution;
            println!(
                "deployment {} of plan {} ({})",
                e.summary.id, r.plan.id, r.plan.name
            );
            println!(
                "  environment: {}  version: {}  strategy: {}",
                e.summary.environment,
                opt(&e.summary.version),
                opt(&e.summary.strategy)
            );
            println!(
                "  status: {}  duration: {}",
                e.summary.status,
                r.duration_seconds
                    .map(|d| format!("{d:.1} s"))
                    .unwrap_or_else(|| "-".into())
            );
            println!(
                "  targets: {} succeeded, {} failed, {} rolled back, {} canceled, {} in progress, {} pending",
                e.progress.succeeded,
                e.progress.failed,
                e.progress.rolled_back,
                e.progress.canceled,
                e.progress.in_progress,
                e.progress.pending
            );
            for f in r.failures.iter().take(20) {
                println!(
                    "  failed: {} (wave {}): {}",
                    f.target_id,
                    f.wave_index + 1,
                    f.error.clone().unwrap_or_else(|| f.status.clone())
                );
            }
            for g in &r.gates {
                println!(
                    "  gate {} ({}): {}",
                    g.gate,
                    g.phase,
                    if g.passed { "passed" } else { "failed" }
                );
            }
            println!("  events: {}", r.timeline.len());
        }
        ReportCommand::Summary { days } => {
            let r: SummaryReport = api
                .get(&format!("/api/reports/summary?days={days}"))
                .await?;
            if out == OutputFormat::Json {
                print_json(&r)?;
                return Ok(0);
            }
            println!(
                "last {} days: {} deployments, success rate {}",
                r.days,
                r.deployments_total,
                r.success_rate
                    .map(|x| format!("{x:.1} %"))
                    .unwrap_or_else(|| "-".into())
            );
            for (s, n) in &r.by_status {
                println!("  {s}: {n}");
            }
            for (e, n) in &r.by_environment {
                println!("  in {e}: {n}");
            }
            println!("  targets updated: {}", r.targets_updated);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        crate::cmd::Cli::command().debug_assert();
    }
}
