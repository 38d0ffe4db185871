//! `cutover bench api`: the REST API under load on loopback.
//!
//! A server runs in this process over a new SQLite file (or, with `--database postgres://…`,
//! a new schema of that PostgreSQL database, dropped afterwards) holding `--executions`
//! executions (10 targets each, in two waves); `wrk` (Debian's package) then loads it for a bounded
//! `--duration` with the read mix: `--list-share` of the requests are
//! `GET /api/deployments?limit=20`, the rest `GET /api/deployments/{id}` for random ids, each
//! with a real API key. Any non-2xx answer fails the run. Printed: requests per second and
//! the 99th percentile latency.

use crate::cmd::GlobalArgs;
use anyhow::{Context, bail};
use clap::Args;
use cutover_server::auth::{Role, create_key};
use cutover_server::settings::ServerSettings;
use cutover_store::{ConnectOptions, NewExecution, NewPlan, NewTarget, Store};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Executions in the store.
    #[arg(long, default_value_t = 1_000)]
    pub executions: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Open connections.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// Share of list requests in the mix, 0 to 1.
    #[arg(long, default_value_t = 0.1)]
    pub list_share: f64,
    /// Database: postgres(ql)://… (a new schema is created and dropped afterwards); default a
    /// temporary SQLite file.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Connections of the server's read pool.
    #[arg(long, default_value_t = 8)]
    pub pool: u32,
    /// The server's `read_cache_ttl` in milliseconds (0: every request reads the store);
    /// the server's default when absent.
    #[arg(long, value_name = "MS")]
    pub read_cache_ms: Option<u64>,
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiBenchResult {
    pub rps: f64,
    pub p99_ms: f64,
    pub p50_ms: f64,
    pub requests: u64,
    pub executions: usize,
    pub duration_s: u64,
    pub connections: u32,
    pub list_share: f64,
    pub backend: &'static str,
    pub read_cache_ms: u128,
}

pub async fn run(args: ApiBenchArgs, _global: &GlobalArgs) -> anyhow::Result<u8> {
    if !(0.0..=1.0).contains(&args.list_share) {
        bail!(
            "--list-share must be between 0 and 1, got {}",
            args.list_share
        );
    }
    if args.duration == 0 || args.duration > 600 {
        bail!("--duration must be between 1 and 600 seconds");
    }
    let result = bench(&args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(
                &json!({"rps": result.rps, "p99_ms": result.p99_ms, "p50_ms": result.p50_ms, "requests": result.requests, "executions": result.executions, "duration_s": result.duration_s, "connections": result.connections, "list_share": result.list_share, "backend": result.backend, "read_cache_ms": result.read_cache_ms})
            )?
        );
    } else {
        println!(
            "api ({}): {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests over {} s, {} connections, {} executions, {:.0} % lists)",
            result.backend,
            result.rps,
            result.p50_ms,
            result.p99_ms,
            result.requests,
            result.duration_s,
            result.connections,
            result.executions,
            result.list_share * 100.0
        );
    }
    Ok(0)
}

/// Fills the store: one plan, `n` executions of 10 targets each.
async fn populate(store: &Store, n: usize) -> anyhow::Result<Vec<String>> {
    let targets: Vec<String> = (0..10).map(|i| format!("bench-{i:02}")).collect();
    for id in &targets {
        store
            .upsert_target(&NewTarget {
                id: id.clone(),
                name: id.clone(),
                environment: "staging".into(),
                kind: "device".into(),
                hardware_model: Some("board-a".into()),
                current_version: Some("1.0.0".into()),
                ..Default::default()
            })
            .await?;
    }
    let plan = store
        .insert_plan(&NewPlan {
            name: "bench".into(),
            version: "1.0.1".into(),
            target_environment: "staging".into(),
            strategy: "rolling".into(),
            spec: json!({}),
            status: "executing".into(),
            created_by: "bench".into(),
            ..Default::default()
        })
        .await?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let e = store
            .insert_execution(&NewExecution {
                plan_id: plan.id.clone(),
                environment: "staging".into(),
                status: "running".into(),
                spec: json!({"version": "1.0.1", "strategy": "rolling", "artifact_kind": "firmware"}),
                state: serde_json::Value::Null,
                waves: vec![targets[..5].to_vec(), targets[5..].to_vec()],
                created_by: "bench".into(),
                ..Default::default()
            })
            .await?;
        ids.push(e.id);
    }
    Ok(ids)
}

