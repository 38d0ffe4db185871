//! Executions, their waves and actions, the engine's input log, action events and gate
//! results, and `commit_step`: the orchestrator's single write per engine step (or batch of
//! steps), in one transaction.

use crate::{
    ActionEventRow, ActionRow, ActionUpdate, ExecutionEventRow, ExecutionFilter, ExecutionRow,
    GateResultRow, NewActionEvent, NewExecution, NewExecutionEvent, NewGateResult,
    NewOutboxMessage, POSTGRES_MAX_BINDS, Result, SQLITE_MAX_BINDS, StepBatch, Store, StoreError,
    WaveRow, new_id, now, ts,
};
use sqlx::types::Json;
use sqlx::{PgConnection, QueryBuilder, SqliteConnection};

/// Execution statuses the store accepts.
pub const EXECUTION_STATUSES: &[&str] = &[
    "pending",
    "running",
    "paused",
    "succeeded",
    "failed",
    "rolled_back",
    "canceled",
];

/// Action statuses the store accepts.
pub const ACTION_STATUSES: &[&str] = &[
    "pending",
    "dispatched",
    "downloading",
    "installing",
    "verifying",
    "succeeded",
    "failed",
    "rolled_back",
    "canceled",
    "timed_out",
];

/// Action statuses after which nothing more happens to the action.
pub const ACTION_FINAL_STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "rolled_back",
    "canceled",
    "timed_out",
];

fn check_status(what: &str, s: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} status {s:?}, expected one of {}",
            allowed.join(", ")
        )))
    }
}

/// Rows per multi-row INSERT so that `columns` binds per row stay under the backend's limit.
pub(crate) fn rows_per_statement(max_binds: usize, columns: usize) -> usize {
    (max_binds / columns).max(1)
}

/// `0..len` cut into ranges of at most `rows`: the rows of one statement each
/// when columns are bound side by side.
fn row_ranges(len: usize, rows: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..len)
        .step_by(rows.max(1))
        .map(move |start| start..(start + rows).min(len))
}

/// Writes that differ per backend (batch inserts and batch updates).
pub(crate) trait BatchWrites {
    const MAX_BINDS: usize;
    async fn insert_action_events(&mut self, events: &[NewActionEvent]) -> Result<()>;
    async fn apply_action_updates(&mut self, updates: &[ActionUpdate]) -> Result<()>;
    /// Many targets' running versions (and inventories) in few statements.
    async fn update_targets_seen(&mut self, seen: &TargetsSeen<'_>) -> Result<()>;
}

impl BatchWrites for SqliteConnection {
    const MAX_BINDS: usize = SQLITE_MAX_BINDS;

