//! cutover's persistence: one [`Store`] over SQLite (the default, a single file) or PostgreSQL
//! (several replicas), chosen by the URL's scheme.
//!
//! Each backend has its own migrations (`migrations/sqlite`, `migrations/postgres`, embedded in
//! the binary and run by [`Store::connect`]) and its own compiled queries: the SQL text is shared
//! where both databases accept it (`$1` placeholders, `ON CONFLICT`, `RETURNING`) and written
//! per backend where they differ (`FOR UPDATE SKIP LOCKED`, `UNNEST` batch inserts). Queries
//! are built at run time (`sqlx::query`), so building needs no database.
//!
//! SQLite runs in WAL mode with a busy timeout, foreign keys on and `synchronous=NORMAL`; all
//! writes go through a one-connection pool and start with `BEGIN IMMEDIATE`, so concurrent
//! writers queue instead of failing with `SQLITE_BUSY`, while reads use a separate pool. The
//! write-ahead log is checkpointed every [`SQLITE_CHECKPOINT_PAGES`] pages, not SQLite's
//! default 1,000.
//!
//! Action events are indexed by `(execution, id)` only, so batched inserts append to the index;
//! `list_action_events(execution, Some(target))` scans that execution's events.
//!
//! Changes from the agreed API contract (names are unchanged):
//! - `StoreError` also has `Migrate(MigrateError)`; `NotFound` stays a unit variant.
//! - `NewExecution.waves` is `Vec<Vec<String>>` (target ids per wave); actions get ids `act_…`.
//! - `StepBatch` has an optional `fence: Option<LeaseFence>`: when set, the batch commits only
//!   while that lease is held by that owner (a replica that lost its lease cannot write).
//! - `NewExecutionEvent.seq` is chosen by the writer; a repeated `(execution, seq)` is a
//!   `Conflict`, which is how a second writer is detected.
//! - `AuditVerification::Broken { seq, reason }` names the audit row by its `seq` (1, 2, 3, ...).
//! - Added: `Store::connect_with`, `close`, `get_lease`, `get_user`, `get_api_key`,
//!   `mark_schedule`, `list_schedules`, `get_action`, `count_action_events`,
//!   `list_action_events_after` (paging), `get_outbox`, `list_outbox`, secrets (`put_secret`,
//!   `get_secret`, `list_secrets`, `delete_secret`), `execute_raw`, `pg_pool`, `sqlite_pool`.
//! - `insert_artifact` returns the existing row when the same sha256 is inserted again.
//! - `cutover_store::testing::TestDb` gives other crates' tests a fresh store on either backend
//!   (`TestDb::sqlite()`, `TestDb::postgres()`), removed on drop.

#![forbid(unsafe_code)]

/// Runs `$body` with `$db` bound to the read pool of whichever backend the store uses.
macro_rules! read {
    ($store:expr, $db:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { read: $db, .. } => $body,
            $crate::Backend::Postgres($db) => $body,
        }
    };
}

/// Runs `$body` with `$db` bound to the write pool (SQLite's single writer, or the PostgreSQL pool).
macro_rules! write {
    ($store:expr, $db:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { write: $db, .. } => $body,
            $crate::Backend::Postgres($db) => $body,
        }
    };
}

