//! `cutover bench store`: inserts N action events in batches (one transaction per batch,
//! multi-row or array inserts) into SQLite and PostgreSQL and reports rows per second.
//!
//! SQLite runs in a new file in a temporary directory unless a `sqlite://` URL is given;
//! PostgreSQL runs in a new schema of the given database, dropped afterwards. The clock covers
//! building each batch and storing it, and the row count is checked at the end.

use crate::cmd::GlobalArgs;
use crate::output::OutputFormat;
use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use clap::Args;
use cutover_store::{
    BackendKind, ConnectOptions, EnvironmentRow, NewActionEvent, NewExecution, NewPlan, NewTarget,
    Store,
};
use serde_json::json;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Print one JSON line per backend.
    #[arg(long)]
    pub json: bool,
    /// Action events to insert per backend.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Events per batch (one transaction each).
    #[arg(long, default_value_t = 10_000)]
    pub batch: usize,
    /// Database to measure (repeatable): sqlite://FILE, or postgres(ql)://… where a new schema
    /// is created and dropped. Without any database option: a temporary SQLite file, plus
    /// PostgreSQL at CUTOVER_TEST_DATABASE_URL when that is set.
    #[arg(long = "database", value_name = "URL")]
    pub databases: Vec<String>,
    /// Measure a temporary SQLite file.
    #[arg(long)]
    pub sqlite: bool,
    /// Measure PostgreSQL at this URL (in a new schema, dropped afterwards).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Distinct targets (and actions) the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub targets: usize,
}

/// One backend's figures.
#[derive(Debug, serde::Serialize)]
struct Line {
    backend: BackendKind,
    rows: u64,
    batch: usize,
    wall_s: f64,
    rows_per_s: f64,
}

enum Target {
    TempSqlite,
    Url(String),
}

pub async fn run(args: StoreBenchArgs, global: &GlobalArgs) -> anyhow::Result<u8> {
    let json = args.json || matches!(global.output, OutputFormat::Json);
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.targets == 0 {
        bail!("--targets must be at least 1");
    }
    let mut targets = Vec::new();
    if args.sqlite {
        targets.push(Target::TempSqlite);
    }
    if let Some(url) = &args.postgres {
        targets.push(Target::Url(url.clone()));
    }
    targets.extend(args.databases.iter().cloned().map(Target::Url));
    if targets.is_empty() {
        targets.push(Target::TempSqlite);
        match std::env::var("CUTOVER_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => targets.push(Target::Url(url)),
            _ => eprintln!(
                "note: no PostgreSQL given (--postgres URL or CUTOVER_TEST_DATABASE_URL): measuring SQLite only"
            ),
        }
    }
    for target in targets {
        let line = match target {
            Target::TempSqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("cutover-bench-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let url = format!("sqlite://{}", dir.join("bench.db").display());
                let line = async {
                    let store = Store::connect(&url)
                        .await
                        .with_context(|| format!("opening {url}"))?;
                    let line = measure(&store, &args).await;
                    store.close().await;
                    line
                }
                .await;
                let _ = std::fs::remove_dir_all(&dir);
                line?
            }
            Target::Url(url) if url.starts_with("sqlite:") => {
                let store = Store::connect(&url)
                    .await
                    .with_context(|| format!("opening {url}"))?;
                let line = measure(&store, &args).await;
                store.close().await;
                line?
            }
            Target::Url(url) => postgres(&url, &args).await?,
        };
        if json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!(
                "{:<8} {} rows in batches of {}: {:.3} s, {:.0} rows/s",
                line.backend.to_string(),
                line.rows,
                line.batch,
                line.wall_s,
                line.rows_per_s
            );
        }
    }
    Ok(0)
}