    async fn insert_action_events(&mut self, events: &[NewActionEvent]) -> Result<()> {
        // Full chunks share one SQL text, so the prepared statement is reused from the cache.
        for chunk in events.chunks(rows_per_statement(Self::MAX_BINDS, 7).min(4_000)) {
            let mut q = QueryBuilder::new(
                "INSERT INTO action_events (execution_id, action_id, target_id, seq, kind, at, detail) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.execution_id)
                    .push_bind(&e.action_id)
                    .push_bind(&e.target_id)
                    .push_bind(e.seq)
                    .push_bind(&e.kind)
                    .push_bind(ts(e.at))
                    .push_bind(Json(&e.detail));
            });
            q.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    async fn apply_action_updates(&mut self, updates: &[ActionUpdate]) -> Result<()> {
        // Many rows per statement: one UPDATE per action was most of a commit
        // at 100,000 devices. Full chunks share one SQL text, so the prepared
        // statement is reused from the cache.
        let merged = MergedUpdates::new(updates);
        let rows = rows_per_statement(Self::MAX_BINDS, 6).min(2_000);
        for range in row_ranges(merged.id.len(), rows) {
            let (start, end) = (range.start, range.end);
            let mut q = QueryBuilder::new("WITH u(id, status, last_seq, error, bump, at) AS (");
            q.push_values(start..end, |mut b, i| {
                b.push_bind(merged.id[i])
                    .push_bind(merged.status[i])
                    .push_bind(merged.last_seq[i])
                    .push_bind(merged.error[i])
                    .push_bind(merged.bump[i])
                    .push_bind(merged.at[i]);
            });
            q.push(
                ") UPDATE actions SET status = u.status, \
                 last_seq = MAX(actions.last_seq, COALESCE(u.last_seq, actions.last_seq)), \
                 error = u.error, attempt = actions.attempt + u.bump, updated_at = u.at \
                 FROM u WHERE actions.id = u.id",
            );
            let n = q.build().execute(&mut *self).await?.rows_affected();
            merged.check(start..end, n)?;
        }
        Ok(())
    }

    async fn update_targets_seen(&mut self, seen: &TargetsSeen<'_>) -> Result<()> {
        let rows = rows_per_statement(Self::MAX_BINDS, 6).min(2_000);
        for range in row_ranges(seen.id.len(), rows) {
            let (start, end) = (range.start, range.end);
            let mut q = QueryBuilder::new("WITH s(id, version, inventory, kind, at, updated) AS (");
            q.push_values(start..end, |mut b, i| {
                b.push_bind(seen.id[i])
                    .push_bind(seen.version[i])
                    .push_bind(seen.inventory[i])
                    .push_bind(seen.kind[i])
                    .push_bind(seen.at)
                    .push_bind(seen.updated);
            });
            q.push(
                ") UPDATE targets SET current_version = s.version, \
                 inventory = COALESCE(s.inventory, targets.inventory), last_seen_at = s.at, \
                 updated_at = s.updated, kind = COALESCE(s.kind, targets.kind) \
                 FROM s WHERE targets.id = s.id",
            );
            q.build().execute(&mut *self).await?;
        }
        Ok(())
    }
}

/// Targets seen in one batch, one entry per target (the latest version wins;
/// an inventory or kind only replaces the stored one when given), column by
/// column as PostgreSQL's UNNEST wants them.
pub(crate) struct TargetsSeen<'a> {
    id: Vec<&'a str>,
    version: Vec<Option<&'a str>>,
    inventory: Vec<Option<Json<&'a serde_json::Value>>>,
    kind: Vec<Option<&'a str>>,
    at: chrono::DateTime<chrono::Utc>,
    updated: chrono::DateTime<chrono::Utc>,
}

impl<'a> TargetsSeen<'a> {
    fn new(
        seen: &'a [(String, String, Option<serde_json::Value>)],
        at: chrono::DateTime<chrono::Utc>,
        updated: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        let mut m = Self {
            id: Vec::with_capacity(seen.len()),
            version: Vec::with_capacity(seen.len()),
            inventory: Vec::with_capacity(seen.len()),
            kind: Vec::with_capacity(seen.len()),
            at,
            updated,
        };
        let mut index: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(seen.len());
        for (id, version, inventory) in seen {
            let version = (!version.is_empty()).then_some(version.as_str());
            // Anything else would fail the whole batch on the column's check.
            let kind = inventory
                .as_ref()
                .and_then(|i| i.get("kind")?.as_str())
                .filter(|k| matches!(*k, "device" | "host"));
            let inventory = inventory.as_ref().map(Json);
            match index.get(id.as_str()) {
                Some(&i) => {
                    m.version[i] = version;
                    if inventory.is_some() {
                        m.inventory[i] = inventory;
                    }
                    if kind.is_some() {
                        m.kind[i] = kind;
                    }
                }
                None => {
                    index.insert(id.as_str(), m.id.len());
                    m.id.push(id.as_str());
                    m.version.push(version);
                    m.inventory.push(inventory);
                    m.kind.push(kind);
                }
            }
        }
        m
    }
}

/// A batch's action updates merged per action, as if applied in order: the
/// latest status, error and time win, attempts add up, the highest sequence
/// stays. Column by column, as PostgreSQL's UNNEST wants them.
struct MergedUpdates<'a> {
    id: Vec<&'a str>,
    status: Vec<&'a str>,
    last_seq: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    bump: Vec<i64>,
    at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl<'a> MergedUpdates<'a> {
    fn new(updates: &'a [ActionUpdate]) -> Self {
        let n = updates.len();
        let mut m = Self {
            id: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            last_seq: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            bump: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
        };
        let mut seen: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(n);
        for u in updates {
            if let Some(&i) = seen.get(u.action_id.as_str()) {
                m.status[i] = u.status.as_str();
                m.last_seq[i] = match (m.last_seq[i], u.last_seq) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                m.error[i] = u.error.as_deref();
                m.bump[i] += i64::from(u.bump_attempt);
                m.at[i] = ts(u.at);
                continue;
            }
            seen.insert(u.action_id.as_str(), m.id.len());
            m.id.push(u.action_id.as_str());
            m.status.push(u.status.as_str());
            m.last_seq.push(u.last_seq);
            m.error.push(u.error.as_deref());
            m.bump.push(i64::from(u.bump_attempt));
            m.at.push(ts(u.at));
        }
        m
    }

    /// Fails unless the statement for `rows` updated every one of them.
    fn check(&self, rows: std::ops::Range<usize>, updated: u64) -> Result<()> {
        let expected = rows.len() as u64;
        if updated == expected {
            return Ok(());
        }
        Err(StoreError::Invalid(format!(
            "{} of {} updated actions do not exist (first of them: {})",
            expected.saturating_sub(updated),
            expected,
            self.id[rows.start]
        )))
    }
}

impl BatchWrites for PgConnection {
    const MAX_BINDS: usize = POSTGRES_MAX_BINDS;

