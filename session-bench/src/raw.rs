//! The floors: the same I/O our engines do, through the bare clients, on the same
//! encoded bytes, with none of the store's checks and no decoding.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use backend_db::{DbPool, DbStore, Statements};
use session_core::{SessionKey, Timestamp};
use tokio::sync::Mutex;

use crate::harness::{Key, R, TTL_SECS, Target};
use crate::wrong;

fn new_key() -> R<SessionKey> {
    Ok(SessionKey::generate()?)
}

// ------------------------------------------------------------------ files

/// `tokio::fs`: write a temp file and rename it (create, update), read (load), remove
/// (delete). With `fsync` (the file engine's default) the file's data and then the
/// directory are flushed, as the engine does. No locking, no checks, no decoding.
pub struct RawFs {
    dir: PathBuf,
    bytes: Vec<u8>,
    temp: AtomicU64,
    fsync: bool,
}

impl RawFs {
    /// Files of `bytes` in `dir`, flushed when `fsync`.
    pub fn new(dir: PathBuf, bytes: Vec<u8>, fsync: bool) -> Self {
        RawFs {
            dir,
            bytes,
            temp: AtomicU64::new(0),
            fsync,
        }
    }

    async fn sync_dir(&self) -> R<()> {
        if self.fsync {
            tokio::fs::File::open(&self.dir).await?.sync_all().await?;
        }
        Ok(())
    }

    async fn write(&self, name: &str) -> R<()> {
        use tokio::io::AsyncWriteExt;
        let n = self.temp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp_raw_{n}"));
        if self.fsync {
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&self.bytes).await?;
            f.sync_data().await?;
        } else {
            tokio::fs::write(&tmp, &self.bytes).await?;
        }
        tokio::fs::rename(&tmp, self.dir.join(name)).await?;
        self.sync_dir().await
    }
}

#[async_trait::async_trait]
impl Target for RawFs {
    async fn create(&self) -> R<Key> {
        let key = new_key()?;
        self.write(key.as_str()).await?;
        Ok(Key::Session(key))
    }

    /// The floors do not decode: every load compares the bytes read with the bytes
    /// written (one `memcmp` of about 1 KiB), `exact` or not.
    async fn load(&self, key: &Key, _exact: bool) -> R<()> {
        let got = tokio::fs::read(self.dir.join(key.text())).await?;
        if got != self.bytes {
            return wrong!(
                "raw file: read {} bytes other than those written",
                got.len()
            );
        }
        Ok(())
    }

    async fn update(&self, key: &Key, version: u64) -> R<u64> {
        self.write(&key.text()).await?;
        Ok(version + 1)
    }

    async fn delete(&self, key: &Key) -> R<()> {
        tokio::fs::remove_file(self.dir.join(key.text())).await?;
        self.sync_dir().await
    }

    async fn holds(&self, key: &Key) -> R<bool> {
        Ok(tokio::fs::try_exists(self.dir.join(key.text())).await?)
    }
}

// ------------------------------------------------------------------ SQL

/// The statements `DbStore` runs (atomic insert, live-row select, compare-and-set
/// update, delete; the principal column bound empty, as for an anonymous session), taken from a `DbStore` on a table of the same shape
/// ([`DbStore::statements`], so they cannot drift from the engine's), through the same
/// pool, with bytes encoded once up front.
pub struct RawSql {
    pool: DbPool,
    bytes: Vec<u8>,
    sql: Statements,
}

impl RawSql {
    /// The statements of `store` (its table already migrated) over its pool.
    pub fn new(store: &DbStore, bytes: Vec<u8>) -> Self {
        RawSql {
            pool: store.pool().clone(),
            sql: store.statements().clone(),
            bytes,
        }
    }

    fn expires_at() -> i64 {
        Timestamp::now().as_unix_millis() + TTL_SECS * 1000
    }
}

/// Evaluates `$body` with `$p` bound to the pool `$pool` holds (each arm typed for its
/// database).
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            DbPool::Postgres($p) => $body,
            DbPool::Sqlite($p) => $body,
            DbPool::MySql($p) => $body,
        }
    };
}

#[async_trait::async_trait]
impl Target for RawSql {
    async fn create(&self) -> R<Key> {
        let key = new_key()?;
        let now = Timestamp::now().as_unix_millis();
        let exp = Self::expires_at();
        // MySQL's insert has no "replace only if expired" clause, hence no `now`.
        let mysql = matches!(self.pool, DbPool::MySql(_));
        let rows = with_pool!(&self.pool, p => {
            let q = sqlx::query(self.sql.insert_new.clone())
                .bind(key.as_str())
                .bind(&self.bytes)
                .bind(exp)
                .bind(1i64)
                .bind(None::<&str>);
            let q = if mysql { q } else { q.bind(now) };
            q.execute(p).await?.rows_affected()
        });
        if rows != 1 {
            return wrong!("raw sql: insert affected {rows} rows");
        }
        Ok(Key::Session(key))
    }

