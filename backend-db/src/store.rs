//! [`DbStore`]: the session contract over one SQL table.
//!
//! Every operation is a single statement that is atomic on its own (no transactions,
//! no check-then-write): `insert_new` is a conditional upsert that only replaces an
//! expired row (on MySQL a plain `INSERT`; only when it meets a duplicate key does one
//! `DELETE` of that row, if expired, and a second `INSERT` follow), `update` is an `UPDATE .. WHERE live [AND version = expected]` that
//! returns the new version in the same round trip, `touch` moves only the deadline, and
//! every read filters the deadline in its `WHERE` clause, so an expired row is invisible
//! before `clear_expired` ran. Only a failed `update` with an expected version takes a
//! second round trip, to tell "gone" from "changed" and report the version it found.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use session_core::maintenance::{Progress, scan_stats};
use session_core::users::{
    UserIndex, UserSession, session_id, sort_oldest_first, validate_principal,
};
use session_core::{
    BincodeCodec, Capabilities, ClearReport, Codec, Error, Inserted, LazyRecord, Maintenance,
    RawAccess, Record, Result, SchemaMigration, SessionKey, SessionStore, StoreStats, Timestamp,
    async_trait,
};

use crate::config::{Backend, DbConfig, TableName};
use crate::migrate::{self, Migrated};
use crate::pool::{DbPool, ENGINE, Timeouts, map_sqlx};
use crate::sql::Statements;

/// The in-process queue of writers to one SQLite file (`crate::gate`); its lock is held
/// while a write statement runs.
pub(crate) type WriteGate = Arc<tokio::sync::Mutex<()>>;

/// Rows one `clear_expired` statement deletes at most on PostgreSQL and MySQL, so no
/// statement holds its locks for long on a big table.
pub const CLEAR_BATCH: i64 = 10_000;

/// Rows one `clear_expired` statement deletes at most on SQLite, whose one write lock
/// covers the whole database: a batch of this size holds it for a few milliseconds, and
/// the writers queued meanwhile go before the next batch (see [`DbStore`], "Writers on
/// SQLite").
pub const SQLITE_CLEAR_BATCH: i64 = 1_000;

/// How much later than the database's own limits the store's deadline fires.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// How often `update` re-tries when its follow-up read saw the version it expected
/// (possible only if the row changed twice between the two statements).
const UPDATE_ATTEMPTS: u32 = 3;

/// Runs `$body` with `$p` bound to the typed sqlx pool (each arm compiles for its driver).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            #[cfg(feature = "postgres")]
            DbPool::Postgres($p) => $body,
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite($p) => $body,
            #[cfg(feature = "mysql")]
            DbPool::MySql($p) => $body,
        }
    };
}

/// A session store on one table of an SQLite, PostgreSQL or MySQL/MariaDB database.
///
/// Build it from configuration ([`DbStore::connect`]) or over a pool you already have
/// ([`DbStore::new`], then [`DbStore::migrate`]). Several stores may share one
/// [`DbPool`], each on its own table.
///
/// # Writers on SQLite
///
/// SQLite lets one connection write at a time, for the whole database file. A writer
/// that finds the lock taken waits in SQLite's busy handler, which sleeps between tries
/// (up to 100 ms at a time) and queues nobody: behind a run of other writes (a sweep's
/// batches, a busy moment) one writer can miss every turn for most of a second. So the
/// stores of one process on one database file (whatever their pool or table) take turns
/// in the process first, through one first-come first-served async lock, and only then
/// meet SQLite's lock, where they find at most another process's writer. Reads take no
/// turn (WAL mode: readers never wait for the writer). `clear_expired` deletes
/// [`SQLITE_CLEAR_BATCH`] rows a statement and takes a turn per batch, so a sweep of any
/// size delays a save by one batch (a few milliseconds), not by the sweep.
#[derive(Clone)]
pub struct DbStore {
    pool: DbPool,
    table: TableName,
    sql: Arc<Statements>,
    codec: Arc<dyn Codec>,
    timeouts: Timeouts,
    /// The bound of one operation (acquire plus statement), when a statement timeout is set.
    deadline: Option<Duration>,
    durable: bool,
    /// The queue of this process's writers to the same SQLite database file (`None` on
    /// the server databases and in-memory SQLite, which has one connection).
    write_gate: Option<WriteGate>,
    /// What the migration run by [`DbStore::connect`] (`auto_migrate`) did, until the
    /// first [`Maintenance::migrate`] reports it.
    opened: Arc<Mutex<Option<Migrated>>>,
}