    async fn insert_action_events(&mut self, events: &[NewActionEvent]) -> Result<()> {
        // One array per column: seven binds whatever the number of rows.
        for chunk in events.chunks(50_000) {
            let mut execution_id = Vec::with_capacity(chunk.len());
            let mut action_id = Vec::with_capacity(chunk.len());
            let mut target_id = Vec::with_capacity(chunk.len());
            let mut seq = Vec::with_capacity(chunk.len());
            let mut kind = Vec::with_capacity(chunk.len());
            let mut at = Vec::with_capacity(chunk.len());
            let mut detail = Vec::with_capacity(chunk.len());
            for e in chunk {
                execution_id.push(e.execution_id.as_str());
                action_id.push(e.action_id.as_str());
                target_id.push(e.target_id.as_str());
                seq.push(e.seq);
                kind.push(e.kind.as_str());
                at.push(ts(e.at));
                detail.push(Json(&e.detail));
            }
            sqlx::query(
                "INSERT INTO action_events (execution_id, action_id, target_id, seq, kind, at, detail) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
                 $6::timestamptz[], $7::jsonb[])",
            )
            .bind(&execution_id)
            .bind(&action_id)
            .bind(&target_id)
            .bind(&seq)
            .bind(&kind)
            .bind(&at)
            .bind(&detail)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }

    async fn apply_action_updates(&mut self, updates: &[ActionUpdate]) -> Result<()> {
        // One array per column: six binds whatever the number of rows.
        let merged = MergedUpdates::new(updates);
        for range in row_ranges(merged.id.len(), 50_000) {
            let (start, end) = (range.start, range.end);
            let n = sqlx::query(
                "UPDATE actions a SET status = u.status, \
                 last_seq = GREATEST(a.last_seq, COALESCE(u.last_seq, a.last_seq)), \
                 error = u.error, attempt = a.attempt + u.bump, updated_at = u.at \
                 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::int8[], $6::timestamptz[]) \
                 AS u(id, status, last_seq, error, bump, at) WHERE a.id = u.id",
            )
            .bind(&merged.id[start..end])
            .bind(&merged.status[start..end])
            .bind(&merged.last_seq[start..end])
            .bind(&merged.error[start..end])
            .bind(&merged.bump[start..end])
            .bind(&merged.at[start..end])
            .execute(&mut *self)
            .await?
            .rows_affected();
            merged.check(start..end, n)?;
        }
        Ok(())
    }

