//! The outbox: notifications written in the same transaction as the change that causes them,
//! then delivered at least once by a notifier that claims them for a while, completes them or
//! schedules a retry. A repeated idempotency key is stored once.

use crate::{NewOutboxMessage, OutboxRow, Result, Store, StoreError, chrono_duration, now, ts};
use chrono::{DateTime, Utc};
use std::time::Duration;

impl Store {
    /// Queues a notification; a message with an idempotency key already queued is ignored.
    pub async fn enqueue_outbox(&self, m: &NewOutboxMessage) -> Result<()> {
        tx!(self, tx => crate::executions::insert_outbox(&mut *tx, std::slice::from_ref(m)).await?);
        Ok(())
    }

    /// Claims up to `limit` messages that are due (or whose earlier claim expired) for
    /// `lease`; several notifiers never get the same message while a claim lasts.
    pub async fn claim_outbox(
        &self,
        owner: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>> {
        let now = ts(now);
        let until = ts(now + chrono_duration(lease));
        let lock = match self.backend() {
            crate::BackendKind::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::BackendKind::Sqlite => "",
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET status = 'claimed', claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM outbox WHERE \
             (status = 'pending' AND available_at <= $3) OR (status = 'claimed' AND claimed_until <= $3) \
             ORDER BY available_at, id LIMIT $4{lock}) RETURNING *"
        ));
        let mut rows: Vec<OutboxRow> = write!(self, db => sqlx::query_as(sql)
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(db)
            .await?);
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Marks a message delivered.
    pub async fn complete_outbox(&self, id: i64) -> Result<()> {
        let n = write!(self, db => sqlx::query(
            "UPDATE outbox SET status = 'done', completed_at = $2, claimed_until = NULL WHERE id = $1"
        ).bind(id).bind(now()).execute(db).await?.rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records a failed delivery and makes the message due again at `retry_at`.
    pub async fn fail_outbox(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<()> {
        let n = write!(self, db => sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = attempts + 1, last_error = $2, \
             available_at = $3, claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND status <> 'done'"
        ).bind(id).bind(error).bind(ts(retry_at)).execute(db).await?.rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn get_outbox(&self, id: i64) -> Result<OutboxRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM outbox WHERE id = $1")
            .bind(id).fetch_one(db).await?),
        )
    }

    /// Every message, oldest first (operators and tests).
    pub async fn list_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM outbox ORDER BY id LIMIT $1")
            .bind(limit).fetch_all(db).await?),
        )
    }
}
