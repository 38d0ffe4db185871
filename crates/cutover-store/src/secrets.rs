//! Encrypted secrets at rest. The store never sees plaintext: the server seals each value
//! (AES-256-GCM) and stores the ciphertext with the id of the key used, so a key rotation
//! re-seals the rows of the old key one by one.

use crate::{NewSecret, Result, SecretRow, Store, StoreError, now};

impl Store {
    /// Creates or replaces a secret.
    pub async fn put_secret(&self, s: &NewSecret) -> Result<SecretRow> {
        if s.name.is_empty() || s.key_id.is_empty() {
            return Err(StoreError::Invalid(
                "secret: name and key_id must not be empty".into(),
            ));
        }
        Ok(write!(self, db => sqlx::query_as(
            "INSERT INTO secrets (name, key_id, ciphertext, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id, ciphertext = excluded.ciphertext, \
             updated_at = excluded.updated_at RETURNING *",
        )
        .bind(&s.name)
        .bind(&s.key_id)
        .bind(&s.ciphertext)
        .bind(now())
        .fetch_one(db)
        .await?))
    }

    pub async fn get_secret(&self, name: &str) -> Result<SecretRow> {
        Ok(
            read!(self, db => sqlx::query_as("SELECT * FROM secrets WHERE name = $1")
            .bind(name).fetch_one(db).await?),
        )
    }

    /// Secrets sealed with `key_id` (all when `None`), by name: what a rotation re-seals.
    pub async fn list_secrets(&self, key_id: Option<&str>) -> Result<Vec<SecretRow>> {
        Ok(read!(self, db => sqlx::query_as(
            "SELECT * FROM secrets WHERE ($1 IS NULL OR key_id = $1) ORDER BY name"
        ).bind(key_id).fetch_all(db).await?))
    }

    pub async fn delete_secret(&self, name: &str) -> Result<()> {
        let n = write!(self, db => sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name).execute(db).await?.rows_affected());
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
