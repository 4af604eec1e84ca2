//! Shared helpers of backend-db's tests: a pool per database (the real servers, found
//! through `integration_tests::servers`) and a store on a fresh random table.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use backend_db::{Backend, DbConfig, DbPool, DbStore};
use integration_tests::servers;

/// The three databases every test runs on.
pub const ALL: [Backend; 3] = [Backend::Sqlite, Backend::Postgres, Backend::MySql];

/// A database for one test: its pool, and the temp dir holding an SQLite file.
pub struct Db {
    pub pool: DbPool,
    pub config: DbConfig,
    _dir: Option<tempfile::TempDir>,
}

/// The configuration for `backend` (SQLite in a new temp dir).
pub fn config(backend: Backend) -> (DbConfig, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
            (DbConfig::new(url), Some(dir))
        }
        Backend::Postgres => (DbConfig::new(servers::postgres_url()), None),
        Backend::MySql => (DbConfig::new(servers::mysql_url()), None),
    }
}

/// Opens a pool on `backend`, failing loudly (naming the server) when it is not there.
pub async fn open(backend: Backend, tune: impl FnOnce(&mut DbConfig)) -> Db {
    let (mut config, dir) = config(backend);
    tune(&mut config);
    let pool = match DbPool::connect(&config).await {
        Ok(p) => p,
        Err(e) => {
            let server = match backend {
                Backend::Sqlite => "SQLite (a temp file)",
                Backend::Postgres => "PostgreSQL",
                Backend::MySql => "MariaDB",
            };
            servers::unreachable(server, &config.url, e)
        }
    };
    Db {
        pool,
        config,
        _dir: dir,
    }
}

/// A random table name for one test.
pub fn table(tag: &str) -> String {
    format!("t_{tag}_{}", servers::unique_suffix())
}

/// A migrated store on a fresh random table of `db`.
pub async fn store(db: &Db, tag: &str) -> Arc<DbStore> {
    let store = DbStore::new(db.pool.clone(), &table(tag)).expect("table name");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// Runs `body` on a fresh store of `db`, then drops the table whatever happened.
pub async fn with_store<F>(db: &Db, tag: &str, body: F)
where
    F: AsyncFnOnce(Arc<DbStore>) -> Result<(), String>,
{
    use futures::FutureExt;
    let store = store(db, tag).await;
    let outcome = std::panic::AssertUnwindSafe(body(store.clone()))
        .catch_unwind()
        .await;
    store.drop_table().await.expect("drop the test table");
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{:?}: {why}", db.pool.backend()),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