/// Runs the measurement in a new schema of the PostgreSQL database at `url`, then drops it.
async fn postgres(url: &str, args: &StoreBenchArgs) -> anyhow::Result<Line> {
    let redacted = cutover_store::redact_url(url);
    let admin = Store::connect_with(
        url,
        &ConnectOptions {
            migrate: false,
            max_connections: 2,
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("connecting to {redacted}"))?;
    if admin.backend() != BackendKind::Postgres {
        bail!("{redacted}: expected a postgres:// or postgresql:// url");
    }
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_raw(&format!("CREATE SCHEMA {schema}"))
        .await
        .with_context(|| format!("creating schema {schema} in {redacted}"))?;
    let result = async {
        let store = Store::connect_with(
            url,
            &ConnectOptions {
                schema: Some(schema.clone()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("opening schema {schema} in {redacted}"))?;
        let line = measure(&store, args).await;
        store.close().await;
        line
    }
    .await;
    let dropped = admin
        .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .with_context(|| format!("dropping schema {schema} in {redacted}"));
    admin.close().await;
    let line = result?;
    dropped?;
    Ok(line)
}

/// Inserts `args.rows` events for one execution over `args.targets` actions.
async fn measure(store: &Store, args: &StoreBenchArgs) -> anyhow::Result<Line> {
    let (execution_id, actions) = setup(store, args.targets)
        .await
        .context("creating the execution the events belong to")?;
    let base = Utc::now();
    let kinds = [
        "dispatched",
        "downloading",
        "installing",
        "verifying",
        "succeeded",
    ];
    let started = Instant::now();
    let mut written = 0_u64;
    let mut batch = Vec::with_capacity(args.batch);
    while written < args.rows {
        batch.clear();
        let n = (args.rows - written).min(args.batch as u64);
        for i in written..written + n {
            let (action_id, target_id) = &actions[(i % actions.len() as u64) as usize];
            let seq = (i / actions.len() as u64) as i64 + 1;
            batch.push(NewActionEvent {
                execution_id: execution_id.clone(),
                action_id: action_id.clone(),
                target_id: target_id.clone(),
                seq,
                kind: kinds[(seq as usize - 1) % kinds.len()].to_string(),
                at: base + TimeDelta::microseconds(i as i64),
                detail: json!({"progress": seq % 101}),
            });
        }
        store
            .append_action_events(&batch)
            .await
            .with_context(|| format!("inserting rows {written}..{}", written + n))?;
        written += n;
    }
    let wall = started.elapsed().as_secs_f64();
    let stored = store.count_action_events(&execution_id).await?;
    if stored as u64 != args.rows {
        bail!(
            "{} stored {stored} rows, expected {}",
            store.backend(),
            args.rows
        );
    }
    Ok(Line {
        backend: store.backend(),
        rows: args.rows,
        batch: args.batch,
        wall_s: (wall * 1000.0).round() / 1000.0,
        rows_per_s: (args.rows as f64 / wall.max(1e-9)).round(),
    })
}

/// An environment, `targets` devices, a plan and an execution with one action per device.
async fn setup(store: &Store, targets: usize) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let now = Utc::now();
    store
        .upsert_environment(&EnvironmentRow {
            name: "bench".into(),
            position: 0,
            approval_required: false,
            required_approvals: 0,
            auto_rollback: false,
            max_concurrent_deployments: None,
            config: json!({}),
            created_at: now,
            updated_at: now,
        })
        .await?;
    let mut ids = Vec::with_capacity(targets);
    for i in 0..targets {
        let id = format!("bench-{i:07}");
        store
            .upsert_target(&NewTarget {
                id: id.clone(),
                name: id.clone(),
                environment: "bench".into(),
                kind: "device".into(),
                ..Default::default()
            })
            .await?;
        ids.push(id);
    }
    let plan = store
        .insert_plan(&NewPlan {
            name: "bench".into(),
            version: "1.0.0".into(),
            target_environment: "bench".into(),
            strategy: "immediate".into(),
            spec: json!({}),
            created_by: "bench".into(),
            ..Default::default()
        })
        .await?;
    let exec = store
        .insert_execution(&NewExecution {
            plan_id: plan.id,
            environment: "bench".into(),
            spec: json!({}),
            state: json!({}),
            waves: vec![ids],
            created_by: "bench".into(),
            ..Default::default()
        })
        .await?;
    let actions = store
        .list_actions(&exec.id)
        .await?
        .into_iter()
        .map(|a| (a.id, a.target_id))
        .collect();
    Ok((exec.id, actions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::BenchCommand;
    use crate::cmd::{Cli, Command};
    use clap::Parser;
    use cutover_store::testing::TestDb;

    fn parse(args: &[&str]) -> (StoreBenchArgs, GlobalArgs) {
        let cli = Cli::try_parse_from(args).expect("arguments parse");
        match cli.command {
            Command::Bench(BenchCommand::Store(a)) => (a, cli.global),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn options_parse_with_defaults() {
        let (a, _) = parse(&["cutover", "bench", "store"]);
        assert_eq!((a.rows, a.batch, a.targets), (1_000_000, 10_000, 1_000));
        let (a, _) = parse(&[
            "cutover",
            "bench",
            "store",
            "--database",
            "sqlite:///tmp/a.db",
            "--database",
            "postgresql://postgres@127.0.0.1/x",
            "--rows",
            "5",
            "--batch",
            "2",
        ]);
        assert_eq!(a.databases.len(), 2);
        assert_eq!((a.rows, a.batch), (5, 2));
    }

    async fn measured(db: &TestDb) {
        let (args, _) = parse(&[
            "cutover",
            "bench",
            "store",
            "--rows",
            "12345",
            "--batch",
            "1000",
            "--targets",
            "50",
        ]);
        let line = measure(&db.store, &args).await.expect("measure");
        assert_eq!(line.rows, 12_345);
        assert_eq!(line.backend, db.store.backend());
        assert!(line.rows_per_s > 0.0 && line.wall_s > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_sqlite() {
        measured(&TestDb::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_postgres() {
        if let Some(db) = TestDb::postgres().await {
            measured(&db).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_end_to_end_on_a_temporary_sqlite_file() {
        let (args, global) = parse(&[
            "cutover", "bench", "store", "--sqlite", "--rows", "3000", "--batch", "700", "--json",
        ]);
        assert_eq!(run(args, &global).await.expect("run"), 0);
    }

    #[tokio::test]
    async fn zero_batch_is_refused() {
        let (args, global) = parse(&["cutover", "bench", "store", "--sqlite", "--batch", "0"]);
        let err = run(args, &global).await.unwrap_err();
        assert!(err.to_string().contains("--batch"), "{err}");
    }
}
