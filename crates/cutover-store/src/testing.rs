//! A fresh store for tests, on either backend: a SQLite file in a temporary directory, or a
//! new schema in the PostgreSQL database named by `CUTOVER_TEST_DATABASE_URL`, dropped when
//! the [`TestDb`] is dropped (also when the test panics).
//!
//! When `CUTOVER_TEST_DATABASE_URL` is unset, [`TestDb::postgres`] returns `None` so the test
//! can skip, except when `CI=true`, where it panics: CI must run the PostgreSQL stories.

use crate::{BackendKind, ConnectOptions, Store};

/// The variable naming the PostgreSQL server for tests.
pub const TEST_DATABASE_ENV: &str = "CUTOVER_TEST_DATABASE_URL";

/// A store on a fresh database that is removed on drop.
pub struct TestDb {
    pub store: Store,
    url: String,
    admin_url: Option<String>,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("url", &crate::redact_url(&self.url))
            .finish()
    }
}

impl TestDb {
    /// A store on a new SQLite file.
    pub async fn sqlite() -> TestDb {
        let dir =
            tempfile::tempdir().expect("creating a temporary directory for the test database");
        let url = format!("sqlite://{}", dir.path().join("cutover.db").display());
        let store = Store::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("opening test database {url}: {e}"));
        TestDb {
            store,
            url,
            admin_url: None,
            schema: None,
            _dir: Some(dir),
        }
    }

    /// A store in a new schema of `CUTOVER_TEST_DATABASE_URL`; `None` (with a note on stderr)
    /// when the variable is unset, a panic when it is unset and `CI=true`.
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = match postgres_url_or_skip() {
            Some(u) => u,
            None => return None,
        };
        let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
        Some(Self::postgres_schema(&admin_url, &schema).await)
    }

    /// A store in the (new) schema `schema` of the PostgreSQL database at `admin_url`.
    pub async fn postgres_schema(admin_url: &str, schema: &str) -> TestDb {
        create_schema(admin_url, schema).await;
        let store = Store::connect_with(
            admin_url,
            &ConnectOptions {
                schema: Some(schema.to_string()),
                max_connections: 4,
                ..Default::default()
            },
        )
        .await;
        match store {
            Ok(store) => TestDb {
                store,
                url: url_with_schema(admin_url, schema),
                admin_url: Some(admin_url.to_string()),
                schema: Some(schema.to_string()),
                _dir: None,
            },
            Err(e) => {
                drop_schema(admin_url, schema).await;
                panic!("opening test schema {schema}: {e}")
            }
        }
    }

    /// A fresh store on the given backend (`None`: PostgreSQL not configured, skip).
    pub async fn new(kind: BackendKind) -> Option<TestDb> {
        match kind {
            BackendKind::Sqlite => Some(Self::sqlite().await),
            BackendKind::Postgres => Self::postgres().await,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A URL another process (or another `Store`) can open to reach the same database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL schema, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(admin), Some(schema)) = (self.admin_url.clone(), self.schema.clone()) else {
            return;
        };
        let store = self.store.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with
        // its own runtime.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping the test schema");
            rt.block_on(async move {
                // The pool's connections belong to the test's runtime, which is blocked in
                // this drop while a server may still hold one: closing them from here can
                // wait forever, so give it a moment and then drop the schema regardless.
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), store.close()).await;
                drop_schema(&admin, &schema).await;
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("note: dropping a test schema failed");
        }
    }
}

/// `CUTOVER_TEST_DATABASE_URL`, or `None` when unset (panics when unset and `CI=true`).
pub fn postgres_url_or_skip() -> Option<String> {
    match std::env::var(TEST_DATABASE_ENV) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{TEST_DATABASE_ENV} is not set but CI=true: the PostgreSQL tests must run in CI \
                     (e.g. {TEST_DATABASE_ENV}=postgresql://postgres@127.0.0.1:5432/postgres)"
                );
            }
            eprintln!("note: {TEST_DATABASE_ENV} is not set, skipping the PostgreSQL variant");
            None
        }
    }
}

/// `url` with `options=-c search_path=<schema>` added.
pub fn url_with_schema(url: &str, schema: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.query_pairs_mut()
                .append_pair("options", &format!("-c search_path={schema}"));
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

async fn admin_connection(admin_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", crate::redact_url(admin_url)))
}

/// Creates a schema (the name must be a plain identifier).
pub async fn create_schema(admin_url: &str, schema: &str) {
    assert!(
        crate::valid_identifier(schema),
        "bad schema name {schema:?}"
    );
    let mut conn = admin_connection(admin_url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
}

/// Drops a schema and everything in it.
pub async fn drop_schema(admin_url: &str, schema: &str) {
    if !crate::valid_identifier(schema) {
        return;
    }
    let mut conn = admin_connection(admin_url).await;
    // A connection of the test that was never closed must not make this wait forever.
    let _ = sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut conn)
        .await;
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut conn)
    .await
    {
        eprintln!("note: dropping schema {schema}: {e}");
    }
}