    async fn update_targets_seen(&mut self, seen: &TargetsSeen<'_>) -> Result<()> {
        for range in row_ranges(seen.id.len(), 50_000) {
            let (start, end) = (range.start, range.end);
            sqlx::query(
                "UPDATE targets t SET current_version = s.version, \
                 inventory = COALESCE(s.inventory, t.inventory), last_seen_at = $5, \
                 updated_at = $6, kind = COALESCE(s.kind, t.kind) \
                 FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::text[]) \
                 AS s(id, version, inventory, kind) WHERE t.id = s.id",
            )
            .bind(&seen.id[start..end])
            .bind(&seen.version[start..end])
            .bind(&seen.inventory[start..end])
            .bind(&seen.kind[start..end])
            .bind(seen.at)
            .bind(seen.updated)
            .execute(&mut *self)
            .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Creates an execution with its waves and one pending action per target, in one transaction.
    pub async fn insert_execution(&self, e: &NewExecution) -> Result<ExecutionRow> {
        let status = if e.status.is_empty() {
            "pending"
        } else {
            e.status.as_str()
        };
        check_status("execution", status, EXECUTION_STATUSES)?;
        let id = e.id.clone().unwrap_or_else(|| new_id("exec"));
        let at = now();
        let target_count: usize = e.waves.iter().map(Vec::len).sum();
        let max_binds = match self.backend() {
            crate::BackendKind::Sqlite => SQLITE_MAX_BINDS,
            crate::BackendKind::Postgres => POSTGRES_MAX_BINDS,
        };
        let rows: Vec<(String, &str, i64)> = e
            .waves
            .iter()
            .enumerate()
            .flat_map(|(w, targets)| {
                targets
                    .iter()
                    .map(move |t| (new_id("act"), t.as_str(), w as i64))
            })
            .collect();
        let row: ExecutionRow = tx!(self, tx => {
            let row = sqlx::query_as(
                "INSERT INTO executions (id, plan_id, environment, status, spec, state, target_count, \
                 created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *",
            )
            .bind(&id)
            .bind(&e.plan_id)
            .bind(&e.environment)
            .bind(status)
            .bind(Json(&e.spec))
            .bind(Json(&e.state))
            .bind(target_count as i64)
            .bind(&e.created_by)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            for (w, targets) in e.waves.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO waves (execution_id, wave_index, status, target_count) VALUES ($1, $2, 'pending', $3)",
                )
                .bind(&id)
                .bind(w as i64)
                .bind(targets.len() as i64)
                .execute(&mut *tx)
                .await?;
            }
            for chunk in rows.chunks(rows_per_statement(max_binds, 5).min(5_000)) {
                let mut q = QueryBuilder::new(
                    "INSERT INTO actions (id, execution_id, target_id, wave_index, status, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut b, (action_id, target, wave)| {
                    b.push_bind(action_id.as_str())
                        .push_bind(id.as_str())
                        .push_bind(*target)
                        .push_bind(*wave)
                        .push_unseparated(", 'pending', ")
                        .push_bind_unseparated(at)
                        .push_unseparated(", ")
                        .push_bind_unseparated(at);
                });
                q.build().execute(&mut *tx).await?;
            }
            row
        });
        Ok(row)
    }

