//! Connection pools: one typed sqlx pool per database, and the mapping of sqlx errors.
//!
//! [`DbPool`] is an enum over sqlx's three typed pools rather than its `Any` driver: typed
//! pools bind native types (`BYTEA`, `BIGINT`) without a translation layer, keep each
//! driver's statement cache, and let each dialect use its own best statement.
//!
//! Pools are tuned for short session queries: connections are not pinged on every
//! acquire (sqlx's default would double each operation's round trips) but only when they
//! sat idle for a while, SQLite runs in WAL mode with a busy timeout so readers never wait
//! for a writer, and PostgreSQL enforces the statement timeout on the server.

use std::str::FromStr;
use std::time::Duration;

use session_core::{Error, Result};
#[cfg(feature = "mysql")]
use sqlx::AssertSqlSafe;
#[cfg(feature = "mysql")]
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
};
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Database};

use crate::config::{Backend, DbConfig, redact_url};

/// The engine name in errors and logs.
pub(crate) const ENGINE: &str = "db";

/// A connection idle longer than this is pinged before use; fresher ones are trusted.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// SQLite's busy timeout when the statement timeout is disabled (also the limit an
/// error reports when no statement timeout is set).
const DEFAULT_SQLITE_BUSY: Duration = Duration::from_secs(5);

/// A pool of connections to one of the supported databases. Cheap to clone (shared
/// inside), so several stores (tables) can share one pool.
///
/// Each variant exists only when its driver's cargo feature (`sqlite`, `postgres`,
/// `mysql`) is enabled.
#[derive(Clone, Debug)]
pub enum DbPool {
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    MySql(MySqlPool),
}

#[cfg(feature = "sqlite")]
impl From<SqlitePool> for DbPool {
    fn from(p: SqlitePool) -> Self {
        DbPool::Sqlite(p)
    }
}

#[cfg(feature = "postgres")]
impl From<PgPool> for DbPool {
    fn from(p: PgPool) -> Self {
        DbPool::Postgres(p)
    }
}

#[cfg(feature = "mysql")]
impl From<MySqlPool> for DbPool {
    fn from(p: MySqlPool) -> Self {
        DbPool::MySql(p)
    }
}

impl DbPool {
    /// Opens a pool for `config.url` with `config`'s pool settings, and checks that the
    /// database answers (one connection is opened).
    pub async fn connect(config: &DbConfig) -> Result<DbPool> {
        config.validate()?;
        let backend = Backend::from_url(&config.url)?;
        #[allow(unused_variables)] // with only some drivers compiled in
        let bad_url = |e: sqlx::Error| {
            Error::config(
                "db.url",
                format!(
                    "{} is not a valid {backend} URL: {e}",
                    redact_url(&config.url)
                ),
            )
        };
        let pool = match backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let in_memory = is_sqlite_memory(&config.url);
                let mut opts = SqliteConnectOptions::from_str(&config.url)
                    .map_err(bad_url)?
                    .create_if_missing(true)
                    .busy_timeout(config.statement_timeout().unwrap_or(DEFAULT_SQLITE_BUSY));
                if !in_memory {
                    // WAL: readers never block the writer nor each other. NORMAL sync is
                    // crash-safe in WAL mode (a power cut may lose the last commits only).
                    opts = opts
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal);
                }
                let mut pool = tune(SqlitePoolOptions::new(), config);
                if in_memory {
                    // An in-memory database lives as long as its connections; sqlx shares
                    // it between connections through SQLite's shared cache, whose table
                    // locks are not covered by the busy timeout: one connection, kept.
                    pool = pool
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                probe(config, &opts).await?;
                DbPool::Sqlite(
                    pool.connect_with(opts)
                        .await
                        .map_err(|e| connect_error(config, e))?,
                )
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut opts = PgConnectOptions::from_str(&config.url).map_err(bad_url)?;
                if let Some(t) = config.statement_timeout() {
                    // Sent in the startup packet: no extra round trip per connection.
                    opts = opts.options([("statement_timeout", t.as_millis().to_string())]);
                }
                probe(config, &opts).await?;
                DbPool::Postgres(
                    tune(PgPoolOptions::new(), config)
                        .connect_with(opts)
                        .await
                        .map_err(|e| connect_error(config, e))?,
                )
            }
            #[cfg(feature = "mysql")]
            Backend::MySql => {
                // `mariadb://` is our alias; the driver only knows `mysql://`.
                let url = match config.url.split_once(':') {
                    Some((_, rest)) => format!("mysql:{rest}"),
                    None => config.url.clone(),
                };
                let opts = MySqlConnectOptions::from_str(&url).map_err(bad_url)?;
                let statement_timeout = config.statement_timeout();
                probe(config, &opts).await?;
                DbPool::MySql(
                    tune(MySqlPoolOptions::new(), config)
                        .after_connect(move |conn, _| {
                            Box::pin(async move { mysql_session(conn, statement_timeout).await })
                        })
                        .connect_with(opts)
                        .await
                        .map_err(|e| connect_error(config, e))?,
                )
            }
            // `config.validate()` refused it already; kept for the match's sake.
            #[allow(unreachable_patterns)]
            other => return Err(other.not_compiled_in()),
        };
        Ok(pool)
    }

    /// Which database this pool talks to.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            DbPool::Postgres(_) => Backend::Postgres,
            #[cfg(feature = "mysql")]
            DbPool::MySql(_) => Backend::MySql,
        }
    }

    /// Closes every connection; later operations fail.
    pub async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(p) => p.close().await,
            #[cfg(feature = "postgres")]
            DbPool::Postgres(p) => p.close().await,
            #[cfg(feature = "mysql")]
            DbPool::MySql(p) => p.close().await,
        }
    }
}