fn lua_script(key: &str, ids: &[String], list_share: f64) -> String {
    let list: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"wrk.headers["X-API-Key"] = "{key}"
local ids = {{{}}}
math.randomseed(42)
request = function()
  if math.random() < {list_share} then
    return wrk.format("GET", "/api/deployments?limit=20")
  end
  return wrk.format("GET", "/api/deployments/" .. ids[math.random(#ids)])
end
"#,
        list.join(",")
    )
}

/// Milliseconds from a wrk figure such as `812.00us`, `4.21ms` or `1.02s`.
fn to_ms(text: &str) -> Option<f64> {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// Reads requests/s, p50, p99, the request count and the non-2xx count from wrk's report.
pub fn parse_wrk(report: &str) -> anyhow::Result<(f64, f64, f64, u64, u64)> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut requests = None;
    let mut bad = 0;
    for line in report.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = l.strip_prefix("50%") {
            p50 = to_ms(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = to_ms(v);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            bad = v.trim().parse().unwrap_or(u64::MAX);
        } else if l.contains("requests in") {
            requests = l.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    match (rps, p50, p99, requests) {
        (Some(r), Some(a), Some(b), Some(n)) => Ok((r, a, b, n, bad)),
        _ => bail!("cannot read wrk's report:\n{report}"),
    }
}

/// The bench's database: a temporary SQLite file, or a new PostgreSQL schema dropped by
/// [`BenchDb::finish`].
struct BenchDb {
    store: Store,
    /// The connection that created the schema, and its name.
    postgres: Option<(Store, String)>,
    _dir: tempfile::TempDir,
}

impl BenchDb {
    async fn open(database: Option<&str>, pool: u32) -> anyhow::Result<BenchDb> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let options = |schema: Option<String>| ConnectOptions {
            max_connections: pool.max(2),
            schema,
            ..Default::default()
        };
        let Some(url) = database else {
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let store = Store::connect_with(&url, &options(None))
                .await
                .context("cannot open the bench database")?;
            return Ok(BenchDb {
                store,
                postgres: None,
                _dir: dir,
            });
        };
        let redacted = cutover_store::redact_url(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "--database {redacted}: expected a postgres:// or postgresql:// url (SQLite is the default)"
            );
        }
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
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_raw(&format!("CREATE SCHEMA {schema}"))
            .await
            .with_context(|| format!("creating schema {schema} in {redacted}"))?;
        match Store::connect_with(url, &options(Some(schema.clone()))).await {
            Ok(store) => Ok(BenchDb {
                store,
                postgres: Some((admin, schema)),
                _dir: dir,
            }),
            Err(e) => {
                let _ = admin
                    .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
                    .await;
                admin.close().await;
                Err(e).with_context(|| format!("opening schema {schema} in {redacted}"))
            }
        }
    }

    fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.store.close().await;
        if let Some((admin, schema)) = &self.postgres {
            let dropped = admin
                .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .with_context(|| format!("dropping schema {schema}"));
            admin.close().await;
            dropped?;
        }
        Ok(())
    }
}

pub async fn bench(args: &ApiBenchArgs) -> anyhow::Result<ApiBenchResult> {
    let db = BenchDb::open(args.database.as_deref(), args.pool).await?;
    let result = run_on(args, &db).await;
    let finished = db.finish().await;
    let result = result?;
    finished?;
    Ok(result)
}

async fn run_on(args: &ApiBenchArgs, db: &BenchDb) -> anyhow::Result<ApiBenchResult> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let store = db.store.clone();
    let mut settings = ServerSettings::new(b"bench-secret-0123456789abcdef0123456789".to_vec());
    settings.security.rate_limit = None;
    if let Some(ms) = args.read_cache_ms {
        settings.read_cache_ttl = Duration::from_millis(ms);
    }
    cutover_server::sync_environments(&store, &settings).await?;
    let ids = populate(&store, args.executions)
        .await
        .context("cannot populate the store")?;
    let (_, key) = create_key(
        &store,
        &settings.key_secret,
        "bench",
        Role::Viewer,
        None,
        None,
    )
    .await?;
    let read_cache_ms = settings.read_cache_ttl.as_millis();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cutover_server::serve(
        settings,
        store,
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    let script = dir.path().join("mix.lua");
    std::fs::write(&script, lua_script(&key, &ids, args.list_share))?;
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.duration))
        .arg("--timeout")
        .arg("5s")
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(args.duration + 30), output)
        .await
        .context("wrk did not finish in time")?
        .context("cannot run wrk; install it with: apt-get install -y wrk")?;
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    let report = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        bail!(
            "wrk failed: {}{}",
            report,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (rps, p50_ms, p99_ms, requests, bad) = parse_wrk(&report)?;
    if bad > 0 {
        bail!("{bad} of {requests} answers were not 2xx:\n{report}");
    }
    Ok(ApiBenchResult {
        rps,
        p99_ms,
        p50_ms,
        requests,
        executions: args.executions,
        duration_s: args.duration,
        connections: args.connections,
        list_share: args.list_share,
        backend: db.backend(),
        read_cache_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let report = "Running 10s test @ http://127.0.0.1:1234\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     3.10ms    1.20ms  40.00ms   90.00%\n  Latency Distribution\n     50%    2.90ms\n     75%    3.50ms\n     90%    4.10ms\n     99%  812.00us\n  201234 requests in 10.00s, 90.00MB read\nRequests/sec:  20123.40\nTransfer/sec:      9.00MB\n";
        let (rps, p50, p99, n, bad) = parse_wrk(report).unwrap();
        assert_eq!(rps, 20123.4);
        assert_eq!(p50, 2.9);
        assert!((p99 - 0.812).abs() < 1e-9);
        assert_eq!(n, 201_234);
        assert_eq!(bad, 0);
        assert!(parse_wrk("nonsense").is_err());
    }

    #[tokio::test]
    async fn a_short_run_answers_every_request() {
        if std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_err()
        {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("wrk is needed: apt-get install -y wrk");
            }
            eprintln!("skipping: wrk is not installed (apt-get install -y wrk)");
            return;
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = ApiBenchArgs {
            json: true,
            executions: 20,
            duration: 1,
            connections: 4,
            threads: 1,
            list_share: 0.5,
            database: None,
            pool: 4,
            read_cache_ms: None,
        };
        let r = bench(&args).await.unwrap();
        assert!(r.requests > 10, "{r:?}");
        assert!(r.rps > 0.0 && r.p99_ms > 0.0, "{r:?}");
    }
}