    pub async fn get_execution(&self, id: &str) -> Result<ExecutionRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM executions WHERE id = $1")
            .bind(id).fetch_one(db).await?),
        )
    }

    /// An execution's status alone (pollers need not decode its spec, which lists every target).
    pub async fn execution_status(&self, id: &str) -> Result<String> {
        let (status,): (String,) = read!(self, db => sqlx::query_as(
            "SELECT status FROM executions WHERE id = $1"
        ).bind(id).fetch_one(db).await?);
        Ok(status)
    }

    /// Executions matching the filter, newest first.
    pub async fn list_executions(&self, f: &ExecutionFilter) -> Result<Vec<ExecutionRow>> {
        Ok(read!(self, db => {
            let mut q = QueryBuilder::new("SELECT * FROM executions WHERE 1=1");
            if !f.status.is_empty() {
                q.push(" AND status IN (");
                let mut sep = q.separated(", ");
                for s in &f.status {
                    sep.push_bind(s.clone());
                }
                q.push(")");
            }
            if let Some(p) = &f.plan_id {
                q.push(" AND plan_id = ").push_bind(p.clone());
            }
            if let Some(env) = &f.environment {
                q.push(" AND environment = ").push_bind(env.clone());
            }
            if let Some(since) = f.since {
                q.push(" AND created_at >= ").push_bind(ts(since));
            }
            q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(f.limit.unwrap_or(100));
            q.build_query_as().fetch_all(db).await?
        }))
    }

    pub async fn list_waves(&self, execution_id: &str) -> Result<Vec<WaveRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM waves WHERE execution_id = $1 ORDER BY wave_index"
        ).bind(execution_id).fetch_all(db).await?))
    }

    /// Actions of an execution by wave, then target.
    pub async fn list_actions(&self, execution_id: &str) -> Result<Vec<ActionRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM actions WHERE execution_id = $1 ORDER BY wave_index, target_id"
        ).bind(execution_id).fetch_all(db).await?))
    }

    /// `(target id, action id)` of each action of an execution: what loading it for the
    /// orchestrator needs, without reading every action row in full.
    pub async fn action_ids(&self, execution_id: &str) -> Result<Vec<(String, String)>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT target_id, id FROM actions WHERE execution_id = $1"
        ).bind(execution_id).fetch_all(db).await?))
    }

    pub async fn get_action(&self, id: &str) -> Result<ActionRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM actions WHERE id = $1")
            .bind(id).fetch_one(db).await?),
        )
    }

    /// A target's actions, newest first; `only_open` leaves out finished ones.
    pub async fn actions_for_target(
        &self,
        target_id: &str,
        only_open: bool,
    ) -> Result<Vec<ActionRow>> {
        Ok(read!(self, db => {
            let mut q = QueryBuilder::new("SELECT * FROM actions WHERE target_id = ");
            q.push_bind(target_id.to_string());
            if only_open {
                q.push(" AND status NOT IN (");
                let mut sep = q.separated(", ");
                for s in ACTION_FINAL_STATUSES {
                    sep.push_bind(*s);
                }
                q.push(")");
            }
            q.push(" ORDER BY created_at DESC, id DESC");
            q.build_query_as().fetch_all(db).await?
        }))
    }

    /// Writes one engine step (or many, batched) atomically: engine input events, action,
    /// wave and execution state, action events, notifications and gate results. Either all
    /// of it is stored or none of it.
    pub async fn commit_step(&self, b: &StepBatch) -> Result<()> {
        for u in &b.action_updates {
            check_status("action", &u.status, ACTION_STATUSES)?;
        }
        if let Some(u) = &b.execution_update
            && let Some(s) = &u.status
        {
            check_status("execution", s, EXECUTION_STATUSES)?;
        }
        let kind = self.backend();
        tx!(self, tx => {
            if let Some(fence) = &b.fence {
                let lock = if kind == crate::BackendKind::Postgres { " FOR SHARE" } else { "" };
                let owner: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT owner FROM leases WHERE resource = $1{lock}"
                )))
                .bind(&fence.resource)
                .fetch_optional(&mut *tx)
                .await?;
                match owner {
                    Some((o,)) if o == fence.owner => {}
                    Some((o,)) => {
                        return Err(StoreError::Conflict(format!(
                            "lease {} is held by {o}, not {}",
                            fence.resource, fence.owner
                        )));
                    }
                    None => {
                        return Err(StoreError::Conflict(format!(
                            "lease {} is not held by {}",
                            fence.resource, fence.owner
                        )));
                    }
                }
            }
            insert_execution_events(&mut *tx, &b.execution_events).await?;
            if !b.action_updates.is_empty() {
                tx.apply_action_updates(&b.action_updates).await?;
            }
            for w in &b.wave_updates {
                let n = sqlx::query(
                    "UPDATE waves SET status = $3, started_at = COALESCE($4, started_at), \
                     finished_at = COALESCE($5, finished_at) WHERE execution_id = $1 AND wave_index = $2",
                )
                .bind(&w.execution_id)
                .bind(w.wave_index)
                .bind(&w.status)
                .bind(w.started_at.map(ts))
                .bind(w.finished_at.map(ts))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Invalid(format!(
                        "wave {} of execution {} does not exist",
                        w.wave_index, w.execution_id
                    )));
                }
            }
            if let Some(u) = &b.execution_update {
                let n = sqlx::query(
                    "UPDATE executions SET status = COALESCE($2, status), state = COALESCE($3, state), \
                     started_at = COALESCE($4, started_at), finished_at = COALESCE($5, finished_at), \
                     updated_at = $6 WHERE id = $1",
                )
                .bind(&u.execution_id)
                .bind(&u.status)
                .bind(u.state.as_ref().map(Json))
                .bind(u.started_at.map(ts))
                .bind(u.finished_at.map(ts))
                .bind(ts(u.at))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(StoreError::Invalid(format!(
                        "execution {} does not exist",
                        u.execution_id
                    )));
                }
            }
            if !b.action_events.is_empty() {
                tx.insert_action_events(&b.action_events).await?;
            }
            insert_outbox(&mut *tx, &b.outbox).await?;
            insert_gate_results(&mut *tx, &b.gate_results).await?;
        });
        Ok(())
    }

    /// The engine's input log of one execution after `after_seq`, in order (replay).
    pub async fn load_execution_events(
        &self,
        execution_id: &str,
        after_seq: i64,
    ) -> Result<Vec<ExecutionEventRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM execution_events WHERE execution_id = $1 AND seq > $2 ORDER BY seq"
        ).bind(execution_id).bind(after_seq).fetch_all(db).await?))
    }

    /// Appends action events in one transaction, with multi-row inserts (SQLite) or array
    /// inserts (PostgreSQL): a large fleet's reports cost one transaction per batch.
    pub async fn append_action_events(&self, events: &[NewActionEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        tx!(self, tx => tx.insert_action_events(events).await?);
        Ok(())
    }

    /// Action events of an execution (optionally one target) in the order they were stored.
    pub async fn list_action_events(
        &self,
        execution_id: &str,
        target_id: Option<&str>,
    ) -> Result<Vec<ActionEventRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM action_events WHERE execution_id = $1 AND ($2 IS NULL OR target_id = $2) ORDER BY id"
        ).bind(execution_id).bind(target_id).fetch_all(db).await?))
    }

    /// Up to `limit` action events of an execution with `id > after_id`, in order (paging
    /// through a large execution, or following it live).
    pub async fn list_action_events_after(
        &self,
        execution_id: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ActionEventRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM action_events WHERE execution_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ).bind(execution_id).bind(after_id).bind(limit).fetch_all(db).await?))
    }

    /// How many action events an execution has.
    pub async fn count_action_events(&self, execution_id: &str) -> Result<i64> {
        Ok(read!(self, db => sqlx::query_scalar(
            "SELECT COUNT(*) FROM action_events WHERE execution_id = $1"
        ).bind(execution_id).fetch_one(db).await?))
    }

    /// What a fleet says about its targets, many at once in one transaction:
    /// `(target id, running version, inventory)`; an inventory of `None`
    /// keeps the stored one, and its `kind` (device, host) replaces the
    /// enrolled one. An empty version (a host with nothing installed yet) is
    /// stored as none. A fleet reporting at once must not cost one write
    /// transaction per target. Unknown targets are skipped.
    pub async fn record_targets_seen(
        &self,
        seen: &[(String, String, Option<serde_json::Value>)],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        // One statement per chunk: a row per target was most of the
        // inventory writer's time at 100,000 devices, holding the writer.
        let seen = TargetsSeen::new(seen, ts(at), now());
        tx!(self, tx => {
            tx.update_targets_seen(&seen).await?;
        });
        Ok(())
    }

    /// Registers many fleet targets with their derived MAC keys in one
    /// transaction (`(target, key hex)`); a simulated or factory-provisioned
    /// fleet of 100,000 must not cost one transaction per device. Groups and
    /// labels are left as they are.
    pub async fn enroll_targets(&self, targets: &[(crate::NewTarget, String)]) -> Result<()> {
        for (t, _) in targets {
            if t.kind != "device" && t.kind != "host" {
                return Err(StoreError::Invalid(format!(
                    "target {}: kind {:?}, expected device or host",
                    t.id, t.kind
                )));
            }
        }
        let at = now();
        for chunk in targets.chunks(5_000) {
            tx!(self, tx => {
                for (t, key) in chunk {
                    sqlx::query(
                        "INSERT INTO targets (id, name, environment, kind, hardware_model, current_version, \
                         credential_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                         environment = excluded.environment, kind = excluded.kind, \
                         hardware_model = excluded.hardware_model, \
                         current_version = COALESCE(excluded.current_version, targets.current_version), \
                         credential_hash = excluded.credential_hash, updated_at = excluded.updated_at",
                    )
                    .bind(&t.id)
                    .bind(&t.name)
                    .bind(&t.environment)
                    .bind(&t.kind)
                    .bind(&t.hardware_model)
                    .bind(&t.current_version)
                    .bind(key)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            });
        }
        Ok(())
    }

    pub async fn insert_gate_result(&self, g: &NewGateResult) -> Result<()> {
        tx!(self, tx => insert_gate_results(&mut *tx, std::slice::from_ref(g)).await?);
        Ok(())
    }

    /// Gate results of an execution, in the order recorded.
    pub async fn list_gate_results(&self, execution_id: &str) -> Result<Vec<GateResultRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM gate_results WHERE execution_id = $1 ORDER BY id"
        ).bind(execution_id).fetch_all(db).await?))
    }
}

