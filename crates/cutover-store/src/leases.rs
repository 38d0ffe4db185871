//! Leases: one owner (a server replica) per resource at a time, with an expiry. A lease that
//! is not renewed in time can be taken over; every change of owner bumps the lease's epoch.
//! Runnable executions are claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL so replicas
//! polling together never wait on, or take, the same execution.

use crate::{LeaseRow, Result, Store, chrono_duration, ts};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The lease resource that owns an execution (use it in [`crate::LeaseFence`]).
pub fn execution_lease_resource(execution_id: &str) -> String {
    format!("execution:{execution_id}")
}

/// Claims or extends the lease if it is free, expired, or already ours (one statement,
/// atomic on both backends).
const CLAIM_SQL: &str = "INSERT INTO leases (resource, owner, epoch, acquired_at, expires_at) \
     VALUES ($1, $2, 1, $3, $4) \
     ON CONFLICT (resource) DO UPDATE SET \
     epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END, \
     acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at ELSE excluded.acquired_at END, \
     owner = excluded.owner, expires_at = excluded.expires_at \
     WHERE leases.owner = excluded.owner OR leases.expires_at <= excluded.acquired_at \
     RETURNING owner";

impl Store {
    /// Takes the lease for `ttl` if nobody else holds it (or their lease expired at `now`).
    pub async fn try_claim_lease(
        &self,
        resource: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool> {
        let now = ts(now);
        let until = ts(now + chrono_duration(ttl));
        let got: Option<(String,)> = write!(self, db => sqlx::query_as(CLAIM_SQL)
            .bind(resource)
            .bind(owner)
            .bind(now)
            .bind(until)
            .fetch_optional(db)
            .await?);
        Ok(got.is_some())
    }

    /// Extends a lease we still hold; false if another owner took it (or it was released).
    pub async fn renew_lease(
        &self,
        resource: &str,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool> {
        let until = ts(ts(now) + chrono_duration(ttl));
        let n = write!(self, db => sqlx::query(
            "UPDATE leases SET expires_at = $3 WHERE resource = $1 AND owner = $2"
        ).bind(resource).bind(owner).bind(until).execute(db).await?.rows_affected());
        Ok(n == 1)
    }

    /// Gives the lease up (only if we hold it).
    pub async fn release_lease(&self, resource: &str, owner: &str) -> Result<()> {
        write!(self, db => sqlx::query("DELETE FROM leases WHERE resource = $1 AND owner = $2")
            .bind(resource).bind(owner).execute(db).await?.rows_affected());
        Ok(())
    }

    pub async fn get_lease(&self, resource: &str) -> Result<Option<LeaseRow>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM leases WHERE resource = $1")
            .bind(resource).fetch_optional(db).await?),
        )
    }

    /// Claims the leases of up to `limit` unfinished executions (pending, running, paused)
    /// that nobody holds (or whose lease expired, or that are already ours), oldest first.
    /// Returns their ids only: an execution's spec lists every target, megabytes for a
    /// large fleet, and the poller needs the rows of newly claimed executions alone.
    pub async fn claim_runnable_executions(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        limit: i64,
    ) -> Result<Vec<String>> {
        let now = ts(now);
        let until = ts(now + chrono_duration(ttl));
        let lock = match self.backend() {
            crate::BackendKind::Postgres => " FOR UPDATE OF e SKIP LOCKED",
            crate::BackendKind::Sqlite => "",
        };
        let runnable = "SELECT e.id FROM executions e LEFT JOIN leases l ON l.resource = 'execution:' || e.id \
             WHERE e.status IN ('pending', 'running', 'paused') \
             AND (l.resource IS NULL OR l.owner = $1 OR l.expires_at <= $2) \
             ORDER BY e.created_at, e.id LIMIT $3";
        // Most polls find only executions this owner already holds. Those are
        // answered from a read, without the write transaction: on SQLite it
        // would queue behind the commit of a large step for a second or more.
        let (candidates, held): (Vec<(String,)>, Vec<(String,)>) = read!(self, db => {
            let candidates: Vec<(String,)> = sqlx::query_as(runnable)
                .bind(owner)
                .bind(now)
                .bind(limit)
                .fetch_all(db)
                .await?;
            let held: Vec<(String,)> = sqlx::query_as(
                "SELECT resource FROM leases WHERE owner = $1 AND expires_at > $2",
            )
            .bind(owner)
            .bind(now)
            .fetch_all(db)
            .await?;
            (candidates, held)
        });
        let held: std::collections::HashSet<String> = held.into_iter().map(|(r,)| r).collect();
        if candidates
            .iter()
            .all(|(id,)| held.contains(&execution_lease_resource(id)))
        {
            return Ok(candidates.into_iter().map(|(id,)| id).collect());
        }
        let select = sqlx::AssertSqlSafe(format!("{runnable}{lock}"));
        let claimed: Vec<String> = tx!(self, tx => {
            let candidates: Vec<(String,)> = sqlx::query_as(select)
                .bind(owner)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            // Leases this owner holds and that are still valid are not written
            // again here (`renew_lease` extends them): the orchestrator's
            // commits hold them FOR SHARE while they update the execution row
            // this query has just locked, and writing them would deadlock.
            let held: Vec<(String,)> = sqlx::query_as(
                "SELECT resource FROM leases WHERE owner = $1 AND expires_at > $2",
            )
            .bind(owner)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            let held: std::collections::HashSet<String> = held.into_iter().map(|(r,)| r).collect();
            let mut claimed = Vec::with_capacity(candidates.len());
            for (id,) in candidates {
                if held.contains(&execution_lease_resource(&id)) {
                    claimed.push(id);
                    continue;
                }
                let got: Option<(String,)> = sqlx::query_as(CLAIM_SQL)
                    .bind(execution_lease_resource(&id))
                    .bind(owner)
                    .bind(now)
                    .bind(until)
                    .fetch_optional(&mut *tx)
                    .await?;
                if got.is_some() {
                    claimed.push(id);
                }
            }
            claimed
        });
        Ok(claimed)
    }
}
