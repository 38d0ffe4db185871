//! Environments, targets (with their groups and labels) and artifacts: what can be deployed
//! and where.

use crate::{
    ArtifactRow, EnvironmentRow, NewArtifact, NewTarget, Result, Store, StoreError, TargetFilter,
    TargetRow, new_id, now, ts,
};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::types::Json;
use std::collections::HashMap;

/// `(target_id, group_name)`.
type GroupRow = (String, String);
/// `(target_id, key, value)`.
type LabelRow = (String, String, String);

const TARGET_COLUMNS: &str = "id, name, environment, kind, hardware_model, current_version, inventory, \
     credential_hash, last_seen_at, created_at, updated_at";

const ARTIFACT_COLUMNS: &str = "id, version, kind, sha256, size_bytes, signature, signing_key_id, \
     storage_path, compatible_hardware, min_current_version, metadata, created_at";

impl Store {
    /// Creates or updates an environment (by name); `created_at` is kept on update.
    pub async fn upsert_environment(&self, env: &EnvironmentRow) -> Result<()> {
        let at = now();
        write!(self, db => {
            sqlx::query(
                "INSERT INTO environments (name, position, approval_required, required_approvals, \
                 auto_rollback, max_concurrent_deployments, config, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
                 approval_required = excluded.approval_required, \
                 required_approvals = excluded.required_approvals, \
                 auto_rollback = excluded.auto_rollback, \
                 max_concurrent_deployments = excluded.max_concurrent_deployments, \
                 config = excluded.config, updated_at = excluded.updated_at",
            )
            .bind(&env.name)
            .bind(env.position)
            .bind(env.approval_required)
            .bind(env.required_approvals)
            .bind(env.auto_rollback)
            .bind(env.max_concurrent_deployments)
            .bind(Json(&env.config))
            .bind(at)
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Environments in promotion order.
    pub async fn list_environments(&self) -> Result<Vec<EnvironmentRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM environments ORDER BY position, name"
        ).fetch_all(db).await?))
    }

    pub async fn get_environment(&self, name: &str) -> Result<EnvironmentRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM environments WHERE name = $1")
            .bind(name).fetch_one(db).await?),
        )
    }

    /// Creates or updates a target by id; its groups and labels are replaced by the given ones.
    pub async fn upsert_target(&self, t: &NewTarget) -> Result<TargetRow> {
        if t.kind != "device" && t.kind != "host" {
            return Err(StoreError::Invalid(format!(
                "target {}: kind {:?}, expected device or host",
                t.id, t.kind
            )));
        }
        let at = now();
        tx!(self, tx => {
            sqlx::query(
                "INSERT INTO targets (id, name, environment, kind, hardware_model, current_version, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 environment = excluded.environment, kind = excluded.kind, \
                 hardware_model = excluded.hardware_model, \
                 current_version = COALESCE(excluded.current_version, targets.current_version), \
                 updated_at = excluded.updated_at",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.environment)
            .bind(&t.kind)
            .bind(&t.hardware_model)
            .bind(&t.current_version)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM target_groups WHERE target_id = $1").bind(&t.id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM target_labels WHERE target_id = $1").bind(&t.id).execute(&mut *tx).await?;
            for g in &t.groups {
                sqlx::query("INSERT INTO target_groups (target_id, group_name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&t.id).bind(g).execute(&mut *tx).await?;
            }
            for (k, v) in &t.labels {
                sqlx::query("INSERT INTO target_labels (target_id, key, value) VALUES ($1, $2, $3)")
                    .bind(&t.id).bind(k).bind(v).execute(&mut *tx).await?;
            }
        });
        self.get_target(&t.id).await
    }

    pub async fn get_target(&self, id: &str) -> Result<TargetRow> {
        let mut rows = self
            .list_targets(&TargetFilter {
                ids: Some(vec![id.to_string()]),
                ..Default::default()
            })
            .await?;
        rows.pop().ok_or(StoreError::NotFound)
    }

    /// Targets matching every field of the filter, by id, with their groups and labels.
    pub async fn list_targets(&self, f: &TargetFilter) -> Result<Vec<TargetRow>> {
        let mut rows: Vec<TargetRow> = read!(self, db => {
            let mut q = QueryBuilder::new(format!("SELECT {TARGET_COLUMNS} FROM targets t WHERE 1=1"));
            if let Some(env) = &f.environment {
                q.push(" AND t.environment = ").push_bind(env.clone());
            }
            if let Some(kind) = &f.kind {
                q.push(" AND t.kind = ").push_bind(kind.clone());
            }
            if let Some(hw) = &f.hardware_model {
                q.push(" AND t.hardware_model = ").push_bind(hw.clone());
            }
            if let Some(g) = &f.group {
                q.push(" AND EXISTS (SELECT 1 FROM target_groups g WHERE g.target_id = t.id AND g.group_name = ")
                    .push_bind(g.clone())
                    .push(")");
            }
            for (k, v) in &f.labels {
                q.push(" AND EXISTS (SELECT 1 FROM target_labels l WHERE l.target_id = t.id AND l.key = ")
                    .push_bind(k.clone())
                    .push(" AND l.value = ")
                    .push_bind(v.clone())
                    .push(")");
            }
            if let Some(ids) = &f.ids {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                q.push(" AND t.id IN (");
                let mut sep = q.separated(", ");
                for id in ids {
                    sep.push_bind(id.clone());
                }
                q.push(")");
            }
            q.push(" ORDER BY t.id");
            if let Some(limit) = f.limit {
                q.push(" LIMIT ").push_bind(limit);
            }
            q.build_query_as().fetch_all(db).await?
        });
        if rows.is_empty() {
            return Ok(rows);
        }
        let index: HashMap<String, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        // Groups and labels of the listed targets, fetched in chunks of ids.
        for chunk in rows
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
            .chunks(5_000)
        {
            let (groups, labels): (Vec<GroupRow>, Vec<LabelRow>) = read!(self, db => {
                let mut q = QueryBuilder::new("SELECT target_id, group_name FROM target_groups WHERE target_id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id.clone());
                }
                q.push(") ORDER BY target_id, group_name");
                let groups = q.build_query_as().fetch_all(db).await?;
                let mut q = QueryBuilder::new("SELECT target_id, key, value FROM target_labels WHERE target_id IN (");
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id.clone());
                }
                q.push(") ORDER BY target_id, key");
                let labels = q.build_query_as().fetch_all(db).await?;
                (groups, labels)
            });
            for (id, g) in groups {
                if let Some(&i) = index.get(&id) {
                    rows[i].groups.push(g);
                }
            }
            for (id, k, v) in labels {
                if let Some(&i) = index.get(&id) {
                    rows[i].labels.insert(k, v);
                }
            }
        }
        Ok(rows)
    }

    /// Records what an agent reported about itself (hello or heartbeat).
    pub async fn update_target_inventory(
        &self,
        id: &str,
        current_version: &str,
        inventory: &serde_json::Value,
        seen_at: DateTime<Utc>,
    ) -> Result<()> {
        let n = write!(self, db => sqlx::query(
            "UPDATE targets SET current_version = $2, inventory = $3, last_seen_at = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(current_version)
        .bind(Json(inventory))
        .bind(ts(seen_at))
        .bind(now())
        .execute(db)
        .await?
        .rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Stores the hash of the target's own credential.
    pub async fn set_target_credential(&self, id: &str, credential_hash: &str) -> Result<()> {
        let n = write!(self, db => sqlx::query(
            "UPDATE targets SET credential_hash = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(credential_hash)
        .bind(now())
        .execute(db)
        .await?
        .rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records an artifact. The same sha256 again returns the stored row; the same version and
    /// kind with another sha256 is a conflict (artifacts are immutable).
    pub async fn insert_artifact(&self, a: &NewArtifact) -> Result<ArtifactRow> {
        if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Invalid(format!(
                "artifact {} {}: sha256 must be 64 hex digits, found {:?}",
                a.kind, a.version, a.sha256
            )));
        }
        let sha = a.sha256.to_ascii_lowercase();
        if let Some(existing) = self.find_artifact(&a.version, &a.kind).await? {
            if existing.sha256 == sha {
                return Ok(existing);
            }
            return Err(StoreError::Conflict(format!(
                "artifact {} {} already exists with sha256 {}",
                a.kind, a.version, existing.sha256
            )));
        }
        let id = a.id.clone().unwrap_or_else(|| new_id("art"));
        let at = now();
        let res: Result<ArtifactRow> = write!(self, db => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO artifacts ({ARTIFACT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             RETURNING {ARTIFACT_COLUMNS}"
        )))
        .bind(&id)
        .bind(&a.version)
        .bind(&a.kind)
        .bind(&sha)
        .bind(a.size_bytes)
        .bind(&a.signature)
        .bind(&a.signing_key_id)
        .bind(&a.storage_path)
        .bind(Json(&a.compatible_hardware))
        .bind(&a.min_current_version)
        .bind(Json(&a.metadata))
        .bind(at)
        .fetch_one(db)
        .await
        .map_err(StoreError::from));
        match res {
            Err(StoreError::Conflict(msg)) => {
                // Raced with another insert: same content is fine.
                match self.find_artifact(&a.version, &a.kind).await? {
                    Some(existing) if existing.sha256 == sha => Ok(existing),
                    _ => Err(StoreError::Conflict(format!(
                        "artifact {} {}: {msg}",
                        a.kind, a.version
                    ))),
                }
            }
            other => other,
        }
    }

    pub async fn get_artifact(&self, id: &str) -> Result<ArtifactRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM artifacts WHERE id = $1")
            .bind(id).fetch_one(db).await?),
        )
    }

    pub async fn find_artifact(&self, version: &str, kind: &str) -> Result<Option<ArtifactRow>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM artifacts WHERE version = $1 AND kind = $2")
            .bind(version).bind(kind).fetch_optional(db).await?),
        )
    }

    /// Every artifact, newest first.
    pub async fn list_artifacts(&self) -> Result<Vec<ArtifactRow>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM artifacts ORDER BY created_at DESC, id DESC")
            .fetch_all(db).await?),
        )
    }
}