macro_rules! generic_inserts {
    ($conn:ty) => {
        impl GenericInserts for $conn {
            async fn insert_execution_events(&mut self, events: &[NewExecutionEvent]) -> Result<()> {
                for chunk in events.chunks(1_000) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO execution_events (execution_id, seq, kind, payload, at) ",
                    );
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(&e.execution_id)
                            .push_bind(e.seq)
                            .push_bind(&e.kind)
                            .push_bind(Json(&e.payload))
                            .push_bind(ts(e.at));
                    });
                    q.build().execute(&mut *self).await.map_err(|e| match StoreError::from(e) {
                        StoreError::Conflict(_) => StoreError::Conflict(format!(
                            "execution event seq {}..{} of {} already stored (another writer?)",
                            chunk[0].seq,
                            chunk[chunk.len() - 1].seq,
                            chunk[0].execution_id
                        )),
                        other => other,
                    })?;
                }
                Ok(())
            }

            async fn insert_outbox(&mut self, messages: &[NewOutboxMessage]) -> Result<()> {
                for chunk in messages.chunks(1_000) {
                    let at = now();
                    let mut q = QueryBuilder::new(
                        "INSERT INTO outbox (idempotency_key, channel, payload, status, attempts, available_at, created_at) ",
                    );
                    q.push_values(chunk, |mut b, m| {
                        b.push_bind(&m.idempotency_key)
                            .push_bind(&m.channel)
                            .push_bind(Json(&m.payload))
                            .push_bind("pending")
                            .push_bind(0_i64)
                            .push_bind(ts(m.available_at))
                            .push_bind(at);
                    });
                    q.push(" ON CONFLICT (idempotency_key) DO NOTHING");
                    q.build().execute(&mut *self).await?;
                }
                Ok(())
            }

            async fn insert_gate_results(&mut self, results: &[NewGateResult]) -> Result<()> {
                for chunk in results.chunks(1_000) {
                    let mut q = QueryBuilder::new(
                        "INSERT INTO gate_results (execution_id, wave_index, gate, kind, phase, passed, detail, at) ",
                    );
                    q.push_values(chunk, |mut b, g| {
                        b.push_bind(&g.execution_id)
                            .push_bind(g.wave_index)
                            .push_bind(&g.gate)
                            .push_bind(&g.kind)
                            .push_bind(&g.phase)
                            .push_bind(g.passed)
                            .push_bind(Json(&g.detail))
                            .push_bind(ts(g.at));
                    });
                    q.build().execute(&mut *self).await?;
                }
                Ok(())
            }
        }
    };
}

