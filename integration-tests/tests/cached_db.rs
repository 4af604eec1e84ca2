//! The conformance suite on cached_db compositions over real servers:
//! Redis + PostgreSQL, memory + SQLite, Memcached + MariaDB (and memory + memory, the
//! cheapest reference). Each case gets a fresh cache prefix and a fresh table on one
//! shared pool per database; cleanup drops the tables and purges the prefixes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use backend_cache::{CacheConfig, CacheStore, MemoryStore};
use backend_cached_db::CachedDbStore;
use backend_db::{DbConfig, DbPool, DbStore};
use integration_tests::{StoreFactory, run_conformance, servers};
use session_core::{BoxError, Codec, CodecKind, SessionStore};

fn codec() -> Arc<dyn Codec> {
    CodecKind::Bincode.build(session_core::codec::DEFAULT_MAX_ENCODED_SIZE)
}

enum Cache {
    Memory,
    Remote { server: &'static str, url: String },
}

struct Combo {
    cache: Cache,
    run_prefix: String,
    pool: DbPool,
    tables: Mutex<Vec<String>>,
    made: AtomicUsize,
    _dir: Option<tempfile::TempDir>,
}

impl Combo {
    async fn new(
        cache: Cache,
        db_server: &str,
        db_url: String,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        if let Cache::Remote { server, url } = &cache {
            let probe = CacheConfig::new(url.clone());
            if let Err(e) = CacheStore::connect(&probe, codec()).await {
                servers::unreachable(server, url, e);
            }
        }
        let pool = match DbPool::connect(&DbConfig {
            max_connections: 16,
            ..DbConfig::new(db_url.clone())
        })
        .await
        {
            Ok(p) => p,
            Err(e) => servers::unreachable(db_server, &db_url, e),
        };
        Combo {
            cache,
            run_prefix: format!("it-cdb-{}:", servers::unique_suffix()),
            pool,
            tables: Mutex::new(Vec::new()),
            made: AtomicUsize::new(0),
            _dir: dir,
        }
    }
}

#[session_core::async_trait]
impl StoreFactory for Combo {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let cache: Arc<dyn SessionStore> = match &self.cache {
            Cache::Memory => Arc::new(MemoryStore::new()),
            Cache::Remote { url, .. } => {
                let config = CacheConfig::new(url.clone())
                    .with_key_prefix(format!("{}{n}:", self.run_prefix));
                Arc::new(CacheStore::connect(&config, codec()).await?)
            }
        };
        let table = format!("cdb_{}_{n}", &self.run_prefix[7..19]);
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(table.clone());
        let db = DbStore::new(self.pool.clone(), &table)?.with_codec(codec());
        db.migrate().await?;
        Ok(Arc::new(CachedDbStore::new(cache, Arc::new(db))))
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        let tables = std::mem::take(&mut *self.tables.lock().unwrap_or_else(|p| p.into_inner()));
        for table in tables {
            DbStore::new(self.pool.clone(), &table)?
                .drop_table()
                .await?;
        }
        if let Cache::Remote { url, .. } = &self.cache {
            let config = CacheConfig::new(url.clone()).with_key_prefix(&self.run_prefix);
            CacheStore::connect(&config, codec()).await?.purge().await?;
        }
        Ok(())
    }
}

struct MemoryOverMemory;

#[session_core::async_trait]
impl StoreFactory for MemoryOverMemory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(CachedDbStore::new(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryStore::new()),
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_memory_over_memory_passes_the_conformance_suite() {
    run_conformance("cached_db(memory+memory)", &MemoryOverMemory)
        .await
        .assert_pinned(201, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_redis_over_postgres_passes_the_conformance_suite() {
    let combo = Combo::new(
        Cache::Remote {
            server: "Redis",
            url: servers::redis_url(),
        },
        "PostgreSQL",
        servers::postgres_url(),
        None,
    )
    .await;
    run_conformance("cached_db(redis+postgres)", &combo)
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_memory_over_sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let combo = Combo::new(Cache::Memory, "SQLite (a temp file)", url, Some(dir)).await;
    run_conformance("cached_db(memory+sqlite)", &combo)
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_memcached_over_mariadb_passes_the_conformance_suite() {
    let combo = Combo::new(
        Cache::Remote {
            server: "Memcached",
            url: servers::memcached_url(),
        },
        "MariaDB",
        servers::mysql_url(),
        None,
    )
    .await;
    run_conformance("cached_db(memcached+mariadb)", &combo)
        .await
        .assert_pinned(213, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_builds_from_nested_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = session_core::EngineRegistry::new();
    backend_cache::register(&registry);
    backend_db::register(&registry);
    backend_cached_db::register(&registry);
    let config = session_core::Config::from_toml(&format!(
        r#"
        engine = "cached_db"
        [cached_db.cache]
        engine = "memory"
        [cached_db.db.db]
        url = "sqlite://{}"
        "#,
        dir.path().join("s.db").display()
    ));
    let store = registry.build(&config).await.expect("build from config");
    assert_eq!(store.engine(), "cached_db");
    let key = store
        .create(&session_core::Record::with_ttl(Default::default(), 60))
        .await
        .expect("create");
    assert!(store.exists(&key).await.expect("exists"));
    let bad = session_core::Config::from_toml(
        "engine = \"cached_db\"\n[cached_db.cache]\nengine = \"nope\"",
    );
    let err = registry
        .build(&bad)
        .await
        .expect_err("unknown nested engine");
    assert!(err.to_string().contains("nope"), "{err}");
}