impl std::fmt::Debug for DbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbStore")
            .field("backend", &self.pool.backend())
            .field("table", &self.table.as_str())
            .field("codec", &self.codec.name())
            .finish_non_exhaustive()
    }
}

impl DbStore {
    /// Opens a pool as `config` says and, when `config.auto_migrate` is set (the
    /// default), brings the table's schema up to date. Records use the default codec
    /// (bincode); see [`DbStore::with_codec`].
    pub async fn connect(config: &DbConfig) -> Result<DbStore> {
        config.validate()?;
        let pool = DbPool::connect(config).await?;
        let store =
            DbStore::new(pool, &config.table)?.with_statement_timeout(config.statement_timeout());
        if config.auto_migrate {
            let done = store.migrate().await?;
            *store.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(done);
        }
        Ok(store)
    }

    /// [`DbStore::connect`] with the `db` section and the codec of a layered
    /// configuration: what the `db` engine builds, as the concrete type, for tools that
    /// need more than the trait (`sessions migrate` runs [`DbStore::migrate`] on it, with
    /// `db.auto_migrate = false` to report what the run changed).
    pub async fn from_config(config: &session_core::Config) -> Result<DbStore> {
        let settings = config.settings()?;
        let db: DbConfig = config.section("db")?;
        Ok(DbStore::connect(&db).await?.with_codec(settings.codec()))
    }

