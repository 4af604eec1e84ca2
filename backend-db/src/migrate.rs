//! Embedded migrations: the session table's schema, versioned, applied by one call.
//!
//! The table name is configurable, so sqlx's file-based `migrate!` (static SQL, one
//! global history table) does not fit; this module keeps the same idea at the size we
//! need. Each session table's schema version lives in the shared `session_store_schema`
//! table (one row per session table); a built-in list holds every schema step in order,
//! and a run applies only the steps above the recorded version, so running it again
//! changes nothing (the DDL also says `IF NOT EXISTS`, for tables made by hand, and
//! where a dialect cannot say it the catalogue is asked first). The recorded version is
//! trusted only while the table exists: a table dropped behind the record's back counts
//! as version 0 and is created again.
//!
//! Upgrading is the same call: a store opened with `auto_migrate` (the default) brings
//! an older table up to date when it connects, and `sessions migrate` does it for
//! deployments that migrate ahead of the rollout. A store opened without `auto_migrate`
//! never checks the version, as before: on a table still at version 1 its writes fail
//! with a backend error naming the missing `principal` column until the table is
//! migrated. A build that meets a table newer than it knows refuses to migrate it.
//!
//! Concurrent runs (several application instances starting at once) are serialised by a
//! database lock: a PostgreSQL transaction-scoped advisory lock (the DDL is
//! transactional there too), MySQL's `GET_LOCK`, SQLite's `BEGIN IMMEDIATE`.

use std::time::Duration;

use session_core::{Error, Timestamp};
use sqlx::AssertSqlSafe;
#[cfg(feature = "mysql")]
use sqlx::Connection;

use crate::config::{Backend, SCHEMA_TABLE, TableName};
use crate::pool::{DbPool, ENGINE, Timeouts, map_sqlx};
use crate::sql;

/// The schema version this build creates and understands.
///
/// 1. The session table and its expiry index.
/// 2. The nullable `principal` column and its index, behind the store's
///    [`UserIndex`](session_core::UserIndex). Rows written before the upgrade keep a
///    `NULL` principal: they were anonymous, or were signed in by a release that
///    predates the index, and are not listed as anyone's sessions.
pub const SCHEMA_VERSION: i64 = 2;

/// One schema step.
struct Migration {
    version: i64,
    ddl: fn(Backend, &TableName) -> Vec<sql::Ddl>,
}

/// Every schema step, in order; a new table runs them all. A future change appends a
/// step.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        ddl: sql::create_table_v1,
    },
    Migration {
        version: 2,
        ddl: sql::add_principal_v2,
    },
];

#[cfg(feature = "postgres")]
/// Advisory lock key for PostgreSQL (any constant; "sessmigr" in ASCII).
const PG_LOCK_KEY: i64 = 0x7365_7373_6d69_6772;

#[cfg(feature = "mysql")]
/// Name of MySQL's named lock.
const MYSQL_LOCK: &str = "session_store_schema";

/// How long a migration waits for another instance's migration to finish.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// What a migration run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The table's schema version before the run (0: no table, whatever was recorded).
    pub from: i64,
    /// The version after the run.
    pub to: i64,
}

impl Migrated {
    /// Whether the run changed the schema.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

enum Failure {
    Sqlx(sqlx::Error),
    Newer(i64),
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    Lock,
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Sqlx(e)
    }
}

/// Statements on the schema-version table, in `backend`'s dialect.
struct SchemaSql {
    create: String,
    select: String,
    insert: String,
    update: String,
    delete: String,
    /// Counts the session table (0 or 1) in the catalogue; binds the table name.
    exists: String,
}

impl SchemaSql {
    fn new(backend: Backend) -> SchemaSql {
        let s = sql::quote(backend, SCHEMA_TABLE);
        let p = |n: u32| match backend {
            Backend::Postgres => format!("${n}"),
            Backend::Sqlite => format!("?{n}"),
            Backend::MySql => "?".to_owned(),
        };
        SchemaSql {
            create: sql::create_schema_table(backend),
            select: format!("SELECT version FROM {s} WHERE table_name = {}", p(1)),
            insert: format!(
                "INSERT INTO {s} (version, applied_at, table_name) VALUES ({}, {}, {})",
                p(1),
                p(2),
                p(3)
            ),
            update: format!(
                "UPDATE {s} SET version = {}, applied_at = {} WHERE table_name = {}",
                p(1),
                p(2),
                p(3)
            ),
            delete: format!("DELETE FROM {s} WHERE table_name = {}", p(1)),
            exists: match backend {
                // Resolved like the unqualified name in every statement: on the search path.
                Backend::Postgres => "SELECT COUNT(*) FROM pg_catalog.pg_class \
                     WHERE oid = to_regclass(quote_ident($1))"
                    .to_owned(),
                Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master \
                     WHERE type = 'table' AND name = ?1 COLLATE NOCASE"
                    .to_owned(),
                Backend::MySql => "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = ?"
                    .to_owned(),
            },
        }
    }
}

