//! The engines the tests run the adapter on, each built from a configuration through the
//! engine registry as an application would, in a namespace of its own (a temp directory,
//! a random table, a random key prefix) that [`Backend::cleanup`] removes.
//!
//! A server that does not answer fails the test naming the server and how to start it.
#![allow(dead_code)] // each test binary uses some of the engines

use backend_cache::{CacheConfig, CacheStore};
use backend_db::{DbConfig, DbStore};
use integration_tests::servers;
use session_core::{CodecKind, Config, EngineRegistry};
use session_tower_sessions::TowerSessionsStore;

/// An engine the adapter runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    File,
    Sqlite,
    Postgres,
    MariaDb,
    Redis,
    Cluster,
    Memcached,
    /// Redis in front of PostgreSQL.
    CachedDb,
    Memory,
}

/// One built engine, its adapter and what to remove afterwards.
pub struct Backend {
    pub name: String,
    pub store: TowerSessionsStore,
    /// The configuration it was built from (tests build a second store on it).
    pub config: Config,
    tables: Vec<(String, String)>,
    prefixes: Vec<(CacheConfig, String)>,
    _dir: tempfile::TempDir,
}

pub fn registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    backend_file::register(&registry);
    backend_db::register(&registry);
    backend_cache::register(&registry);
    backend_cached_db::register(&registry);
    registry
}

fn toml_list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl Backend {
    /// Builds `engine` in a fresh namespace; `extra` is TOML added at the root
    /// (`max_keys = 5`, `codec = "json"`, ...).
    pub async fn new(engine: Engine, extra: &str) -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let suffix = servers::unique_suffix();
        let table = format!("ts_{suffix}");
        let prefix = format!("ts-{suffix}:");
        let mut tables = Vec::new();
        let mut prefixes = Vec::new();
        let (name, server, url, toml) = match engine {
            Engine::File => {
                let path = dir.path().join("sessions").display().to_string();
                (
                    "file",
                    "the file engine",
                    path.clone(),
                    format!("engine = \"file\"\n[file]\npath = {path:?}\n"),
                )
            }
            Engine::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
                tables.push((url.clone(), table.clone()));
                (
                    "db(sqlite)",
                    "SQLite (a temp file)",
                    url.clone(),
                    format!("engine = \"db\"\n[db]\nurl = {url:?}\ntable = {table:?}\n"),
                )
            }
            Engine::Postgres | Engine::MariaDb => {
                let (name, server, url) = if engine == Engine::Postgres {
                    ("db(postgres)", "PostgreSQL", servers::postgres_url())
                } else {
                    ("db(mariadb)", "MariaDB", servers::mysql_url())
                };
                tables.push((url.clone(), table.clone()));
                (
                    name,
                    server,
                    url.clone(),
                    format!("engine = \"db\"\n[db]\nurl = {url:?}\ntable = {table:?}\n"),
                )
            }
            Engine::Redis | Engine::Memcached => {
                let (name, server, url) = if engine == Engine::Redis {
                    ("cache(redis)", "Redis", servers::redis_url())
                } else {
                    ("cache(memcached)", "Memcached", servers::memcached_url())
                };
                prefixes.push((CacheConfig::new(&url), prefix.clone()));
                (
                    name,
                    server,
                    url.clone(),
                    format!(
                        "engine = \"cache\"\n[cache]\nurl = {url:?}\nkey_prefix = {prefix:?}\n"
                    ),
                )
            }
            Engine::Cluster => {
                let urls = servers::redis_cluster_urls();
                prefixes.push((
                    CacheConfig {
                        urls: urls.clone(),
                        ..CacheConfig::default()
                    },
                    prefix.clone(),
                ));
                (
                    "cache(cluster)",
                    "The Redis Cluster",
                    urls.join(","),
                    format!(
                        "engine = \"cache\"\n[cache]\nurls = {}\nkey_prefix = {prefix:?}\n",
                        toml_list(&urls)
                    ),
                )
            }
            Engine::CachedDb => {
                let redis = servers::redis_url();
                let pg = servers::postgres_url();
                prefixes.push((CacheConfig::new(&redis), prefix.clone()));
                tables.push((pg.clone(), table.clone()));
                (
                    "cached_db(redis, postgres)",
                    "Redis and PostgreSQL",
                    format!("{redis} and {pg}"),
                    format!(
                        "engine = \"cached_db\"\n[cached_db.cache]\nurl = {redis:?}\n\
                         key_prefix = {prefix:?}\n[cached_db.db]\nurl = {pg:?}\ntable = {table:?}\n"
                    ),
                )
            }
            Engine::Memory => (
                "memory",
                "the memory engine",
                "memory".to_owned(),
                "engine = \"memory\"\n".to_owned(),
            ),
        };
        let config = Config::from_toml(&format!("{extra}\n{toml}"));
        let store = match TowerSessionsStore::from_config(&config, &registry()).await {
            Ok(store) => store,
            Err(e) => servers::unreachable(server, &url, e),
        };
        Backend {
            name: name.to_owned(),
            store,
            config,
            tables,
            prefixes,
            _dir: dir,
        }
    }

    /// Removes the tables and key prefixes this backend created.
    pub async fn cleanup(self) {
        for (url, table) in &self.tables {
            let config = DbConfig {
                auto_migrate: false,
                ..DbConfig::new(url.clone())
            };
            let pool = backend_db::DbPool::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("cleanup: connect {url}: {e}"));
            DbStore::new(pool, table)
                .expect("table name")
                .drop_table()
                .await
                .unwrap_or_else(|e| panic!("cleanup: drop {table}: {e}"));
        }
        for (config, prefix) in &self.prefixes {
            let config = config.clone().with_key_prefix(prefix);
            let store = CacheStore::connect(&config, CodecKind::Bincode.build(1 << 22))
                .await
                .unwrap_or_else(|e| panic!("cleanup: connect the cache: {e}"));
            store
                .purge()
                .await
                .unwrap_or_else(|e| panic!("cleanup: purge {prefix}: {e}"));
        }
    }
}
