//! The conformance suite on the `db` engine: SQLite (a file in a temp dir), PostgreSQL
//! and MariaDB (the running test servers).
//!
//! Each database gets one shared pool; every case gets a new random table on it
//! (created by `DbStore::migrate`), and cleanup drops every table the run created.

use std::sync::{Arc, Mutex};

use backend_db::{DbConfig, DbPool, DbStore};
use integration_tests::{StoreFactory, run_conformance, servers};
use session_core::{BoxError, CodecKind, SessionSettings, SessionStore};

struct DbFactory {
    pool: DbPool,
    codec: CodecKind,
    prefix: String,
    tables: Mutex<Vec<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl DbFactory {
    async fn open(
        server: &str,
        url: String,
        codec: CodecKind,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let config = DbConfig {
            max_connections: 16,
            ..DbConfig::new(url.clone())
        };
        let pool = match DbPool::connect(&config).await {
            Ok(p) => p,
            Err(e) => servers::unreachable(server, &url, e),
        };
        DbFactory {
            pool,
            codec,
            prefix: format!("conf_{}", servers::unique_suffix()),
            tables: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    async fn sqlite(codec: CodecKind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
        Self::open("SQLite (a temp file)", url, codec, Some(dir)).await
    }
}

#[session_core::async_trait]
impl StoreFactory for DbFactory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        let table = {
            let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            let name = format!("{}_{}", self.prefix, tables.len());
            tables.push(name.clone());
            name
        };
        let store = DbStore::new(self.pool.clone(), &table)?.with_codec(self.settings().codec());
        store.migrate().await?;
        Ok(Arc::new(store))
    }

    fn settings(&self) -> SessionSettings {
        SessionSettings {
            codec: self.codec,
            ..SessionSettings::default()
        }
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        let tables = std::mem::take(&mut *self.tables.lock().unwrap_or_else(|p| p.into_inner()));
        for table in tables {
            DbStore::new(self.pool.clone(), &table)?
                .drop_table()
                .await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_sqlite_passes_the_conformance_suite() {
    let factory = DbFactory::sqlite(CodecKind::Bincode).await;
    run_conformance("db(sqlite)", &factory)
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_sqlite_with_the_json_codec_passes_the_conformance_suite() {
    let factory = DbFactory::sqlite(CodecKind::Json).await;
    run_conformance("db(sqlite, json)", &factory)
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_postgres_passes_the_conformance_suite() {
    let factory = DbFactory::open(
        "PostgreSQL",
        servers::postgres_url(),
        CodecKind::Bincode,
        None,
    )
    .await;
    run_conformance("db(postgres)", &factory)
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_mariadb_passes_the_conformance_suite() {
    let factory = DbFactory::open("MariaDB", servers::mysql_url(), CodecKind::Bincode, None).await;
    run_conformance("db(mariadb)", &factory)
        .await
        .assert_pinned(213, 0);
}
