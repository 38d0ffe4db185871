//! The audit log, hash-chained: each row stores `sha256(prev_hash || canonical row)`, so a
//! row changed or removed behind the store's back breaks the chain at that row.
//! `verify_audit` recomputes the chain. Removing the newest rows leaves a shorter chain that
//! is valid on its own, so every append also moves `audit_head` (the newest seq and hash)
//! forward in the same transaction, and verification compares the chain's end with it.
//! [`Store::audit_head`] gives that pair for keeping outside the database too.

use crate::{AuditFilter, AuditRow, AuditVerification, NewAuditEntry, Result, Store, now, ts};
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use sqlx::QueryBuilder;

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(sqlx::FromRow)]
struct RawAudit {
    seq: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    subject: String,
    source_ip: Option<String>,
    result: String,
    details: String,
    prev_hash: String,
    hash: String,
}

impl RawAudit {
    fn canonical(&self) -> String {
        canonical_audit_row(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            &self.subject,
            self.source_ip.as_deref(),
            &self.result,
            &self.details,
        )
    }

    fn into_row(self) -> AuditRow {
        AuditRow {
            details: serde_json::from_str(&self.details)
                .unwrap_or(serde_json::Value::String(self.details.clone())),
            seq: self.seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            subject: self.subject,
            source_ip: self.source_ip,
            result: self.result,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// The exact bytes hashed for one audit row: a JSON array of its fields, the timestamp in
/// RFC 3339 with microseconds, `details` as the stored JSON text.
#[allow(clippy::too_many_arguments)]
pub fn canonical_audit_row(
    seq: i64,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    subject: &str,
    source_ip: Option<&str>,
    result: &str,
    details: &str,
) -> String {
    serde_json::json!([
        seq,
        at.to_rfc3339_opts(SecondsFormat::Micros, true),
        actor,
        action,
        subject,
        source_ip,
        result,
        details
    ])
    .to_string()
}

/// `sha256(prev_hash || canonical)` in lowercase hex.
pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

impl Store {
    /// Appends an entry to the chain (serialised: one append at a time).
    pub async fn append_audit(&self, e: &NewAuditEntry) -> Result<AuditRow> {
        let at = e.at.map(ts).unwrap_or_else(now);
        let details = serde_json::to_string(&e.details).unwrap_or_else(|_| "null".into());
        let pg = self.backend() == crate::BackendKind::Postgres;
        let raw: RawAudit = tx!(self, tx => {
            if pg {
                // Appends take turns; readers are not blocked.
                sqlx::query("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            // The head, not the log's last row, is what the next row chains to: rows removed
            // from the end then show up as missing instead of being silently re-used.
            let last: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let (seq, prev_hash) = match last {
                Some((s, h)) => (s + 1, h),
                None => (1, GENESIS_HASH.to_string()),
            };
            let mut raw = RawAudit {
                seq,
                at,
                actor: e.actor.clone(),
                action: e.action.clone(),
                subject: e.subject.clone(),
                source_ip: e.source_ip.clone(),
                result: e.result.clone(),
                details: details.clone(),
                prev_hash,
                hash: String::new(),
            };
            raw.hash = chain_hash(&raw.prev_hash, &raw.canonical());
            sqlx::query(
                "INSERT INTO audit_log (seq, at, actor, action, subject, source_ip, result, details, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(raw.seq)
            .bind(raw.at)
            .bind(&raw.actor)
            .bind(&raw.action)
            .bind(&raw.subject)
            .bind(&raw.source_ip)
            .bind(&raw.result)
            .bind(&raw.details)
            .bind(&raw.prev_hash)
            .bind(&raw.hash)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(raw.seq)
            .bind(&raw.hash)
            .execute(&mut *tx)
            .await?;
            raw
        });
        Ok(raw.into_row())
    }

    /// Audit entries matching the filter, oldest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        let raws: Vec<RawAudit> = read!(self, db => {
            let mut q = QueryBuilder::new("SELECT * FROM audit_log WHERE 1=1");
            if let Some(v) = &f.actor {
                q.push(" AND actor = ").push_bind(v.clone());
            }
            if let Some(v) = &f.action {
                q.push(" AND action = ").push_bind(v.clone());
            }
            if let Some(v) = &f.subject {
                q.push(" AND subject = ").push_bind(v.clone());
            }
            if let Some(v) = f.since {
                q.push(" AND at >= ").push_bind(ts(v));
            }
            if let Some(v) = f.until {
                q.push(" AND at < ").push_bind(ts(v));
            }
            if let Some(v) = f.after_seq {
                q.push(" AND seq > ").push_bind(v);
            }
            q.push(" ORDER BY seq LIMIT ").push_bind(f.limit.unwrap_or(1000));
            q.build_query_as().fetch_all(db).await?
        });
        Ok(raws.into_iter().map(RawAudit::into_row).collect())
    }

    /// Recomputes the whole chain; names the first row that was changed or is missing.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        let mut expected_seq = 1_i64;
        let mut prev_hash = GENESIS_HASH.to_string();
        loop {
            let page: Vec<RawAudit> = read!(self, db => sqlx::query_as(
                "SELECT * FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 2000"
            ).bind(expected_seq).fetch_all(db).await?);
            if page.is_empty() {
                return self.compare_with_head(expected_seq - 1, &prev_hash).await;
            }
            for raw in page {
                if raw.seq != expected_seq {
                    return Ok(AuditVerification::Broken {
                        seq: expected_seq,
                        reason: format!(
                            "row {expected_seq} is missing (the next row is {})",
                            raw.seq
                        ),
                    });
                }
                if raw.prev_hash != prev_hash {
                    return Ok(AuditVerification::Broken {
                        seq: raw.seq,
                        reason: format!(
                            "row {} does not chain to row {}: its prev_hash differs from that row's hash",
                            raw.seq,
                            raw.seq - 1
                        ),
                    });
                }
                let recomputed = chain_hash(&raw.prev_hash, &raw.canonical());
                if recomputed != raw.hash {
                    return Ok(AuditVerification::Broken {
                        seq: raw.seq,
                        reason: format!(
                            "row {} was changed: its content does not match its hash",
                            raw.seq
                        ),
                    });
                }
                prev_hash = raw.hash;
                expected_seq += 1;
            }
        }
    }

    /// The newest audit row's `(seq, hash)` as recorded by the appends; `None` before the
    /// first entry. Kept outside the database (a log line, a backup), it also catches a
    /// rewrite of the whole store.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(db)
            .await?),
        )
    }

    /// Compares the end of a chain that verified row by row with the recorded head.
    async fn compare_with_head(&self, rows: i64, last_hash: &str) -> Result<AuditVerification> {
        let broken = |seq, reason: String| Ok(AuditVerification::Broken { seq, reason });
        match self.audit_head().await? {
            None if rows == 0 => Ok(AuditVerification::Ok { rows }),
            None => broken(
                rows,
                format!("the recorded head is missing but the log holds {rows} rows"),
            ),
            Some((head, _)) if head > rows => broken(
                rows + 1,
                if head == rows + 1 {
                    format!("row {head} is missing: the recorded head is row {head}")
                } else {
                    format!(
                        "rows {} to {head} are missing: the recorded head is row {head}",
                        rows + 1
                    )
                },
            ),
            Some((head, _)) if head < rows => broken(
                head + 1,
                format!(
                    "row {} was added behind the store's back: the recorded head is row {head}",
                    head + 1
                ),
            ),
            Some((_, hash)) if hash != last_hash => broken(
                rows,
                format!("row {rows} does not match the recorded head's hash"),
            ),
            Some(_) => Ok(AuditVerification::Ok { rows }),
        }
    }
}