#[cfg(feature = "mysql")]
/// Per-connection MySQL/MariaDB settings, one round trip (two on MySQL proper).
async fn mysql_session(
    conn: &mut MySqlConnection,
    statement_timeout: Option<Duration>,
) -> Result<(), sqlx::Error> {
    // Every statement is its own transaction; READ COMMITTED takes no gap locks, so batch
    // deletes of expired rows and inserts of new ones never block each other.
    let mut setup = String::from("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED");
    if let Some(t) = statement_timeout {
        // Row-lock waits end on the server (whole seconds, at least 1), before the
        // store's own deadline, so a timed-out write is not applied behind our back.
        let secs = t.as_millis().div_ceil(1000).max(1);
        setup.push_str(&format!("; SET SESSION innodb_lock_wait_timeout = {secs}"));
    }
    sqlx::raw_sql(AssertSqlSafe(setup))
        .execute(&mut *conn)
        .await?;
    if let Some(t) = statement_timeout {
        // MariaDB bounds every statement on the server; MySQL has no such variable
        // (its `max_execution_time` covers only SELECT), which it reports as 1193.
        let set = format!("SET SESSION max_statement_time = {:.3}", t.as_secs_f64());
        match sqlx::raw_sql(AssertSqlSafe(set)).execute(&mut *conn).await {
            Err(sqlx::Error::Database(e))
                if e.try_downcast_ref::<MySqlDatabaseError>()
                    .is_some_and(|m| m.number() == 1193) => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Whether an SQLite URL names an in-memory database.
#[cfg(feature = "sqlite")]
fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn tune<DB: Database>(
    opts: sqlx::pool::PoolOptions<DB>,
    config: &DbConfig,
) -> sqlx::pool::PoolOptions<DB> {
    opts.max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout())
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    // A dead connection is dropped and replaced, not handed out.
                    return Ok(conn.ping().await.is_ok());
                }
                Ok(true)
            })
        })
}

/// Opens and closes one connection, so a failure reports its cause (refused, bad
/// password, unknown database): the pool would only say that it timed out.
async fn probe<O>(config: &DbConfig, opts: &O) -> Result<()>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(config.acquire_timeout(), opts.connect()).await {
        Ok(Ok(conn)) => {
            // Best effort: the connection was fine, its goodbye does not matter.
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(connect_error(config, e)),
        Err(_) => Err(Error::Timeout {
            engine: ENGINE.to_owned(),
            after: config.acquire_timeout(),
        }),
    }
}

fn connect_error(config: &DbConfig, e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut => Error::Timeout {
            engine: ENGINE.to_owned(),
            after: config.acquire_timeout(),
        },
        other => Error::backend(
            ENGINE,
            format!("could not connect to {}: {other}", redact_url(&config.url)),
        ),
    }
}

/// Maps a sqlx error: pool and statement timeouts become [`Error::Timeout`], everything
/// else [`Error::Backend`] with the sqlx error as its source. Never `NotFound`: an outage
/// is not a missing session.
pub(crate) fn map_sqlx(e: sqlx::Error, timeouts: &Timeouts) -> Error {
    match &e {
        sqlx::Error::PoolTimedOut => {
            return Error::Timeout {
                engine: ENGINE.to_owned(),
                after: timeouts.acquire,
            };
        }
        sqlx::Error::Database(db) if database_timed_out(db.as_ref()) => {
            return Error::Timeout {
                engine: ENGINE.to_owned(),
                after: timeouts.statement.unwrap_or(DEFAULT_SQLITE_BUSY),
            };
        }
        _ => {}
    }
    Error::backend(ENGINE, e)
}

/// Whether a database error says that a server-side limit ran out.
fn database_timed_out(db: &dyn sqlx::error::DatabaseError) -> bool {
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        // MariaDB max_statement_time, MySQL max_execution_time, lock wait timeout.
        return matches!(my.number(), 1969 | 3024 | 1205);
    }
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<SqliteError>().is_some() {
        // SQLITE_BUSY and its extended codes: the busy timeout ran out.
        return db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|n| n & 0xff == 5);
    }
    // PostgreSQL query_canceled (statement_timeout), lock_not_available.
    matches!(db.code().as_deref(), Some("57014" | "55P03"))
}

/// The limits an error message reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub acquire: Duration,
    pub statement: Option<Duration>,
}
