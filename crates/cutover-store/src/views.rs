//! Read-side queries for the API: an execution's status with its progress per wave in one
//! statement, and execution summaries without the engine's state.
//!
//! The status page is the API's hottest read. Loading the execution row, its waves and every
//! action row (three statements, one decoded row per target) made it cost three round trips
//! to the database; here the database groups the actions per wave and per status and returns
//! one row per wave with the execution's columns beside it. Only the columns the API shows are
//! read: `state` (the engine's snapshot) and most of `spec` (which lists every target) never
//! leave the database.

use crate::{ExecutionFilter, Result, Store, StoreError, ts};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

/// An execution as listed: its columns and the version and strategy from its spec.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExecutionHead {
    pub id: String,
    pub plan_id: String,
    pub environment: String,
    pub status: String,
    /// `spec.version` when it is a string.
    pub version: Option<String>,
    /// `spec.strategy` when it is a string.
    pub strategy: Option<String>,
    pub target_count: i64,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Actions counted by the group their status falls in: `failed` includes `timed_out`, and
/// `in_progress` is every status between `pending` and a final one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub total: i64,
    pub pending: i64,
    pub in_progress: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub rolled_back: i64,
    pub canceled: i64,
}

impl StatusCounts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &StatusCounts) {
        self.total += other.total;
        self.pending += other.pending;
        self.in_progress += other.in_progress;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.rolled_back += other.rolled_back;
        self.canceled += other.canceled;
    }

    /// Counts one action with `status` (the same grouping the database query uses).
    pub fn count(&mut self, status: &str) {
        self.total += 1;
        match status {
            "pending" => self.pending += 1,
            "succeeded" => self.succeeded += 1,
            "failed" | "timed_out" => self.failed += 1,
            "rolled_back" => self.rolled_back += 1,
            "canceled" => self.canceled += 1,
            _ => self.in_progress += 1,
        }
    }
}

/// One wave with its actions counted.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveProgress {
    pub wave_index: i64,
    pub status: String,
    pub target_count: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub counts: StatusCounts,
}

/// An execution with its progress overall and per wave.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionProgress {
    pub head: ExecutionHead,
    /// The sum of the waves' counts (every action belongs to one of the execution's waves).
    pub counts: StatusCounts,
    pub waves: Vec<WaveProgress>,
}

/// One row of the status query: the execution's columns, then one wave (absent for an
/// execution without waves) and its counts.
#[derive(sqlx::FromRow)]
struct StatusRow {
    #[sqlx(flatten)]
    head: ExecutionHead,
    wave_index: Option<i64>,
    wave_status: Option<String>,
    wave_target_count: Option<i64>,
    wave_started_at: Option<DateTime<Utc>>,
    wave_finished_at: Option<DateTime<Utc>>,
    n_total: Option<i64>,
    n_pending: Option<i64>,
    n_succeeded: Option<i64>,
    n_failed: Option<i64>,
    n_rolled_back: Option<i64>,
    n_canceled: Option<i64>,
}

/// The head's columns; `{version}` and `{strategy}` are the backend's JSON text extraction.
const HEAD_COLUMNS: &str = "e.id, e.plan_id, e.environment, e.status, {version} AS version, \
     {strategy} AS strategy, e.target_count, e.created_by, e.created_at, e.started_at, \
     e.finished_at";

/// `spec.<field>` as text when it is a JSON string, else NULL.
fn spec_text(postgres: bool, field: &str) -> String {
    if postgres {
        format!(
            "CASE WHEN jsonb_typeof(e.spec -> '{field}') = 'string' THEN e.spec ->> '{field}' END"
        )
    } else {
        format!(
            "CASE WHEN json_type(e.spec, '$.{field}') = 'text' THEN json_extract(e.spec, '$.{field}') END"
        )
    }
}

fn head_columns(postgres: bool) -> String {
    HEAD_COLUMNS
        .replace("{version}", &spec_text(postgres, "version"))
        .replace("{strategy}", &spec_text(postgres, "strategy"))
}

fn status_sql(postgres: bool) -> String {
    format!(
        "SELECT {head}, \
           w.wave_index AS wave_index, w.status AS wave_status, \
           w.target_count AS wave_target_count, w.started_at AS wave_started_at, \
           w.finished_at AS wave_finished_at, \
           c.n_total, c.n_pending, c.n_succeeded, c.n_failed, c.n_rolled_back, c.n_canceled \
         FROM executions e \
         LEFT JOIN waves w ON w.execution_id = e.id \
         LEFT JOIN ( \
           SELECT wave_index, COUNT(*) AS n_total, \
             SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS n_pending, \
             SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS n_succeeded, \
             SUM(CASE WHEN status IN ('failed', 'timed_out') THEN 1 ELSE 0 END) AS n_failed, \
             SUM(CASE WHEN status = 'rolled_back' THEN 1 ELSE 0 END) AS n_rolled_back, \
             SUM(CASE WHEN status = 'canceled' THEN 1 ELSE 0 END) AS n_canceled \
           FROM actions WHERE execution_id = $1 GROUP BY wave_index \
         ) c ON c.wave_index = w.wave_index \
         WHERE e.id = $1 \
         ORDER BY w.wave_index",
        head = head_columns(postgres)
    )
}

