//! What is measured: one group per engine, each with our store, its floor and its peer.

use std::sync::Arc;
use std::time::Duration;

use backend_db::DbStore;
use integration_tests::servers;
use session_core::{Codec, Config};

use crate::harness::{Budget, R, Target, record};
use crate::ours::{Ours, from_toml};
use crate::raw::{RawFs, RawMemcached, RawRedis, RawRedisCas, RawSql, RedisConn};
use crate::{peers, wrong};

/// Which side of a comparison a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Our engine.
    Ours,
    /// The bare client doing the same I/O.
    Floor,
    /// The store a user would pick instead.
    Peer,
    /// The bare client whose update is an atomic compare-and-set (Redis: the smallest
    /// version-checking script), beside the blind-write floor: the floor of an update
    /// that loses no concurrent write.
    CasFloor,
}

/// One measured thing in a group.
pub struct Side {
    /// Its role.
    pub role: Role,
    /// Its name in tables.
    pub name: String,
    /// The target.
    pub target: Arc<dyn Target>,
}

/// One engine with its floor and peer.
pub struct Group {
    /// The engine's name in tables (`postgres`, `cached_db redis+postgres`, ...).
    pub engine: String,
    /// Ours first, then floor and peer where there is one.
    pub sides: Vec<Side>,
    /// Operation budgets per phase at concurrency 1 and 32.
    pub budgets: [Budget; 2],
    /// Temp directories that must live as long as the group.
    pub _dirs: Vec<tempfile::TempDir>,
}

/// Every group name, in run order.
pub const NAMES: [&str; 11] = [
    "memory",
    "file",
    "sqlite",
    "postgres",
    "mariadb",
    "redis",
    "redis-cluster",
    "memcached",
    "cached_db:memory+sqlite",
    "cached_db:redis+postgres",
    "cached_db:memcached+mariadb",
];

fn budget(ops: usize, scale: f64, secs: f64) -> Budget {
    Budget {
        ops: ((ops as f64 * scale) as usize).max(64),
        time: Duration::from_secs_f64(secs),
    }
}

fn side(role: Role, name: &str, target: impl Target) -> Side {
    Side {
        role,
        name: name.to_owned(),
        target: Arc::new(target),
    }
}

fn bincode() -> Arc<dyn Codec> {
    session_core::CodecKind::Bincode.build(1 << 22)
}

/// Size of the benchmark record, encoded.
pub fn encoded_len() -> R<usize> {
    Ok(encoded()?.len())
}

pub fn encoded() -> R<Vec<u8>> {
    Ok(bincode().encode(&record())?)
}

/// The SQLite floor's store: `table` in a database file of its own (`raw.db` in `dir`),
/// through a pool of the same configuration as ours. Two tables of one file share each
/// connection's page cache (about 2 MB, SQLite's default), which at 1,000 sessions holds
/// one table's pages and not both; checked against itself there, the floor read one
/// table 1.2-1.4x faster than the other.
pub async fn sqlite_floor_store(dir: &std::path::Path, table: &str) -> R<Arc<DbStore>> {
    db_store(&format!("sqlite://{}", dir.join("raw.db").display()), table).await
}

/// A DbStore on `url` / `table` for the floor's pool and for dropping tables.
pub async fn db_store(url: &str, table: &str) -> R<Arc<DbStore>> {
    let toml = format!("[db]\nurl = {url:?}\ntable = {table:?}\n");
    Ok(Arc::new(
        DbStore::from_config(&Config::from_toml(&toml)).await?,
    ))
}

fn drop_tables(stores: Vec<Arc<DbStore>>) -> impl Fn() -> crate::ours::CleanupFuture + Send + Sync {
    move || {
        let stores = stores.clone();
        Box::pin(async move {
            for s in stores {
                s.drop_table().await?;
            }
            Ok(())
        })
    }
}

