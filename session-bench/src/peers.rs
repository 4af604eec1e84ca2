//! The stores a user would pick instead of ours: tower-sessions' `MemoryStore` (0.15),
//! tower-sessions-sqlx-store 0.15 (SQLite, PostgreSQL, MySQL; sqlx 0.8, MessagePack
//! records) and tower-sessions-redis-store 0.16 (fred), used through their
//! `SessionStore` trait as tower-sessions' middleware uses them: `create` on a new
//! session, `load`, `save` (their update), `delete`.

use std::collections::HashMap;

use crate::harness::{Key, R, TTL_SECS, Target, session_data};
use crate::wrong;

/// Generates a [`Target`] over any store of one tower-sessions-core version.
macro_rules! tower_target {
    ($name:ident, $core:ident) => {
        /// A tower-sessions store measured through its `SessionStore` trait.
        pub struct $name<S> {
            store: S,
            data: HashMap<String, serde_json::Value>,
            label: &'static str,
            cleanup: Option<Box<dyn Fn() -> crate::ours::CleanupFuture + Send + Sync>>,
        }

        impl<S> $name<S> {
            /// `store`, named `label` in errors.
            pub fn new(label: &'static str, store: S) -> Self {
                $name {
                    store,
                    data: session_data().into_iter().collect(),
                    label,
                    cleanup: None,
                }
            }

            /// Runs `f` when the benchmark is done with this store.
            #[allow(dead_code)]
            pub fn on_cleanup(
                mut self,
                f: impl Fn() -> crate::ours::CleanupFuture + Send + Sync + 'static,
            ) -> Self {
                self.cleanup = Some(Box::new(f));
                self
            }

            fn record(&self, id: i128) -> $core::session::Record {
                $core::session::Record {
                    id: $core::session::Id(id),
                    data: self.data.clone(),
                    expiry_date: time::OffsetDateTime::now_utc()
                        + time::Duration::seconds(TTL_SECS),
                }
            }
        }

        #[async_trait::async_trait]
        impl<S> Target for $name<S>
        where
            S: $core::SessionStore + Send + Sync + 'static,
        {
            async fn create(&self) -> R<Key> {
                let mut r = self.record($core::session::Id::default().0);
                self.store.create(&mut r).await?;
                Ok(Key::Id(r.id.0))
            }

            async fn load(&self, key: &Key, exact: bool) -> R<()> {
                let Key::Id(id) = key else {
                    return wrong!("{}: foreign key {key:?}", self.label);
                };
                match self.store.load(&$core::session::Id(*id)).await? {
                    Some(r) if exact && r.data == self.data => Ok(()),
                    Some(r) if !exact && r.data.len() == self.data.len() => Ok(()),
                    Some(_) => wrong!("{}: load returned other data", self.label),
                    None => wrong!("{}: benchmark session vanished", self.label),
                }
            }

            async fn update(&self, key: &Key, version: u64) -> R<u64> {
                let Key::Id(id) = key else {
                    return wrong!("{}: foreign key {key:?}", self.label);
                };
                self.store.save(&self.record(*id)).await?;
                Ok(version + 1)
            }

            /// Their `delete` does not say whether it removed anything: the harness
            /// checks [`Target::holds`] around each worker's first delete.
            async fn delete(&self, key: &Key) -> R<()> {
                let Key::Id(id) = key else {
                    return wrong!("{}: foreign key {key:?}", self.label);
                };
                self.store.delete(&$core::session::Id(*id)).await?;
                Ok(())
            }

            async fn holds(&self, key: &Key) -> R<bool> {
                let Key::Id(id) = key else {
                    return wrong!("{}: foreign key {key:?}", self.label);
                };
                Ok(self.store.load(&$core::session::Id(*id)).await?.is_some())
            }

            async fn cleanup(&self) -> R<()> {
                match &self.cleanup {
                    Some(f) => f().await,
                    None => Ok(()),
                }
            }
        }
    };
}

tower_target!(Tower15, tower_sessions);
tower_target!(Tower14, tower_sessions_core_014);

/// tower-sessions' `MemoryStore`.
pub fn memory() -> Tower15<tower_sessions::MemoryStore> {
    Tower15::new("tower-memory", tower_sessions::MemoryStore::default())
}

/// tower-sessions-sqlx-store's SQLite store on a file database in `dir`, with the
/// journal and sync settings our SQLite engine uses (WAL, NORMAL) and sqlx's default
/// pool of 10.
pub async fn sqlite(dir: &std::path::Path) -> R<Tower14<tower_sessions_sqlx_store::SqliteStore>> {
    use tower_sessions_sqlx_store::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let opts = SqliteConnectOptions::new()
        .filename(dir.join("tower.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(10)
        .connect_with(opts)
        .await?;
    let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
    store.migrate().await?;
    Ok(Tower14::new("tower-sqlite", store))
}

/// A cleanup hook running the statement `$sql` on the (sqlx 0.8) pool `$pool`.
macro_rules! run_on_cleanup {
    ($pool:expr, $sql:expr) => {{
        let (pool, sql) = ($pool, $sql);
        move || -> crate::ours::CleanupFuture {
            let (pool, sql) = (pool.clone(), sql.clone());
            Box::pin(async move {
                tower_sessions_sqlx_store::sqlx::query(&sql)
                    .execute(&pool)
                    .await?;
                Ok(())
            })
        }
    }};
}

/// tower-sessions-sqlx-store's PostgreSQL store on table `table` (schema
/// `tower_sessions`, which its migration creates); the table is dropped on cleanup.
pub async fn postgres(
    url: &str,
    table: &str,
) -> R<Tower14<tower_sessions_sqlx_store::PostgresStore>> {
    use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(url)
        .await?;
    let store = tower_sessions_sqlx_store::PostgresStore::new(pool.clone())
        .with_table_name(table)
        .map_err(crate::harness::Wrong)?;
    store.migrate().await?;
    let drop = format!("DROP TABLE IF EXISTS \"tower_sessions\".\"{table}\"");
    Ok(Tower14::new("tower-postgres", store).on_cleanup(run_on_cleanup!(pool, drop)))
}

/// tower-sessions-sqlx-store's MySQL store on table `table` in the URL's database; the
/// table is dropped on cleanup.
pub async fn mysql(url: &str, table: &str) -> R<Tower14<tower_sessions_sqlx_store::MySqlStore>> {
    use tower_sessions_sqlx_store::sqlx::mysql::MySqlPoolOptions;
    let pool = MySqlPoolOptions::new()
        .max_connections(10)
        .connect(url)
        .await?;
    let schema = url
        .rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("test")
        .to_owned();
    let store = tower_sessions_sqlx_store::MySqlStore::new(pool.clone())
        .with_schema_name(&schema)
        .map_err(crate::harness::Wrong)?
        .with_table_name(table)
        .map_err(crate::harness::Wrong)?;
    store.migrate().await?;
    let drop = format!("DROP TABLE IF EXISTS `{schema}`.`{table}`");
    Ok(Tower14::new("tower-mysql", store).on_cleanup(run_on_cleanup!(pool, drop)))
}

/// tower-sessions-redis-store on a fred pool of 6 connections (its README's setup).
/// Its keys are bare ids; the benchmark deletes every session it created.
pub async fn redis(
    url: &str,
) -> R<
    Tower14<
        tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Pool>,
    >,
> {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let pool = Pool::new(Config::from_url(url)?, None, None, None, 6)?;
    pool.init().await?;
    Ok(Tower14::new(
        "tower-redis",
        tower_sessions_redis_store::RedisStore::new(pool),
    ))
}