    /// A store on `table` over an existing pool. No I/O: call [`DbStore::migrate`] before
    /// first use unless the table already exists. The statement timeout is unset.
    pub fn new(pool: DbPool, table: &str) -> Result<DbStore> {
        let table = TableName::new(table)?;
        let backend = pool.backend();
        let (acquire, durable) = match &pool {
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => (p.options().get_acquire_timeout(), true),
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => (p.options().get_acquire_timeout(), true),
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => {
                let name = p
                    .connect_options()
                    .get_filename()
                    .to_string_lossy()
                    .into_owned();
                let memory = name.contains(":memory:") || name.contains("sqlx-in-memory");
                (p.options().get_acquire_timeout(), !memory)
            }
        };
        let write_gate = match &pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) if durable => {
                Some(crate::gate::for_file(p.connect_options().get_filename()))
            }
            _ => None,
        };
        Ok(DbStore {
            sql: Arc::new(Statements::new(backend, &table)),
            pool,
            table,
            codec: Arc::new(BincodeCodec::default()),
            timeouts: Timeouts {
                acquire,
                statement: None,
            },
            deadline: None,
            durable,
            write_gate,
            opened: Arc::default(),
        })
    }

    /// The SQL text of every statement this store runs (for tools that must run the
    /// very same statements; the store itself needs nothing from the caller).
    pub fn statements(&self) -> &Statements {
        &self.sql
    }

    /// This store encoding records with `codec` (any built-in codec reads both formats).
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> DbStore {
        self.codec = codec;
        self
    }

    /// This store failing an operation with [`Error::Timeout`] when it takes longer than
    /// the pool's acquire timeout plus `timeout` plus a grace second (`None`: only the
    /// acquire is bounded).
    ///
    /// The database enforces the statement limit itself where it can (PostgreSQL's
    /// `statement_timeout`, MariaDB's `max_statement_time`, InnoDB's lock-wait timeout,
    /// SQLite's busy timeout, all set by [`DbPool::connect`]), so it normally answers
    /// first and a timed-out write is rolled back; the store's own deadline, later by the
    /// grace second, is the backstop for a connection that stopped answering. Like any
    /// timeout, that one leaves unknown whether the server applied the write.
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> DbStore {
        self.timeouts.statement = timeout;
        self.deadline = timeout.map(|t| {
            t.saturating_add(self.timeouts.acquire)
                .saturating_add(DEADLINE_GRACE)
        });
        self
    }

    /// Creates or upgrades the session table (and its expiry index) to the schema this
    /// build knows. Safe to run again, and from several processes at once.
    pub async fn migrate(&self) -> Result<Migrated> {
        migrate::migrate(&self.pool, &self.table, &self.timeouts).await
    }

    /// Drops the session table and forgets its schema version: every session is lost.
    /// Meant for tests and tooling.
    pub async fn drop_table(&self) -> Result<()> {
        migrate::drop_table(&self.pool, &self.table, &self.timeouts).await
    }

    /// The pool this store runs on.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// The database behind the pool.
    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// The session table's name.
    pub fn table(&self) -> &str {
        self.table.as_str()
    }

    /// Rows one statement of [`DbStore::clear_expired_with_progress`] deletes at most:
    /// [`SQLITE_CLEAR_BATCH`] on SQLite, [`CLEAR_BATCH`] elsewhere.
    pub fn clear_batch(&self) -> u64 {
        let batch = match &self.pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(_) => SQLITE_CLEAR_BATCH,
            #[allow(unreachable_patterns)] // with only the sqlite driver compiled in
            _ => CLEAR_BATCH,
        };
        batch as u64
    }

    /// [`SessionStore::clear_expired`], calling `progress` with the running total after
    /// each batch of at most [`DbStore::clear_batch`] rows (for a command-line progress
    /// line).
    ///
    /// Each batch is its own short statement, so sessions stay readable and writable
    /// throughout, however many rows expired.
    pub async fn clear_expired_with_progress(
        &self,
        progress: impl FnMut(u64) + Send,
    ) -> Result<u64> {
        self.clear_expired_batched(self.clear_batch(), progress)
            .await
    }

    /// [`DbStore::clear_expired_with_progress`] with `batch` rows per statement
    /// (smaller batches hold shorter locks; at least 1).
    pub async fn clear_expired_batched(
        &self,
        batch: u64,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<u64> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let sql = &self.sql.clear_batch;
        // One cut-off for the whole sweep: rows expiring meanwhile wait for the next one,
        // and the loop ends once a batch comes back short.
        let now = now_millis();
        let mut total = 0u64;
        loop {
            let removed = self
                .run_write(async {
                    on_pool!(&self.pool, p => {
                        sqlx::query(sql.clone())
                            .bind(now)
                            .bind(batch)
                            .execute(p)
                            .await
                            .map(|r| r.rows_affected())
                    })
                })
                .await?;
            total += removed;
            progress(total);
            if removed < batch as u64 {
                return Ok(total);
            }
        }
    }

    /// [`Self::run`] for a statement that writes: on SQLite, after this process's
    /// earlier writers to the same database (see [`DbStore`], "Writers on SQLite"). The
    /// wait counts against the store's deadline like the statement itself.
    async fn run_write<T>(&self, op: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T> {
        match &self.write_gate {
            Some(gate) => {
                self.run(async {
                    let _turn = gate.lock().await;
                    op.await
                })
                .await
            }
            None => self.run(op).await,
        }
    }

    /// Runs one operation under the store's deadline, mapping sqlx errors.
    async fn run<T>(&self, op: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T> {
        // Per statement, not per operation: a sweep or a migration is many statements,
        // each bounded alone, and tools run them on this type directly.
        let outcome = match self.deadline {
            Some(limit) => session_core::layer::deadline(ENGINE, limit, op).await?,
            None => op.await,
        };
        outcome.map_err(|e| map_sqlx(e, &self.timeouts))
    }

    /// The record's bytes, after checking its principal fits the column.
    fn encode(&self, record: &Record) -> Result<Vec<u8>> {
        if let Some(principal) = record.principal() {
            validate_principal(principal)?;
        }
        Ok(self.codec.encode(record)?)
    }

    fn decode(&self, key: &SessionKey, bytes: &[u8]) -> Result<Record> {
        self.codec
            .decode(bytes)
            .map_err(|e| self.undecodable(key, e))
    }

    /// The row's record, its data left encoded until it is read ([`session_core::lazy`]).
    fn decode_lazy(&self, key: &SessionKey, bytes: Vec<u8>) -> Result<LazyRecord> {
        self.codec
            .decode_lazy(bytes.into())
            .map_err(|e| self.undecodable(key, e))
    }

    /// Logs an undecodable row (the key's fingerprint, never the key) and types it.
    fn undecodable(&self, key: &SessionKey, e: session_core::CodecError) -> Error {
        tracing::warn!(
            engine = ENGINE,
            table = self.table.as_str(),
            session = %key.fingerprint(),
            error = %e,
            "stored session record could not be decoded"
        );
        Error::Codec(e)
    }

    /// The live row of `key`: its bytes, deadline and version.
    async fn load_row(&self, key: &SessionKey) -> Result<Option<(Vec<u8>, i64, i64)>> {
        let sql = &self.sql.load;
        self.run(async {
            on_pool!(&self.pool, p => sqlx::query_as(sql.clone())
            .bind(key.as_str())
            .bind(now_millis())
            .fetch_optional(p).await)
        })
        .await
    }

    /// The keys of `principal`'s live rows (a non-locking read of its index).
    async fn keys_of(&self, principal: &str) -> Result<Vec<SessionKey>> {
        let sql = &self.sql.keys_of;
        let now = now_millis();
        let keys: Vec<String> = self
            .run(async {
                on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone())
                    .bind(principal)
                    .bind(now)
                    .fetch_all(p).await)
            })
            .await?;
        Ok(keys.iter().filter_map(|raw| self.parse_key(raw)).collect())
    }

    /// Deletes the live row under `key` if it is still `principal`'s (a row re-bound to
    /// someone else since it was read is no longer this principal's to end).
    async fn delete_of(&self, key: &SessionKey, principal: &str) -> Result<bool> {
        let sql = &self.sql.delete_of;
        let now = now_millis();
        let rows = self
            .run_write(async {
                on_pool!(&self.pool, p => sqlx::query(sql.clone())
                    .bind(key.as_str())
                    .bind(principal)
                    .bind(now)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected()))
            })
            .await?;
        Ok(rows > 0)
    }

    /// A stored key as a [`SessionKey`]; `None` (with a warning) for a row written by
    /// something else whose key is not one.
    fn parse_key(&self, raw: &str) -> Option<SessionKey> {
        match SessionKey::parse(raw) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(
                    engine = ENGINE,
                    table = self.table.as_str(),
                    error = %e,
                    "skipping a row whose key is not a session key"
                );
                None
            }
        }
    }

    /// The version of the live row under `key`, if any.
    async fn live_version(&self, key: &SessionKey, now: i64) -> Result<Option<u64>> {
        let sql = &self.sql.live_version;
        let found: Option<i64> = self
            .run(async {
                on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone())
                .bind(key.as_str())
                .bind(now)
                .fetch_optional(p).await)
            })
            .await?;
        found.map(stored_version).transpose()
    }

    #[cfg(feature = "mysql")]
    #[allow(irrefutable_let_patterns)] // a MySQL-only build
    async fn insert_mysql(
        &self,
        key: &SessionKey,
        data: &[u8],
        record: &Record,
    ) -> Result<Inserted> {
        let DbPool::MySql(p) = &self.pool else {
            return Err(Error::backend(
                ENGINE,
                "internal: MySQL insert on another database",
            ));
        };
        let version = db_version(record.version)?;
        // Two passes at most: the second follows the removal of an expired row.
        for _ in 0..2 {
            let inserted = self
                .run(async {
                    match sqlx::query(self.sql.insert_new.clone())
                        .bind(key.as_str())
                        .bind(data)
                        .bind(record.expires_at.as_unix_millis())
                        .bind(version)
                        .bind(record.principal())
                        .execute(p)
                        .await
                    {
                        Ok(_) => Ok(true),
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            if inserted {
                return Ok(Inserted::Created);
            }
            let removed = self
                .run(async {
                    sqlx::query(self.sql.delete_expired_key.clone())
                        .bind(key.as_str())
                        .bind(now_millis())
                        .execute(p)
                        .await
                        .map(|r| r.rows_affected())
                })
                .await?;
            if removed == 0 {
                return Ok(Inserted::KeyTaken);
            }
        }
        Ok(Inserted::KeyTaken)
    }

    /// One `UPDATE`; `Some(new version)` when a row matched.
    async fn update_once(
        &self,
        key: &SessionKey,
        (data, principal): (&[u8], Option<&str>),
        expires_at: i64,
        now: i64,
        expected: Option<i64>,
    ) -> Result<Option<i64>> {
        let sql = match expected {
            Some(_) => self.sql.update_cas.clone(),
            None => self.sql.update.clone(),
        };
        match &self.pool {
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => {
                let mut q = sqlx::query(sql)
                    .bind(data)
                    .bind(expires_at)
                    .bind(principal)
                    .bind(key.as_str())
                    .bind(now);
                if let Some(v) = expected {
                    q = q.bind(v);
                }
                let done = self.run(q.execute(p)).await?;
                // `version = LAST_INSERT_ID(version + 1)`: the new version comes back as
                // the statement's last-insert id, in the same round trip.
                Ok((done.rows_affected() > 0)
                    .then(|| i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX)))
            }
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => {
                let mut q = sqlx::query_scalar(sql)
                    .bind(data)
                    .bind(expires_at)
                    .bind(principal)
                    .bind(key.as_str())
                    .bind(now);
                if let Some(v) = expected {
                    q = q.bind(v);
                }
                self.run(q.fetch_optional(p)).await
            }
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => {
                let mut q = sqlx::query_scalar(sql)
                    .bind(data)
                    .bind(expires_at)
                    .bind(principal)
                    .bind(key.as_str())
                    .bind(now);
                if let Some(v) = expected {
                    q = q.bind(v);
                }
                self.run_write(q.fetch_optional(p)).await
            }
        }
    }
}

fn now_millis() -> i64 {
    Timestamp::now().as_unix_millis()
}

/// A stored `BIGINT` version as the record's `u64`.
fn stored_version(v: i64) -> Result<u64> {
    u64::try_from(v)
        .map_err(|_| Error::backend(ENGINE, format!("stored session version {v} is negative")))
}

/// A record's version as the column's `BIGINT`.
fn db_version(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Limit(format!("session version {v} exceeds 2^63-1")))
}