/// Applies the pending steps on one connection (already holding the migration lock).
macro_rules! apply {
    ($conn:expr, $backend:expr, $table:expr) => {{
        let q = SchemaSql::new($backend);
        sqlx::raw_sql(AssertSqlSafe(q.create.clone()))
            .execute(&mut *$conn)
            .await?;
        let current: Option<i64> = sqlx::query_scalar(AssertSqlSafe(q.select.clone()))
            .bind($table.as_str())
            .fetch_optional(&mut *$conn)
            .await?;
        let present: i64 = sqlx::query_scalar(AssertSqlSafe(q.exists.clone()))
            .bind($table.as_str())
            .fetch_one(&mut *$conn)
            .await?;
        // A recorded version without its table (dropped by hand): start from scratch.
        let from = if present > 0 { current.unwrap_or(0) } else { 0 };
        if from > SCHEMA_VERSION {
            return Err(Failure::Newer(from));
        }
        for m in MIGRATIONS.iter().filter(|m| m.version > from) {
            for ddl in (m.ddl)($backend, $table) {
                if let Some(applied) = ddl.applied {
                    let found: i64 = sqlx::query_scalar(AssertSqlSafe(applied))
                        .bind($table.as_str())
                        .fetch_one(&mut *$conn)
                        .await?;
                    if found > 0 {
                        continue;
                    }
                }
                sqlx::raw_sql(AssertSqlSafe(ddl.sql))
                    .execute(&mut *$conn)
                    .await?;
            }
        }
        if from < SCHEMA_VERSION {
            let record = if current.is_some() {
                q.update.clone()
            } else {
                q.insert.clone()
            };
            sqlx::query(AssertSqlSafe(record))
                .bind(SCHEMA_VERSION)
                .bind(Timestamp::now().as_unix_millis())
                .bind($table.as_str())
                .execute(&mut *$conn)
                .await?;
        }
        Ok::<Migrated, Failure>(Migrated {
            from,
            to: SCHEMA_VERSION,
        })
    }};
}

/// Brings `table` to [`SCHEMA_VERSION`].
pub(crate) async fn migrate(
    pool: &DbPool,
    table: &TableName,
    timeouts: &Timeouts,
) -> Result<Migrated, Error> {
    let backend = pool.backend();
    let outcome: Result<Migrated, Failure> = match pool {
        #[cfg(feature = "postgres")]
        DbPool::Postgres(p) => {
            async {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                let done = apply!(tx, backend, table)?;
                tx.commit().await?;
                Ok(done)
            }
            .await
        }
        #[cfg(feature = "sqlite")]
        DbPool::Sqlite(p) => {
            async {
                // IMMEDIATE takes the write lock up front (waiting up to the busy
                // timeout), so two migrations never deadlock upgrading a read lock.
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let done = apply!(tx, backend, table)?;
                tx.commit().await?;
                Ok(done)
            }
            .await
        }
        #[cfg(feature = "mysql")]
        DbPool::MySql(p) => {
            async {
                // MySQL DDL commits implicitly, so a named lock (held by this connection)
                // serialises concurrent runs instead of a transaction.
                let mut conn = p.acquire().await?;
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                    .bind(MYSQL_LOCK)
                    .bind(LOCK_WAIT.as_secs() as i64)
                    .fetch_one(&mut *conn)
                    .await?;
                if got != Some(1) {
                    return Err(Failure::Lock);
                }
                let done = async { apply!(conn, backend, table) }.await;
                let released = sqlx::query("SELECT RELEASE_LOCK(?)")
                    .bind(MYSQL_LOCK)
                    .execute(&mut *conn)
                    .await;
                if released.is_err() {
                    // A connection that may still hold the lock must not go back to the
                    // pool; closing it releases the lock on the server.
                    let _ = conn.detach().close().await;
                }
                let done = done?;
                released?;
                Ok(done)
            }
            .await
        }
    };
    outcome.map_err(|f| match f {
        Failure::Sqlx(e) => map_sqlx(e, timeouts),
        Failure::Newer(v) => Error::backend(
            ENGINE,
            format!(
                "session table {table} has schema version {v}, newer than this build \
                 understands ({SCHEMA_VERSION}); upgrade the application before using it"
            ),
        ),
        Failure::Lock => Error::Timeout {
            engine: ENGINE.to_owned(),
            after: LOCK_WAIT,
        },
    })
}

/// Drops `table` and forgets its schema version. Destructive: for tests and tooling.
pub(crate) async fn drop_table(
    pool: &DbPool,
    table: &TableName,
    timeouts: &Timeouts,
) -> Result<(), Error> {
    let backend = pool.backend();
    let q = SchemaSql::new(backend);
    let drop = format!(
        "DROP TABLE IF EXISTS {}",
        sql::quote(backend, table.as_str())
    );
    macro_rules! run {
        ($p:expr) => {
            async {
                sqlx::raw_sql(AssertSqlSafe(drop)).execute($p).await?;
                sqlx::raw_sql(AssertSqlSafe(q.create)).execute($p).await?;
                sqlx::query(AssertSqlSafe(q.delete))
                    .bind(table.as_str())
                    .execute($p)
                    .await?;
                Ok::<(), sqlx::Error>(())
            }
            .await
        };
    }
    let done = match pool {
        #[cfg(feature = "postgres")]
        DbPool::Postgres(p) => run!(p),
        #[cfg(feature = "sqlite")]
        DbPool::Sqlite(p) => run!(p),
        #[cfg(feature = "mysql")]
        DbPool::MySql(p) => run!(p),
    };
    done.map_err(|e| map_sqlx(e, timeouts))
}
