//! The store's error type: what callers match on (not found, conflict, invalid input) apart
//! from the database's own failures.

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule or a compare-and-set refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The input is not acceptable (bad URL, unknown reference, failed check).
    #[error("invalid: {0}")]
    Invalid(String),
    /// Running the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(sqlx::Error),
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(ref db) => {
                if db.is_unique_violation() {
                    StoreError::Conflict(db.message().to_string())
                } else if db.is_foreign_key_violation() {
                    StoreError::Invalid(format!("reference to a missing row: {}", db.message()))
                } else if db.is_check_violation() {
                    StoreError::Invalid(format!("value refused by a check: {}", db.message()))
                } else {
                    StoreError::Backend(e)
                }
            }
            other => StoreError::Backend(other),
        }
    }
}

impl StoreError {
    /// True for [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound)
    }
}