fn summaries_sql(postgres: bool) -> String {
    format!(
        "SELECT {} FROM executions e WHERE 1=1",
        head_columns(postgres)
    )
}

/// The SQL text per backend, built once.
struct Texts {
    status: String,
    summaries: String,
}

fn texts(postgres: bool) -> &'static Texts {
    static SQLITE: std::sync::OnceLock<Texts> = std::sync::OnceLock::new();
    static POSTGRES: std::sync::OnceLock<Texts> = std::sync::OnceLock::new();
    let cell = if postgres { &POSTGRES } else { &SQLITE };
    cell.get_or_init(|| Texts {
        status: status_sql(postgres),
        summaries: summaries_sql(postgres),
    })
}

/// Folds the status query's rows (one per wave) into one [`ExecutionProgress`].
fn fold(rows: Vec<StatusRow>) -> Option<ExecutionProgress> {
    let mut rows = rows.into_iter();
    let first = rows.next()?;
    let head = first.head.clone();
    let mut counts = StatusCounts::default();
    let mut waves = Vec::new();
    for r in std::iter::once(first).chain(rows) {
        let Some(wave_index) = r.wave_index else {
            continue;
        };
        let total = r.n_total.unwrap_or(0);
        let pending = r.n_pending.unwrap_or(0);
        let succeeded = r.n_succeeded.unwrap_or(0);
        let failed = r.n_failed.unwrap_or(0);
        let rolled_back = r.n_rolled_back.unwrap_or(0);
        let canceled = r.n_canceled.unwrap_or(0);
        let wave_counts = StatusCounts {
            total,
            pending,
            in_progress: total - pending - succeeded - failed - rolled_back - canceled,
            succeeded,
            failed,
            rolled_back,
            canceled,
        };
        counts.add(&wave_counts);
        waves.push(WaveProgress {
            wave_index,
            status: r.wave_status.unwrap_or_default(),
            target_count: r.wave_target_count.unwrap_or(0),
            started_at: r.wave_started_at,
            finished_at: r.wave_finished_at,
            counts: wave_counts,
        });
    }
    Some(ExecutionProgress {
        head,
        counts,
        waves,
    })
}

impl Store {
    /// An execution with its actions counted per wave, in one statement; `NotFound` when
    /// there is no such execution.
    pub async fn execution_progress(&self, id: &str) -> Result<ExecutionProgress> {
        let rows: Vec<StatusRow> = match &self.backend {
            crate::Backend::Sqlite { read, .. } => {
                sqlx::query_as(sqlx::AssertSqlSafe(texts(false).status.as_str()))
                    .bind(id)
                    .fetch_all(read)
                    .await?
            }
            crate::Backend::Postgres(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(texts(true).status.as_str()))
                    .bind(id)
                    .fetch_all(pool)
                    .await?
            }
        };
        fold(rows).ok_or(StoreError::NotFound)
    }

    /// Execution summaries matching the filter, newest first, without the engine's state.
    pub async fn list_execution_heads(&self, f: &ExecutionFilter) -> Result<Vec<ExecutionHead>> {
        let postgres = matches!(self.backend, crate::Backend::Postgres(_));
        let base = texts(postgres).summaries.as_str();
        Ok(read!(self, db => {
            let mut q = QueryBuilder::new(base);
            if !f.status.is_empty() {
                q.push(" AND e.status IN (");
                let mut sep = q.separated(", ");
                for s in &f.status {
                    sep.push_bind(s.clone());
                }
                q.push(")");
            }
            if let Some(p) = &f.plan_id {
                q.push(" AND e.plan_id = ").push_bind(p.clone());
            }
            if let Some(env) = &f.environment {
                q.push(" AND e.environment = ").push_bind(env.clone());
            }
            if let Some(since) = f.since {
                q.push(" AND e.created_at >= ").push_bind(ts(since));
            }
            q.push(" ORDER BY e.created_at DESC, e.id DESC LIMIT ")
                .push_bind(f.limit.unwrap_or(100));
            q.build_query_as().fetch_all(db).await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_statuses_as_the_api_does() {
        let mut c = StatusCounts::default();
        for s in [
            "pending",
            "dispatched",
            "installing",
            "succeeded",
            "failed",
            "timed_out",
            "rolled_back",
            "canceled",
        ] {
            c.count(s);
        }
        assert_eq!(
            c,
            StatusCounts {
                total: 8,
                pending: 1,
                in_progress: 2,
                succeeded: 1,
                failed: 2,
                rolled_back: 1,
                canceled: 1,
            }
        );
    }

    #[test]
    fn both_backends_read_the_spec_as_text_only() {
        assert!(status_sql(false).contains("json_type(e.spec, '$.version') = 'text'"));
        assert!(status_sql(true).contains("jsonb_typeof(e.spec -> 'version') = 'string'"));
        assert!(!summaries_sql(true).contains("state"));
    }
}