/// Builds group `name`; `scale` multiplies the operation budgets, `secs` bounds a phase.
pub async fn build(name: &str, scale: f64, secs: f64, run: &str) -> R<Group> {
    let bytes = encoded()?;
    let mut dirs = Vec::new();
    let (sides, budgets) = match name {
        "memory" => {
            let ours = from_toml("engine = \"memory\"\n").await?;
            (
                vec![
                    side(Role::Ours, "memory", Ours::new(ours)),
                    side(Role::Peer, "tower-sessions MemoryStore", peers::memory()),
                ],
                [budget(50_000, scale, secs), budget(100_000, scale, secs)],
            )
        }
        "file" => {
            let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
            let ours = from_toml(&format!(
                "engine = \"file\"\n[file]\npath = {:?}\n",
                a.path()
            ))
            .await?;
            // The engine's default: every write and delete flushed (`[file] fsync = true`).
            let floor = RawFs::new(b.path().to_owned(), bytes, true);
            dirs.extend([a, b]);
            (
                vec![
                    side(Role::Ours, "file", Ours::new(ours)),
                    side(Role::Floor, "tokio::fs", floor),
                ],
                [budget(5_000, scale, secs), budget(10_000, scale, secs)],
            )
        }
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("ours.db").display());
            let ours = db_store(&url, "sessions").await?;
            let raw = sqlite_floor_store(dir.path(), "raw_sessions").await?;
            let floor = RawSql::new(&raw, bytes);
            let peer = peers::sqlite(dir.path()).await?;
            dirs.push(dir);
            (
                vec![
                    side(Role::Ours, "db sqlite", Ours::new(ours)),
                    side(Role::Floor, "sqlx", floor),
                    side(Role::Peer, "tower-sessions-sqlx-store", peer),
                ],
                [budget(5_000, scale, secs), budget(10_000, scale, secs)],
            )
        }
        "postgres" | "mariadb" => {
            let url = if name == "postgres" {
                servers::postgres_url()
            } else {
                servers::mysql_url()
            };
            let (t_ours, t_raw, t_peer) = (
                format!("bench_{run}"),
                format!("bench_raw_{run}"),
                format!("bench_tower_{run}"),
            );
            let ours = db_store(&url, &t_ours).await?;
            let raw = Arc::new(DbStore::new(ours.pool().clone(), &t_raw)?);
            raw.migrate().await?;
            let floor = RawSql::new(&raw, bytes);
            let peer: Side = if name == "postgres" {
                side(
                    Role::Peer,
                    "tower-sessions-sqlx-store",
                    peers::postgres(&url, &t_peer).await?,
                )
            } else {
                side(
                    Role::Peer,
                    "tower-sessions-sqlx-store",
                    peers::mysql(&url, &t_peer).await?,
                )
            };
            let cleanup = drop_tables(vec![ours.clone(), raw]);
            (
                vec![
                    side(
                        Role::Ours,
                        &format!("db {name}"),
                        Ours::new(ours).on_cleanup(cleanup),
                    ),
                    side(Role::Floor, "sqlx", floor),
                    peer,
                ],
                [budget(3_000, scale, secs), budget(8_000, scale, secs)],
            )
        }
        "redis" => {
            let url = servers::redis_url();
            let ours = from_toml(&format!(
                "engine = \"cache\"\n[cache]\nurl = {url:?}\nkey_prefix = \"bench-{run}:\"\n"
            ))
            .await?;
            let cas = RawRedisCas::new(
                RedisConn::single(&url).await?,
                format!("bench-cas-{run}:"),
                &bytes,
            );
            let floor = RawRedis::new(
                RedisConn::single(&url).await?,
                format!("bench-raw-{run}:"),
                bytes,
            );
            (
                vec![
                    side(Role::Ours, "cache redis", Ours::new(ours)),
                    side(Role::Floor, "redis-rs", floor),
                    side(
                        Role::Peer,
                        "tower-sessions-redis-store",
                        peers::redis(&url).await?,
                    ),
                    side(Role::CasFloor, "redis-rs script", cas),
                ],
                [budget(10_000, scale, secs), budget(30_000, scale, secs)],
            )
        }
        "redis-cluster" => {
            let nodes = servers::redis_cluster_urls();
            let ours = from_toml(&format!(
                "engine = \"cache\"\n[cache]\nurls = {nodes:?}\nkey_prefix = \"bench-{run}:\"\n"
            ))
            .await?;
            let cas = RawRedisCas::new(
                RedisConn::cluster(&nodes).await?,
                format!("bench-cas-{run}:"),
                &bytes,
            );
            let floor = RawRedis::new(
                RedisConn::cluster(&nodes).await?,
                format!("bench-raw-{run}:"),
                bytes,
            );
            (
                vec![
                    side(Role::Ours, "cache redis cluster", Ours::new(ours)),
                    side(Role::Floor, "redis-rs cluster", floor),
                    side(Role::CasFloor, "redis-rs cluster script", cas),
                ],
                [budget(10_000, scale, secs), budget(30_000, scale, secs)],
            )
        }
        "memcached" => {
            let url = servers::memcached_url();
            let addr = memcached_addr(&url)?;
            let ours = from_toml(&format!(
                "engine = \"cache\"\n[cache]\nurl = {url:?}\nkey_prefix = \"bench-{run}:\"\n"
            ))
            .await?;
            let floor =
                RawMemcached::connect(&addr, 32, format!("bench-raw-{run}:"), bytes).await?;
            (
                vec![
                    side(Role::Ours, "cache memcached", Ours::new(ours)),
                    side(Role::Floor, "async-memcached", floor),
                ],
                [budget(10_000, scale, secs), budget(30_000, scale, secs)],
            )
        }
        cached if cached.starts_with("cached_db:") => {
            let (cache, db) = match cached {
                "cached_db:memory+sqlite" => {
                    let dir = tempfile::tempdir()?;
                    let url = format!("sqlite://{}", dir.path().join("cached.db").display());
                    dirs.push(dir);
                    ("url = \"memory\"".to_owned(), url)
                }
                "cached_db:redis+postgres" => (
                    format!("url = {:?}", servers::redis_url()),
                    servers::postgres_url(),
                ),
                "cached_db:memcached+mariadb" => (
                    format!("url = {:?}", servers::memcached_url()),
                    servers::mysql_url(),
                ),
                other => return wrong!("unknown group {other}"),
            };
            let table = format!("bench_cdb_{run}");
            let ours = from_toml(&format!(
                "engine = \"cached_db\"\n\
                 [cached_db.cache]\nengine = \"cache\"\n\
                 [cached_db.cache.cache]\n{cache}\nkey_prefix = \"bench-cdb-{run}:\"\n\
                 [cached_db.db]\nengine = \"db\"\n\
                 [cached_db.db.db]\nurl = {db:?}\ntable = {table:?}\n"
            ))
            .await?;
            let dropper = db_store(&db, &table).await?;
            let (b1, b32) = if cached.contains("memory") {
                (5_000, 10_000)
            } else {
                (3_000, 8_000)
            };
            (
                vec![side(
                    Role::Ours,
                    cached,
                    Ours::new(ours).on_cleanup(drop_tables(vec![dropper])),
                )],
                [budget(b1, scale, secs), budget(b32, scale, secs)],
            )
        }
        other => return wrong!("unknown group {other}; known: {}", NAMES.join(", ")),
    };
    Ok(Group {
        engine: name.to_owned(),
        sides,
        budgets,
        _dirs: dirs,
    })
}

/// `host:port` of a `memcache://host:port` URL.
fn memcached_addr(url: &str) -> R<String> {
    match url.split_once("://") {
        Some((_, rest)) => Ok(rest.trim_end_matches('/').to_owned()),
        None => wrong!("not a memcache:// URL: {url}"),
    }
}