    async fn load(&self, key: &Key, _exact: bool) -> R<()> {
        let now = Timestamp::now().as_unix_millis();
        let k = key.text();
        let row: Option<(Vec<u8>, i64, i64)> = with_pool!(&self.pool, p => {
            sqlx::query_as(self.sql.load.clone())
                .bind(&k)
                .bind(now)
                .fetch_optional(p)
                .await?
        });
        match row {
            Some((b, _, _)) if b == self.bytes => Ok(()),
            Some(_) => wrong!("raw sql: load returned other bytes"),
            None => wrong!("raw sql: benchmark row vanished"),
        }
    }

    async fn update(&self, key: &Key, version: u64) -> R<u64> {
        let now = Timestamp::now().as_unix_millis();
        let exp = Self::expires_at();
        let k = key.text();
        let v = version as i64;
        let new: Option<i64> = match &self.pool {
            // `version = LAST_INSERT_ID(version + 1)`: the new version comes back with
            // the OK packet, as `DbStore` reads it.
            DbPool::MySql(p) => {
                let r = sqlx::query(self.sql.update_cas.clone())
                    .bind(&self.bytes)
                    .bind(exp)
                    .bind(None::<&str>)
                    .bind(&k)
                    .bind(now)
                    .bind(v)
                    .execute(p)
                    .await?;
                (r.rows_affected() > 0).then(|| r.last_insert_id() as i64)
            }
            DbPool::Postgres(p) => {
                sqlx::query_scalar(self.sql.update_cas.clone())
                    .bind(&self.bytes)
                    .bind(exp)
                    .bind(None::<&str>)
                    .bind(&k)
                    .bind(now)
                    .bind(v)
                    .fetch_optional(p)
                    .await?
            }
            DbPool::Sqlite(p) => {
                sqlx::query_scalar(self.sql.update_cas.clone())
                    .bind(&self.bytes)
                    .bind(exp)
                    .bind(None::<&str>)
                    .bind(&k)
                    .bind(now)
                    .bind(v)
                    .fetch_optional(p)
                    .await?
            }
        };
        match new {
            Some(n) if n == v + 1 => Ok(n as u64),
            other => wrong!("raw sql: update of version {v} returned {other:?}"),
        }
    }

    async fn delete(&self, key: &Key) -> R<()> {
        let k = key.text();
        let rows = with_pool!(&self.pool, p => {
            sqlx::query(self.sql.delete.clone())
                .bind(&k)
                .execute(p)
                .await?
                .rows_affected()
        });
        if rows != 1 {
            return wrong!("raw sql: delete affected {rows} rows");
        }
        Ok(())
    }

    async fn holds(&self, key: &Key) -> R<bool> {
        let now = Timestamp::now().as_unix_millis();
        let k = key.text();
        // As `DbStore::exists` reads it: a row or none (`SELECT 1` is INT4 on
        // PostgreSQL, BIGINT elsewhere; nothing is decoded).
        Ok(with_pool!(&self.pool, p => {
            sqlx::query(self.sql.exists.clone())
                .bind(&k)
                .bind(now)
                .fetch_optional(p)
                .await?
                .is_some()
        }))
    }
}

// ------------------------------------------------------------------ Redis

/// A standalone (multiplexed) or cluster connection.
#[derive(Clone)]
pub enum RedisConn {
    /// One multiplexed connection to a standalone server.
    Single(redis::aio::MultiplexedConnection),
    /// The cluster client's async connection.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RedisConn {
    /// Connects to `url` (standalone).
    pub async fn single(url: &str) -> R<Self> {
        let client = redis::Client::open(url)?;
        Ok(RedisConn::Single(
            client.get_multiplexed_async_connection().await?,
        ))
    }