/// Runs `$body` inside one write transaction bound to `$tx` and commits it; an early return
/// through `?` drops the transaction, which rolls it back.
macro_rules! tx {
    ($store:expr, $tx:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite { write, .. } => {
                #[allow(unused_mut)]
                let mut $tx = write.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::Backend::Postgres(pool) => {
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

mod audit;
mod auth;
mod catalog;
mod error;
mod executions;
mod leases;
mod model;
mod outbox;
mod plans;
mod secrets;
pub mod testing;
mod views;

pub use audit::{GENESIS_HASH, canonical_audit_row, chain_hash};
pub use error::{Result, StoreError};
pub use executions::{ACTION_FINAL_STATUSES, ACTION_STATUSES, EXECUTION_STATUSES};
pub use leases::execution_lease_resource;
pub use model::*;
pub use plans::PLAN_STATUSES;
pub use views::{ExecutionHead, ExecutionProgress, StatusCounts, WaveProgress};

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite checkpoints its write-ahead log (copies the log's pages into the database file and
/// waits for the disk) inside the commit that takes the log past this many pages: 64 MiB of
/// 4 KiB pages. SQLite's default, 1,000 pages, meant one such wait per 4 MiB written; on a
/// rollout to 100,000 devices that was 140 checkpoints, each holding the one writer for tens
/// to hundreds of milliseconds while the disk caught up, and a page written again and again
/// (an index's last page) was copied once per checkpoint instead of once.
pub const SQLITE_CHECKPOINT_PAGES: u32 = 16_384;

/// The log file is truncated back to this size when it starts over: the checkpoint size in
/// SQLite's default 4 KiB pages.
pub const SQLITE_LOG_SIZE_LIMIT_BYTES: u64 = SQLITE_CHECKPOINT_PAGES as u64 * 4096;

/// SQLite's limit on bind parameters in one statement.
pub const SQLITE_MAX_BINDS: usize = 32_766;
/// PostgreSQL's limit on bind parameters in one statement.
pub const POSTGRES_MAX_BINDS: usize = 65_535;

#[derive(Debug, Clone)]
enum Backend {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

/// The cutover database. Cheap to clone (pools are shared).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

/// How to connect, beyond the URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Pool size for reads (SQLite) or for everything (PostgreSQL).
    pub max_connections: u32,
    /// PostgreSQL only: the schema to use (sets `search_path` on every connection).
    pub schema: Option<String>,
    /// Run the migrations (the default). Off only for tools that must not change the schema.
    pub migrate: bool,
    /// SQLite only: how long a connection waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 8,
            schema: None,
            migrate: true,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl Store {
    /// Opens the database at `url` and runs pending migrations.
    ///
    /// `sqlite://path` (the file is created if missing), `sqlite::memory:`, `postgres://…` or
    /// `postgresql://…`. On PostgreSQL the migrator holds an advisory lock, so several replicas
    /// may start at once.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// [`Store::connect`] with explicit options.
    pub async fn connect_with(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Self::connect_sqlite_retrying(url, opts).await,
            "postgres" | "postgresql" => {
                let store = Self::connect_postgres(url, opts).await?;
                if opts.migrate {
                    store.migrate().await?;
                }
                Ok(store)
            }
            _ => Err(StoreError::Invalid(format!(
                "database url {}: unknown scheme {scheme:?}, expected sqlite://, postgres:// or postgresql://",
                redact_url(url)
            ))),
        }
    }

    /// Opening a new file while another process does the same can fail at once with
    /// SQLITE_BUSY: switching a fresh database to WAL takes a lock that SQLite does not wait
    /// for with the busy handler. Such a failure is retried until the busy timeout.
    async fn connect_sqlite_retrying(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let deadline = std::time::Instant::now() + opts.busy_timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let attempt = async {
                let store = Self::connect_sqlite(url, opts).await?;
                if opts.migrate {
                    store.migrate().await?;
                }
                Ok(store)
            };
            match attempt.await {
                Err(StoreError::Backend(sqlx::Error::Database(db)))
                    if matches!(db.code().as_deref(), Some("5" | "6"))
                        && std::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %db, "sqlite busy while opening, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn connect_sqlite(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("database url {url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000")
            .pragma("wal_autocheckpoint", SQLITE_CHECKPOINT_PAGES.to_string())
            .pragma(
                "journal_size_limit",
                SQLITE_LOG_SIZE_LIMIT_BYTES.to_string(),
            );
        // One writer: SQLite allows one write transaction at a time, so writers queue in the
        // pool instead of spinning on SQLITE_BUSY.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        // An in-memory database lives in one connection: reads share it.
        let read = if memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(opts.max_connections.max(1))
                .connect_with(options)
                .await?
        };
        Ok(Store {
            backend: Backend::Sqlite { read, write },
        })
    }

    async fn connect_postgres(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("database url {}: {e}", redact_url(url))))?;
        if let Some(schema) = &opts.schema {
            if !valid_identifier(schema) {
                return Err(StoreError::Invalid(format!(
                    "schema name {schema:?}: expected letters, digits and underscores"
                )));
            }
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Store {
            backend: Backend::Postgres(pool),
        })
    }

    /// Applies pending migrations (idempotent; [`Store::connect`] already does it).
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                // SQLite's migrator takes no lock: hold the write lock for the whole run, so
                // two processes opening a new file at once do not both apply a migration.
                let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
                SQLITE_MIGRATIONS.run(&mut *tx).await?;
                tx.commit().await?;
            }
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Which database this store uses.
    pub fn backend(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite { .. } => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// The PostgreSQL pool, for tools and tests that need raw SQL.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite { .. } => None,
        }
    }

    /// The SQLite write pool, for tools and tests that need raw SQL.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite { write, .. } => Some(write),
            Backend::Postgres(_) => None,
        }
    }

    /// Runs one raw SQL statement (maintenance and tests); returns the rows affected.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        Ok(write!(self, db => sqlx::query(sql).execute(db).await?.rows_affected()))
    }
}

/// A fresh prefixed id, e.g. `plan_0193…`, that sorts by creation time.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Time rounded to what both databases keep (microseconds).
pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Now, rounded as [`ts`] does.
pub(crate) fn now() -> DateTime<Utc> {
    ts(Utc::now())
}

pub(crate) fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

pub(crate) fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Connects to the database at `url` (sqlite:// or postgres://) on its own,
/// runs `query` once and returns the rows it gave: a health check of a
/// database that is not the store. A SQLite file that does not exist is an
/// error, not created.
pub async fn probe_database(url: &str, query: &str) -> std::result::Result<usize, String> {
    use sqlx::Connection;
    let shown = redact_url(url);
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| format!("database url {shown}: {e}"))?
                .create_if_missing(false)
                .read_only(true);
            let conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(|e| format!("cannot connect to {shown}: {e}"))?;
            rows_of(conn, query)
                .await
                .map_err(|e| format!("{query:?} failed on {shown}: {e}"))
        }
        "postgres" | "postgresql" => {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| format!("database url {shown}: {e}"))?;
            let conn = sqlx::PgConnection::connect_with(&options)
                .await
                .map_err(|e| format!("cannot connect to {shown}: {e}"))?;
            rows_of(conn, query)
                .await
                .map_err(|e| format!("{query:?} failed on {shown}: {e}"))
        }
        other => Err(format!(
            "database url {shown}: unsupported scheme {other:?} (sqlite:// or postgres://)"
        )),
    }
}

/// Runs `query` once on `conn`, then closes it: the rows it gave.
async fn rows_of<C>(mut conn: C, query: &str) -> std::result::Result<usize, sqlx::Error>
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
{
    let rows = sqlx::query(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_all(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(rows.len())
}

/// The URL without its password, for error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
