//! API keys (found by their public prefix, checked by comparing an HMAC of the whole key) and
//! users.

use crate::{ApiKeyRow, NewApiKey, NewUser, Result, Store, StoreError, UserRow, new_id, now, ts};
use chrono::{DateTime, Utc};

impl Store {
    /// Stores a key's prefix and hash; a prefix already used is a `Conflict`.
    pub async fn insert_api_key(&self, k: &NewApiKey) -> Result<ApiKeyRow> {
        if k.prefix.is_empty() || k.hash.is_empty() {
            return Err(StoreError::Invalid(
                "api key: prefix and hash must not be empty".into(),
            ));
        }
        let id = k.id.clone().unwrap_or_else(|| new_id("key"));
        let res = write!(self, db => sqlx::query_as(
            "INSERT INTO api_keys (id, prefix, hash, name, role, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        )
        .bind(&id)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.name)
        .bind(&k.role)
        .bind(&k.created_by)
        .bind(now())
        .bind(k.expires_at.map(ts))
        .fetch_one(db)
        .await);
        res.map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("api key prefix {} is already used", k.prefix))
            }
            other => other,
        })
    }

    /// The key with this prefix, revoked or not (the caller checks `revoked_at` and `expires_at`).
    pub async fn find_api_key(&self, prefix: &str) -> Result<Option<ApiKeyRow>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM api_keys WHERE prefix = $1")
            .bind(prefix).fetch_optional(db).await?),
        )
    }

    pub async fn get_api_key(&self, id: &str) -> Result<ApiKeyRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM api_keys WHERE id = $1")
            .bind(id).fetch_one(db).await?),
        )
    }

    /// Every key, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(db).await?),
        )
    }

    /// Revokes a key; revoking again keeps the first time.
    pub async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let n = write!(self, db => sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1"
        ).bind(id).bind(ts(at)).execute(db).await?.rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Creates or updates a user by username; a `None` password hash keeps the stored one.
    pub async fn upsert_user(&self, u: &NewUser) -> Result<UserRow> {
        if u.username.is_empty() {
            return Err(StoreError::Invalid(
                "user: username must not be empty".into(),
            ));
        }
        let at = now();
        Ok(write!(self, db => sqlx::query_as(
            "INSERT INTO users (id, username, display_name, email, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (username) DO UPDATE SET display_name = excluded.display_name, \
             email = excluded.email, role = excluded.role, \
             password_hash = COALESCE(excluded.password_hash, users.password_hash), \
             updated_at = excluded.updated_at RETURNING *",
        )
        .bind(new_id("user"))
        .bind(&u.username)
        .bind(&u.display_name)
        .bind(&u.email)
        .bind(&u.role)
        .bind(&u.password_hash)
        .bind(at)
        .fetch_one(db)
        .await?))
    }

    pub async fn get_user(&self, username: &str) -> Result<UserRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM users WHERE username = $1")
            .bind(username).fetch_one(db).await?),
        )
    }
}