    /// Connects to the cluster of `nodes`.
    pub async fn cluster(nodes: &[String]) -> R<Self> {
        let client = redis::cluster::ClusterClient::new(nodes.to_vec())?;
        Ok(RedisConn::Cluster(client.get_async_connection().await?))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> R<T> {
        Ok(match self {
            RedisConn::Single(c) => cmd.query_async(&mut c.clone()).await?,
            RedisConn::Cluster(c) => cmd.query_async(&mut c.clone()).await?,
        })
    }

    /// `DEL` of one key that must be there.
    async fn del_one(&self, name: &str) -> R<()> {
        let n: i64 = self.query(redis::cmd("DEL").arg(name)).await?;
        if n != 1 {
            return wrong!("raw redis: DEL {name} removed {n} keys");
        }
        Ok(())
    }

    /// Unlinks every key that starts with `prefix` (standalone servers only).
    pub async fn unlink_prefix(&self, prefix: &str) -> R<()> {
        let RedisConn::Single(c) = self else {
            return wrong!("unlink_prefix: standalone servers only");
        };
        let mut c = c.clone();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Whether `name` exists.
    async fn exists(&self, name: &str) -> R<bool> {
        let n: i64 = self.query(redis::cmd("EXISTS").arg(name)).await?;
        Ok(n == 1)
    }

    /// Runs a script (`EVALSHA`, loading it where the server answers `NOSCRIPT`).
    async fn invoke<T: redis::FromRedisValue>(&self, script: &redis::ScriptInvocation<'_>) -> R<T> {
        Ok(match self {
            RedisConn::Single(c) => script.invoke_async(&mut c.clone()).await?,
            RedisConn::Cluster(c) => script.invoke_async(&mut c.clone()).await?,
        })
    }
}

/// The smallest atomic compare-and-set on a Redis string: the first 8 bytes hold the
/// version (big-endian); the write happens only if they are the expected ones, and
/// keeps the TTL given. One `EVALSHA` round trip, as our engine's update.
const CAS_SCRIPT: &str = r"
if redis.call('GETRANGE', KEYS[1], 0, 7) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// The Redis floor of an update that loses no concurrent write: as [`RawRedis`], but
/// each value starts with an 8-byte version and an update is [`CAS_SCRIPT`] (through
/// `redis::Script`, as our engine's update is), so it writes only over the version it
/// read.
pub struct RawRedisCas {
    conn: RedisConn,
    prefix: String,
    /// The benchmark bytes, after the 8 bytes of the version.
    bytes: Vec<u8>,
    script: redis::Script,
}

impl RawRedisCas {
    /// Keys `prefix` + session key, over `conn`, storing `bytes` behind a version.
    pub fn new(conn: RedisConn, prefix: String, bytes: &[u8]) -> Self {
        RawRedisCas {
            conn,
            prefix,
            bytes: bytes.to_vec(),
            script: redis::Script::new(CAS_SCRIPT),
        }
    }

    fn name(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.text())
    }

    fn value(&self, version: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.bytes.len());
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(&self.bytes);
        v
    }
}

#[async_trait::async_trait]
impl Target for RawRedisCas {
    async fn create(&self) -> R<Key> {
        let key = Key::Session(new_key()?);
        let ok: Option<String> = self
            .conn
            .query(
                redis::cmd("SET")
                    .arg(self.name(&key))
                    .arg(self.value(1))
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL_SECS * 1000),
            )
            .await?;
        if ok.is_none() {
            return wrong!("raw redis script: SET NX refused");
        }
        Ok(key)
    }

    async fn load(&self, key: &Key, _exact: bool) -> R<()> {
        let got: Option<Vec<u8>> = self
            .conn
            .query(redis::cmd("GET").arg(self.name(key)))
            .await?;
        match got {
            Some(b) if b.len() == 8 + self.bytes.len() && b[8..] == self.bytes[..] => Ok(()),
            Some(_) => wrong!("raw redis script: GET returned other bytes"),
            None => wrong!("raw redis script: benchmark key vanished"),
        }
    }

    async fn update(&self, key: &Key, version: u64) -> R<u64> {
        let next = version + 1;
        let done: i64 = self
            .conn
            .invoke(
                self.script
                    .key(self.name(key))
                    .arg(&version.to_be_bytes()[..])
                    .arg(self.value(next))
                    .arg(TTL_SECS * 1000),
            )
            .await?;
        if done != 1 {
            return wrong!("raw redis script: version {version} not found");
        }
        Ok(next)
    }

    async fn delete(&self, key: &Key) -> R<()> {
        self.conn.del_one(&self.name(key)).await
    }

    async fn holds(&self, key: &Key) -> R<bool> {
        self.conn.exists(&self.name(key)).await
    }
}

/// `SET NX PX` (create), `GET` (load), `SET XX PX` (update), `DEL` (delete) of the
/// same encoded bytes, under a prefix of its own.
pub struct RawRedis {
    conn: RedisConn,
    prefix: String,
    bytes: Vec<u8>,
}