#[async_trait]
impl SessionStore for DbStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .cross_process(true)
            .durable(self.durable)
            .compare_and_set(true)
            .listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let data = self.encode(record)?;
        #[cfg(feature = "mysql")]
        if matches!(self.pool, DbPool::MySql(_)) {
            return self.insert_mysql(key, &data, record).await;
        }
        let version = db_version(record.version)?;
        let (sql, expires_at, now) = (
            &self.sql.insert_new,
            record.expires_at.as_unix_millis(),
            now_millis(),
        );
        let rows = self
            .run_write(async {
                on_pool!(&self.pool, p => {
                    sqlx::query(sql.clone())
                        .bind(key.as_str())
                        .bind(data.as_slice())
                        .bind(expires_at)
                        .bind(version)
                        .bind(record.principal())
                        .bind(now)
                        .execute(p)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await?;
        // 1: inserted or replaced an expired row; 0: the conflict's WHERE kept a live row.
        Ok(if rows > 0 {
            Inserted::Created
        } else {
            Inserted::KeyTaken
        })
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let Some((bytes, expires_at, version)) = self.load_row(key).await? else {
            return Ok(None);
        };
        let mut record = self.decode(key, &bytes)?;
        // The columns are authoritative: `touch` and `update` maintain them.
        record.expires_at = Timestamp::from_unix_millis(expires_at);
        record.version = stored_version(version)?;
        Ok(Some(record))
    }

    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        let Some((bytes, expires_at, version)) = self.load_row(key).await? else {
            return Ok(None);
        };
        let mut record = self.decode_lazy(key, bytes)?;
        record.expires_at = Timestamp::from_unix_millis(expires_at);
        record.version = stored_version(version)?;
        Ok(Some(record))
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let data = self.encode(record)?;
        let expected = expected_version.map(db_version).transpose()?;
        let expires_at = record.expires_at.as_unix_millis();
        for _ in 0..UPDATE_ATTEMPTS {
            let now = now_millis();
            if let Some(v) = self
                .update_once(key, (&data, record.principal()), expires_at, now, expected)
                .await?
            {
                return stored_version(v);
            }
            // No row matched: gone, expired, or (with an expected version) changed.
            let Some(expected) = expected_version else {
                return Err(Error::NotFound);
            };
            match self.live_version(key, now).await? {
                None => return Err(Error::NotFound),
                Some(found) if found != expected => {
                    return Err(Error::Conflict { expected, found });
                }
                // It holds the expected version again (it changed twice in between): retry.
                Some(_) => continue,
            }
        }
        let found = self.live_version(key, now_millis()).await?.unwrap_or(0);
        Err(Error::Conflict {
            expected: expected_version.unwrap_or(0),
            found,
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let sql = &self.sql.delete;
        let rows = self
            .run_write(async {
                on_pool!(&self.pool, p => {
                    sqlx::query(sql.clone())
                        .bind(key.as_str())
                        .execute(p)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await?;
        Ok(rows > 0)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let sql = &self.sql.touch;
        // MySQL reports matched rather than changed rows (sqlx sets CLIENT_FOUND_ROWS), so
        // touching to the same deadline still counts as found everywhere.
        let rows = self
            .run_write(async {
                on_pool!(&self.pool, p => {
                    sqlx::query(sql.clone())
                        .bind(expires_at.as_unix_millis())
                        .bind(key.as_str())
                        .bind(now_millis())
                        .execute(p)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await?;
        if rows == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        let sql = &self.sql.exists;
        self.run(async {
            on_pool!(&self.pool, p => {
                sqlx::query(sql.clone())
                    .bind(key.as_str())
                    .bind(now_millis())
                    .fetch_optional(p)
                    .await
                    .map(|row| row.is_some())
            })
        })
        .await
    }

    async fn clear_expired(&self) -> Result<u64> {
        self.clear_expired_with_progress(|_| {}).await
    }

    async fn count(&self) -> Result<u64> {
        let sql = &self.sql.count;
        let n: i64 = self
            .run(async {
                on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone()).fetch_one(p).await)
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let mut out = Vec::with_capacity(limit.min(10_000));
        let mut cursor: Option<String> = after.map(|k| k.as_str().to_owned());
        let page = i64::try_from(limit).unwrap_or(i64::MAX);
        while out.len() < limit {
            let rows: Vec<String> = match &cursor {
                Some(c) => {
                    let sql = &self.sql.list_after;
                    self.run(async {
                        on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone())
                        .bind(c.as_str())
                        .bind(page)
                        .fetch_all(p).await)
                    })
                    .await?
                }
                None => {
                    let sql = &self.sql.list_first;
                    self.run(async {
                        on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone())
                        .bind(page)
                        .fetch_all(p).await)
                    })
                    .await?
                }
            };
            let short = rows.len() < limit;
            for raw in rows {
                match SessionKey::parse(&raw) {
                    Ok(k) if out.len() < limit => out.push(k),
                    Ok(_) => break,
                    // A row written by something else: not a key we could hand out.
                    Err(e) => tracing::warn!(
                        engine = ENGINE,
                        table = self.table.as_str(),
                        error = %e,
                        "skipping a row whose key is not a session key"
                    ),
                }
                cursor = Some(raw);
            }
            if short {
                break;
            }
        }
        Ok(out)
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }
}

/// Every session of a user, from the `principal` column (schema version 2).
///
/// The index is the row itself: `insert_new` and `update` write the record's principal
/// into the column in the same statement as the record, so the column can never lag
/// behind a live session, and a re-login as someone else or a `clear()` moves or empties
/// it with the row. Each operation is one query on the `(principal, expires_at)` index
/// that filters the deadline like every read, so an expired row is never listed,
/// counted or ended, and a deleted row is simply gone (nothing to prune). On MySQL,
/// ending all of a user's sessions reads their keys and deletes them one by one by
/// primary key (one statement on PostgreSQL and SQLite): InnoDB would otherwise lock
/// the principal index before the rows and deadlock with a concurrent save. Ending a
/// session deletes its row, so a request of that session still in flight gets
/// [`Error::NotFound`] from its update, which never upserts.
///
/// [`RawAccess::put_raw`] does not decode the bytes it writes and stores a `NULL`
/// principal: a session planted that way is nobody's until its next save.
#[async_trait]
impl UserIndex for DbStore {
    async fn sessions_of(
        &self,
        principal: &str,
        current: Option<&SessionKey>,
    ) -> Result<Vec<UserSession>> {
        validate_principal(principal)?;
        let sql = &self.sql.sessions_of;
        let now = now_millis();
        let rows: Vec<(String, Vec<u8>, i64, i64)> = self
            .run(async {
                on_pool!(&self.pool, p => sqlx::query_as(sql.clone())
                    .bind(principal)
                    .bind(now)
                    .fetch_all(p).await)
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (raw, bytes, expires_at, version) in rows {
            let Some(key) = self.parse_key(&raw) else {
                continue;
            };
            // One unreadable row is skipped (`decode` logs its fingerprint), never the
            // whole list: the page still shows the user's other sessions.
            let Ok(mut record) = self.decode(&key, &bytes) else {
                continue;
            };
            if record.principal() != Some(principal) {
                // Bytes and column disagree (a row written by another tool): the record
                // is the truth, and it is not this principal's session.
                tracing::warn!(
                    engine = ENGINE,
                    table = self.table.as_str(),
                    session = %key.fingerprint(),
                    "skipping a row whose principal column disagrees with its record"
                );
                continue;
            }
            record.expires_at = Timestamp::from_unix_millis(expires_at);
            record.version = u64::try_from(version).unwrap_or(0);
            out.push(UserSession::from_record(key, &record, current));
        }
        // Oldest first: `created_at` lives in the record, not in a column, so the
        // principal's few rows are ordered once decoded.
        sort_oldest_first(&mut out);
        Ok(out)
    }

    async fn end_session(&self, principal: &str, id: &str) -> Result<bool> {
        validate_principal(principal)?;
        let keys = self.keys_of(principal).await?;
        match keys.into_iter().find(|k| session_id(k) == id) {
            Some(key) => self.delete_of(&key, principal).await,
            None => Ok(false),
        }
    }

    async fn end_sessions(&self, principal: &str, keep: Option<&SessionKey>) -> Result<u64> {
        validate_principal(principal)?;
        #[cfg(feature = "mysql")]
        if matches!(self.pool, DbPool::MySql(_)) {
            // InnoDB would lock the principal index before the rows, the reverse of an
            // `update` (row, then its index entries), and deadlock with a concurrent
            // save of one of the sessions: end them one by one through the primary key,
            // the order every other write takes.
            let mut ended = 0;
            for key in self.keys_of(principal).await? {
                if Some(&key) != keep && self.delete_of(&key, principal).await? {
                    ended += 1;
                }
            }
            return Ok(ended);
        }
        let now = now_millis();
        self.run_write(async {
            on_pool!(&self.pool, p => match keep {
                Some(k) => sqlx::query(self.sql.delete_others_of.clone())
                    .bind(principal)
                    .bind(now)
                    .bind(k.as_str())
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected()),
                None => sqlx::query(self.sql.delete_all_of.clone())
                    .bind(principal)
                    .bind(now)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected()),
            })
        })
        .await
    }

    async fn count_of(&self, principal: &str) -> Result<u64> {
        validate_principal(principal)?;
        let sql = &self.sql.count_of;
        let now = now_millis();
        let n: i64 = self
            .run(async {
                on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone())
                    .bind(principal)
                    .bind(now)
                    .fetch_one(p).await)
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// `sessions migrate`, `clear-expired` and `stats` on the table.
#[async_trait]
impl Maintenance for DbStore {
    fn target(&self) -> String {
        format!("{ENGINE} ({})", self.table.as_str())
    }

    /// [`DbStore::migrate`]. A store opened with `auto_migrate` has already run it: the
    /// first call reports the schema version the table had when the store was opened, so
    /// a tool that opens the store and migrates it says "created" for a table that did
    /// not exist before it ran.
    async fn migrate(&self) -> Result<Option<SchemaMigration>> {
        let done = DbStore::migrate(self).await?;
        let opened = self
            .opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let from = opened.map_or(done.from, |o| o.from.min(done.from));
        let version = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Some(SchemaMigration::new(
            format!("table {}", self.table.as_str()),
            version(from),
            version(done.to),
        )))
    }

    /// [`DbStore::clear_batch`].
    fn default_batch(&self) -> u64 {
        self.clear_batch()
    }

    /// [`DbStore::clear_expired_batched`].
    async fn clear_expired(&self, batch: u64, progress: Progress<'_>) -> Result<ClearReport> {
        let removed = self.clear_expired_batched(batch, progress).await?;
        Ok(ClearReport::removed(removed))
    }

    /// [`scan_stats`] over the table with the store's codec.
    async fn stats(&self, progress: Progress<'_>) -> Result<StoreStats> {
        scan_stats(self, self.codec.as_ref(), progress).await
    }
}

#[async_trait]
impl RawAccess for DbStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let sql = &self.sql.put_raw;
        self.run_write(async {
            on_pool!(&self.pool, p => {
                sqlx::query(sql.clone())
                    .bind(key.as_str())
                    .bind(bytes)
                    .bind(expires_at.as_unix_millis())
                    .execute(p)
                    .await
                    .map(|_| ())
            })
        })
        .await
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let sql = &self.sql.get_raw;
        self.run(async {
            on_pool!(&self.pool, p => sqlx::query_scalar(sql.clone())
            .bind(key.as_str())
            .fetch_optional(p).await)
        })
        .await
    }
}