/// Inserts whose SQL is the same on both backends.
pub(crate) trait GenericInserts {
    async fn insert_execution_events(&mut self, events: &[NewExecutionEvent]) -> Result<()>;
    async fn insert_outbox(&mut self, messages: &[NewOutboxMessage]) -> Result<()>;
    async fn insert_gate_results(&mut self, results: &[NewGateResult]) -> Result<()>;
}

generic_inserts!(SqliteConnection);
generic_inserts!(PgConnection);

async fn insert_execution_events<C: GenericInserts + ?Sized>(
    c: &mut C,
    events: &[NewExecutionEvent],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    c.insert_execution_events(events).await
}

pub(crate) async fn insert_outbox<C: GenericInserts + ?Sized>(
    c: &mut C,
    messages: &[NewOutboxMessage],
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    c.insert_outbox(messages).await
}

async fn insert_gate_results<C: GenericInserts + ?Sized>(
    c: &mut C,
    results: &[NewGateResult],
) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    c.insert_gate_results(results).await
}

#[cfg(test)]
mod tests {
    use super::row_ranges;

    #[test]
    fn row_ranges_cover_every_row_once() {
        let r: Vec<_> = row_ranges(5, 2).collect();
        assert_eq!(r, [0..2, 2..4, 4..5]);
        assert_eq!(row_ranges(4, 2).collect::<Vec<_>>(), [0..2, 2..4]);
        assert_eq!(row_ranges(0, 2).count(), 0);
    }
}