impl RawRedis {
    /// Keys `prefix` + session key, over `conn`.
    pub fn new(conn: RedisConn, prefix: String, bytes: Vec<u8>) -> Self {
        RawRedis {
            conn,
            prefix,
            bytes,
        }
    }

    fn name(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.text())
    }

    async fn set(&self, name: &str, mode: &str) -> R<()> {
        let ok: Option<String> = self
            .conn
            .query(
                redis::cmd("SET")
                    .arg(name)
                    .arg(&self.bytes)
                    .arg(mode)
                    .arg("PX")
                    .arg(TTL_SECS * 1000),
            )
            .await?;
        if ok.is_none() {
            return wrong!("raw redis: SET {mode} refused");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Target for RawRedis {
    async fn create(&self) -> R<Key> {
        let key = Key::Session(new_key()?);
        self.set(&self.name(&key), "NX").await?;
        Ok(key)
    }

    async fn load(&self, key: &Key, _exact: bool) -> R<()> {
        let got: Option<Vec<u8>> = self
            .conn
            .query(redis::cmd("GET").arg(self.name(key)))
            .await?;
        match got {
            Some(b) if b == self.bytes => Ok(()),
            Some(_) => wrong!("raw redis: GET returned other bytes"),
            None => wrong!("raw redis: benchmark key vanished"),
        }
    }

    async fn update(&self, key: &Key, version: u64) -> R<u64> {
        self.set(&self.name(key), "XX").await?;
        Ok(version + 1)
    }

    async fn delete(&self, key: &Key) -> R<()> {
        self.conn.del_one(&self.name(key)).await
    }

    async fn holds(&self, key: &Key) -> R<bool> {
        self.conn.exists(&self.name(key)).await
    }
}

// ------------------------------------------------------------------ Memcached

/// async-memcached with one connection per worker slot: `add` (create), `get` (load),
/// `set` (update), `delete`, of the same encoded bytes.
pub struct RawMemcached {
    clients: Vec<Mutex<async_memcached::Client>>,
    prefix: String,
    bytes: Vec<u8>,
}

impl RawMemcached {
    /// `connections` clients to `addr` (`host:port`).
    pub async fn connect(
        addr: &str,
        connections: usize,
        prefix: String,
        bytes: Vec<u8>,
    ) -> R<Self> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            clients.push(Mutex::new(
                async_memcached::Client::new(format!("tcp://{addr}")).await?,
            ));
        }
        Ok(RawMemcached {
            clients,
            prefix,
            bytes,
        })
    }

    /// The client for `name`: the same key always goes through the same connection,
    /// and keys spread over all of them.
    fn client(&self, name: &str) -> &Mutex<async_memcached::Client> {
        let h = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        &self.clients[(h % self.clients.len() as u64) as usize]
    }

    fn name(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.text())
    }
}

#[async_trait::async_trait]
impl Target for RawMemcached {
    async fn create(&self) -> R<Key> {
        use async_memcached::AsciiProtocol;
        let key = Key::Session(new_key()?);
        let name = self.name(&key);
        self.client(&name)
            .lock()
            .await
            .add(&name, self.bytes.as_slice(), Some(TTL_SECS), None)
            .await?;
        Ok(key)
    }

    async fn load(&self, key: &Key, _exact: bool) -> R<()> {
        use async_memcached::AsciiProtocol;
        let name = self.name(key);
        let got = self.client(&name).lock().await.get(&name).await?;
        match got.and_then(|v| v.data) {
            Some(b) if b == self.bytes => Ok(()),
            Some(_) => wrong!("raw memcached: get returned other bytes"),
            None => wrong!("raw memcached: benchmark key vanished"),
        }
    }

    async fn update(&self, key: &Key, version: u64) -> R<u64> {
        use async_memcached::AsciiProtocol;
        let name = self.name(key);
        self.client(&name)
            .lock()
            .await
            .set(&name, self.bytes.as_slice(), Some(TTL_SECS), None)
            .await?;
        Ok(version + 1)
    }

    async fn delete(&self, key: &Key) -> R<()> {
        use async_memcached::AsciiProtocol;
        let name = self.name(key);
        // `delete` waits for the reply: DELETED is Ok, NOT_FOUND an error.
        match self.client(&name).lock().await.delete(&name).await {
            Ok(()) => Ok(()),
            Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {
                wrong!("raw memcached: delete found nothing")
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn holds(&self, key: &Key) -> R<bool> {
        use async_memcached::AsciiProtocol;
        let name = self.name(key);
        let got = self.client(&name).lock().await.get(&name).await?;
        Ok(got.and_then(|v| v.data).is_some())
    }
}
