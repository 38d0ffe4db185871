//! Plans, their approvals and their schedules. A plan's status only moves by compare-and-set,
//! so two operators (or two replicas) cannot both act on the same state.

use crate::{
    ApprovalRow, NewApproval, NewPlan, NewSchedule, PlanRow, Result, ScheduleRow, Store,
    StoreError, new_id, now, ts,
};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::types::Json;

/// Plan statuses the store accepts.
pub const PLAN_STATUSES: &[&str] = &[
    "draft",
    "pending_approval",
    "approved",
    "executing",
    "completed",
    "failed",
    "canceled",
    "rejected",
];

fn check_plan_status(s: &str) -> Result<()> {
    if PLAN_STATUSES.contains(&s) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "plan status {s:?}, expected one of {}",
            PLAN_STATUSES.join(", ")
        )))
    }
}

impl Store {
    pub async fn insert_plan(&self, p: &NewPlan) -> Result<PlanRow> {
        let status = if p.status.is_empty() {
            "draft"
        } else {
            p.status.as_str()
        };
        check_plan_status(status)?;
        let id = p.id.clone().unwrap_or_else(|| new_id("plan"));
        let at = now();
        Ok(write!(self, db => sqlx::query_as(
            "INSERT INTO plans (id, name, artifact_id, version, source_environment, target_environment, \
             strategy, spec, status, revision, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $11) RETURNING *",
        )
        .bind(&id)
        .bind(&p.name)
        .bind(&p.artifact_id)
        .bind(&p.version)
        .bind(&p.source_environment)
        .bind(&p.target_environment)
        .bind(&p.strategy)
        .bind(Json(&p.spec))
        .bind(status)
        .bind(&p.created_by)
        .bind(at)
        .fetch_one(db)
        .await?))
    }

    pub async fn get_plan(&self, id: &str) -> Result<PlanRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM plans WHERE id = $1")
            .bind(id).fetch_one(db).await?),
        )
    }

    /// The newest plans first.
    pub async fn list_plans(&self, limit: i64) -> Result<Vec<PlanRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM plans ORDER BY created_at DESC, id DESC LIMIT $1"
        ).bind(limit).fetch_all(db).await?))
    }

    /// Moves the plan to `to` if its status is one of `from` (compare-and-set); otherwise
    /// `Conflict` naming the status it has, or `NotFound`.
    pub async fn transition_plan(&self, id: &str, from: &[&str], to: &str) -> Result<PlanRow> {
        check_plan_status(to)?;
        if from.is_empty() {
            return Err(StoreError::Invalid(
                "transition_plan: `from` lists no status".into(),
            ));
        }
        let at = now();
        let row: Option<PlanRow> = write!(self, db => {
            let mut q = QueryBuilder::new("UPDATE plans SET status = ");
            q.push_bind(to.to_string());
            q.push(", revision = revision + 1, updated_at = ").push_bind(at);
            q.push(" WHERE id = ").push_bind(id.to_string());
            q.push(" AND status IN (");
            let mut sep = q.separated(", ");
            for s in from {
                sep.push_bind(s.to_string());
            }
            q.push(") RETURNING *");
            q.build_query_as().fetch_optional(db).await?
        });
        match row {
            Some(r) => Ok(r),
            None => {
                let current = self.get_plan(id).await?;
                Err(StoreError::Conflict(format!(
                    "plan {id} is {}, expected {}",
                    current.status,
                    from.join(" or ")
                )))
            }
        }
    }

    /// Records one approver's decision; the same approver twice is a `Conflict`.
    pub async fn insert_approval(&self, a: &NewApproval) -> Result<ApprovalRow> {
        if a.decision != "approve" && a.decision != "reject" {
            return Err(StoreError::Invalid(format!(
                "approval decision {:?}, expected approve or reject",
                a.decision
            )));
        }
        let res = write!(self, db => sqlx::query_as(
            "INSERT INTO approvals (id, plan_id, approver, decision, comment, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        )
        .bind(new_id("appr"))
        .bind(&a.plan_id)
        .bind(&a.approver)
        .bind(&a.decision)
        .bind(&a.comment)
        .bind(now())
        .fetch_one(db)
        .await);
        res.map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "{} has already decided on plan {}",
                a.approver, a.plan_id
            )),
            StoreError::Invalid(_) => {
                StoreError::Invalid(format!("plan {} does not exist", a.plan_id))
            }
            other => other,
        })
    }

    /// Approvals of a plan, oldest first.
    pub async fn list_approvals(&self, plan_id: &str) -> Result<Vec<ApprovalRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM approvals WHERE plan_id = $1 ORDER BY created_at, id"
        ).bind(plan_id).fetch_all(db).await?))
    }

    pub async fn insert_schedule(&self, s: &NewSchedule) -> Result<ScheduleRow> {
        if let Some(end) = s.window_end
            && end < s.run_at
        {
            return Err(StoreError::Invalid(format!(
                "schedule for plan {}: window ends ({end}) before it starts ({})",
                s.plan_id, s.run_at
            )));
        }
        Ok(write!(self, db => sqlx::query_as(
            "INSERT INTO schedules (id, plan_id, run_at, window_end, status, created_by, created_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6) RETURNING *",
        )
        .bind(new_id("sched"))
        .bind(&s.plan_id)
        .bind(ts(s.run_at))
        .bind(s.window_end.map(ts))
        .bind(&s.created_by)
        .bind(now())
        .fetch_one(db)
        .await?))
    }

    /// Pending schedules whose time has come, earliest first.
    pub async fn due_schedules(&self, now: DateTime<Utc>) -> Result<Vec<ScheduleRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM schedules WHERE status = 'pending' AND run_at <= $1 ORDER BY run_at, id"
        ).bind(ts(now)).fetch_all(db).await?))
    }

    /// Schedules of one plan (or all), earliest first.
    pub async fn list_schedules(&self, plan_id: Option<&str>) -> Result<Vec<ScheduleRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM schedules WHERE ($1 IS NULL OR plan_id = $1) ORDER BY run_at, id"
        ).bind(plan_id).fetch_all(db).await?))
    }

    /// Moves a pending schedule to `fired`, `canceled` or `missed` (compare-and-set: a
    /// schedule fires once even with several schedulers). Returns false if it was not pending.
    pub async fn mark_schedule(&self, id: &str, status: &str, at: DateTime<Utc>) -> Result<bool> {
        if !["fired", "canceled", "missed"].contains(&status) {
            return Err(StoreError::Invalid(format!(
                "schedule status {status:?}, expected fired, canceled or missed"
            )));
        }
        let n = write!(self, db => sqlx::query(
            "UPDATE schedules SET status = $2, fired_at = $3 WHERE id = $1 AND status = 'pending'"
        ).bind(id).bind(status).bind(ts(at)).execute(db).await?.rows_affected());
        Ok(n == 1)
    }
}
