//! Django's `db` session engine layout: the `django_session` table as Django's
//! `sessions` migration creates it, with `session_data` in Django's signed format.
//!
//! | column | SQLite | PostgreSQL | MySQL / MariaDB |
//! |---|---|---|---|
//! | `session_key` | `varchar(40) NOT NULL PRIMARY KEY` | same | same |
//! | `session_data` | `text NOT NULL` | same | `longtext NOT NULL` |
//! | `expire_date` | `datetime NOT NULL`, indexed (naive UTC text, as Django's SQLite backend writes it) | `timestamp with time zone NOT NULL`, indexed | `datetime(6) NOT NULL`, indexed (naive UTC, as Django's MySQL backend stores it with `USE_TZ = True`) |
//!
//! The rules are Django's where they matter to a Django process sharing the table:
//! a record is live while `expire_date > now`, [`SessionStore::clear_expired`] deletes
//! `expire_date < now` (as `clearsessions`), `expire_date` is recomputed at every save,
//! and an update never re-inserts a deleted row. On top of Django, an update given an
//! expected version is compare-and-set on the whole stored value (Django's own saves
//! stay last-writer-wins).
//!
//! The store runs over `backend-db`'s [`DbPool`] (the same typed sqlx pools, timeouts
//! and SQLite tuning), so it adds only the statements of Django's layout.

use std::sync::Arc;

use async_trait::async_trait;
use backend_db::{Backend, DbConfig, DbPool, TableName};
use serde::{Deserialize, Serialize};
use session_core::store::RawAccess;
use session_core::{
    Capabilities, Error, Inserted, Record, Result, SessionKey, SessionStore, Timestamp,
};
use sqlx::AssertSqlSafe;

use crate::format::{DjangoFormat, DjangoSecrets, naive_utc, version_of};

/// The engine name in errors and logs.
pub const ENGINE: &str = "django_db";

/// Django's table name.
pub const DJANGO_TABLE: &str = "django_session";

/// Options of the `django_db` engine (config section `django_db`).
///
/// ```toml
/// engine = "django_db"
/// [django_db]
/// url = "postgres://app@127.0.0.1/app"     # the Django DATABASES entry, as a URL
/// table = "django_session"
/// secret_key = "the Django SECRET_KEY"
/// secret_key_fallbacks = []
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DjangoDbConfig {
    /// The database Django uses: `sqlite://FILE`, `postgres://...` or
    /// `mysql://...` / `mariadb://...`.
    pub url: String,
    /// The session table (Django's `django_session` unless a custom session model
    /// renames it).
    pub table: String,
    /// Create the table (as Django's migration does) when it is missing. Off by
    /// default: Django's `manage.py migrate` owns the schema.
    pub auto_migrate: bool,
    /// Django's `SECRET_KEY` and `SECRET_KEY_FALLBACKS`.
    #[serde(flatten)]
    pub secrets: DjangoSecrets,
}

impl Default for DjangoDbConfig {
    fn default() -> Self {
        DjangoDbConfig {
            url: backend_db::config::DEFAULT_URL.into(),
            table: DJANGO_TABLE.into(),
            auto_migrate: false,
            secrets: DjangoSecrets::default(),
        }
    }
}

impl DjangoDbConfig {
    /// Checks the URL's database, the table name and the secret key.
    pub fn validate(&self) -> Result<()> {
        TableName::new(&self.table).map_err(|e| relocate(e, "django_db.table"))?;
        Backend::from_url(&self.url).map_err(|e| relocate(e, "django_db.url"))?;
        self.secrets.validate("django_db")
    }

    /// Connects and builds the store (creating the table when `auto_migrate` is on).
    pub async fn build(&self) -> Result<DjangoDbStore> {
        self.validate()?;
        let pool = DbPool::connect(&DbConfig::new(self.url.clone()))
            .await
            .map_err(|e| relocate(e, "django_db.url"))?;
        let store =
            DjangoDbStore::new(pool, &self.table, DjangoFormat::from_secrets(&self.secrets))?;
        if self.auto_migrate {
            store.migrate().await?;
        }
        Ok(store)
    }
}

fn relocate(e: Error, key: &str) -> Error {
    match e {
        Error::Config { message, .. } => Error::config(key, message),
        other => other,
    }
}

fn backend(e: sqlx::Error) -> Error {
    Error::backend(ENGINE, e)
}

/// The SQL dialect of the pool: how datetimes are written, read and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// Sessions in Django's `django_session` table (see the module docs).
#[derive(Clone)]
pub struct DjangoDbStore {
    pool: DbPool,
    table: String,
    dialect: Dialect,
    format: Arc<DjangoFormat>,
}

impl std::fmt::Debug for DjangoDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DjangoDbStore")
            .field("table", &self.table)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

macro_rules! on_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            DbPool::Sqlite($p) => $body,
            DbPool::Postgres($p) => $body,
            DbPool::MySql($p) => $body,
        }
    };
}

impl DjangoDbStore {
    /// A store on `table` of `pool` (SQLite, PostgreSQL or MySQL/MariaDB), signing
    /// with `format`.
    pub fn new(pool: DbPool, table: &str, format: DjangoFormat) -> Result<DjangoDbStore> {
        let table = TableName::new(table)?.as_str().to_owned();
        let dialect = match pool.backend() {
            Backend::Sqlite => Dialect::Sqlite,
            Backend::Postgres => Dialect::Postgres,
            Backend::MySql => Dialect::MySql,
        };
        Ok(DjangoDbStore {
            pool,
            table,
            dialect,
            format: Arc::new(format),
        })
    }

    /// The signed format this store reads and writes.
    pub fn format(&self) -> &DjangoFormat {
        &self.format
    }

    /// The pool.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Creates the table and its index as Django's `sessions.0001_initial` migration
    /// does, when missing. (Then tell Django with `manage.py migrate sessions
    /// --fake-initial`; the usual order is to let Django's `migrate` create it.)
    pub async fn migrate(&self) -> Result<()> {
        let t = &self.table;
        let idx = if t == DJANGO_TABLE {
            "django_session_expire_date_a5c62663".to_owned()
        } else {
            format!("{t}_expire_date")
        };
        let stmts = match self.dialect {
            // MySQL has no `CREATE INDEX IF NOT EXISTS` (MariaDB has): the index is
            // part of the table's definition. The types are those of Django's MySQL
            // backend (`TextField` is `longtext`, `DateTimeField` is `datetime(6)`).
            Dialect::MySql => vec![format!(
                "CREATE TABLE IF NOT EXISTS `{t}` (`session_key` varchar(40) NOT NULL PRIMARY KEY, \
                 `session_data` longtext NOT NULL, `expire_date` datetime(6) NOT NULL, \
                 INDEX `{idx}` (`expire_date`))"
            )],
            Dialect::Sqlite | Dialect::Postgres => {
                let ts = if self.dialect == Dialect::Postgres {
                    "timestamp with time zone"
                } else {
                    "datetime"
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS \"{t}\" (\"session_key\" varchar(40) NOT NULL PRIMARY KEY, \
                         \"session_data\" text NOT NULL, \"expire_date\" {ts} NOT NULL)"
                    ),
                    format!("CREATE INDEX IF NOT EXISTS \"{idx}\" ON \"{t}\" (\"expire_date\")"),
                ]
            }
        };
        for s in stmts {
            on_pool!(self, p => sqlx::query(AssertSqlSafe(s)).execute(p).await.map(|_| ()).map_err(backend)?);
        }
        Ok(())
    }

    /// The statement for this pool's database. The statements are written with
    /// PostgreSQL's numbered parameters (`$1`, bound in order) and double-quoted
    /// identifiers; MySQL gets `?` and backquotes (its default `sql_mode` has no
    /// `ANSI_QUOTES`). No statement has either character inside a literal.
    fn sql(&self, s: String) -> String {
        if self.dialect != Dialect::MySql {
            return s;
        }
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' => out.push('`'),
                '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    out.push('?');
                }
                c => out.push(c),
            }
        }
        out
    }

    /// A datetime parameter: naive UTC text as Django's SQLite and MySQL backends
    /// store it; with an explicit UTC offset for PostgreSQL.
    fn ts(&self, t: Timestamp) -> String {
        let s = naive_utc(t, ' ');
        if self.dialect == Dialect::Postgres {
            s + "+00:00"
        } else {
            s
        }
    }

    /// The SQL for parameter `$n` as a datetime.
    fn p(&self, n: u8) -> String {
        match self.dialect {
            Dialect::Postgres => format!("CAST(${n} AS timestamptz)"),
            Dialect::MySql => format!("CAST(${n} AS DATETIME(6))"),
            Dialect::Sqlite => format!("${n}"),
        }
    }

    /// The SQL reading `expire_date` as text `fromisoformat` understands.
    fn expire_text(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => {
                "to_char(\"expire_date\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            }
            Dialect::MySql => "DATE_FORMAT(`expire_date`, '%Y-%m-%dT%H:%i:%s.%f')",
            Dialect::Sqlite => "\"expire_date\"",
        }
    }

    fn record(&self, data: &str, expire: &str, now: Timestamp) -> Result<Record> {
        let (data_map, expiry) = self.format.decode(data)?;
        let expires_at = crate::format::iso_parse(expire)
            .ok_or_else(|| Error::backend(ENGINE, format!("unreadable expire_date {expire:?}")))?;
        Ok(Record {
            meta: crate::format::meta_of(&data_map),
            data: data_map,
            expiry,
            created_at: now,
            expires_at,
            version: version_of(data.as_bytes()),
        })
    }

    async fn live_data(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Result<Option<(String, String)>> {
        let sql = format!(
            "SELECT \"session_data\", {} FROM \"{}\" WHERE \"session_key\" = $1 AND \"expire_date\" > {}",
            self.expire_text(),
            self.table,
            self.p(2)
        );
        let row: Option<(String, String)> = on_pool!(self, p => sqlx::query_as(AssertSqlSafe(self.sql(sql)))
            .bind(key.as_str())
            .bind(self.ts(now))
            .fetch_optional(p)
            .await
            .map_err(backend)?);
        Ok(row)
    }
}

#[async_trait]
impl SessionStore for DjangoDbStore {
    fn engine(&self) -> &str {
        ENGINE
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .cross_process(true)
            .durable(true)
            .compare_and_set(true)
            .listing(true)
    }

    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let data = self.format.encode(record)?;
        let now = Timestamp::now();
        let t = &self.table;
        let del = format!(
            "DELETE FROM \"{t}\" WHERE \"session_key\" = $1 AND \"expire_date\" <= {}",
            self.p(2)
        );
        on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(del)))
            .bind(key.as_str())
            .bind(self.ts(now))
            .execute(p)
            .await
            .map(|_| ())
            .map_err(backend)?);
        let ins = format!(
            "INSERT INTO \"{t}\" (\"session_key\", \"session_data\", \"expire_date\") VALUES ($1, $2, {})",
            self.p(3)
        );
        let res = on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(ins)))
            .bind(key.as_str())
            .bind(&data)
            .bind(self.ts(record.expires_at))
            .execute(p)
            .await
            .map(|_| ()));
        match res {
            Ok(()) => Ok(Inserted::Created),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Inserted::KeyTaken),
            Err(e) => Err(backend(e)),
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        match self.live_data(key, now).await? {
            None => Ok(None),
            Some((data, expire)) => match self.record(&data, &expire, now) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    tracing::warn!(engine = ENGINE, key = %key.fingerprint(), error = %e, "Django session data refused");
                    Err(e)
                }
            },
        }
    }

    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let data = self.format.encode(record)?;
        let now = Timestamp::now();
        let t = &self.table;
        let affected = match expected_version {
            None => {
                let sql = format!(
                    "UPDATE \"{t}\" SET \"session_data\" = $1, \"expire_date\" = {} \
                     WHERE \"session_key\" = $3 AND \"expire_date\" > {}",
                    self.p(2),
                    self.p(4)
                );
                on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(sql)))
                    .bind(&data)
                    .bind(self.ts(record.expires_at))
                    .bind(key.as_str())
                    .bind(self.ts(now))
                    .execute(p)
                    .await
                    .map_err(backend)?
                    .rows_affected())
            }
            Some(expected) => {
                let Some((old, _)) = self.live_data(key, now).await? else {
                    return Err(Error::NotFound);
                };
                let found = version_of(old.as_bytes());
                if found != expected {
                    return Err(Error::Conflict { expected, found });
                }
                // MySQL compares text under the column's collation (Django's default
                // is case-insensitive): the compare-and-set compares bytes.
                let same_data = if self.dialect == Dialect::MySql {
                    "BINARY \"session_data\" = BINARY $4"
                } else {
                    "\"session_data\" = $4"
                };
                let sql = format!(
                    "UPDATE \"{t}\" SET \"session_data\" = $1, \"expire_date\" = {} \
                     WHERE \"session_key\" = $3 AND {same_data} AND \"expire_date\" > {}",
                    self.p(2),
                    self.p(5)
                );
                let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(sql)))
                    .bind(&data)
                    .bind(self.ts(record.expires_at))
                    .bind(key.as_str())
                    .bind(&old)
                    .bind(self.ts(now))
                    .execute(p)
                    .await
                    .map_err(backend)?
                    .rows_affected());
                if n == 0 {
                    // Changed or deleted between the read and the write.
                    return match self.live_data(key, now).await? {
                        None => Err(Error::NotFound),
                        Some((cur, _)) => Err(Error::Conflict {
                            expected,
                            found: version_of(cur.as_bytes()),
                        }),
                    };
                }
                n
            }
        };
        if affected == 0 {
            return Err(Error::NotFound);
        }
        Ok(version_of(data.as_bytes()))
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let sql = format!("DELETE FROM \"{}\" WHERE \"session_key\" = $1", self.table);
        let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(sql)))
            .bind(key.as_str())
            .execute(p)
            .await
            .map_err(backend)?
            .rows_affected());
        Ok(n > 0)
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        let sql = format!(
            "UPDATE \"{}\" SET \"expire_date\" = {} WHERE \"session_key\" = $2 AND \"expire_date\" > {}",
            self.table,
            self.p(1),
            self.p(3)
        );
        let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(sql)))
            .bind(self.ts(expires_at))
            .bind(key.as_str())
            .bind(self.ts(Timestamp::now()))
            .execute(p)
            .await
            .map_err(backend)?
            .rows_affected());
        if n == 0 { Err(Error::NotFound) } else { Ok(()) }
    }

    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.live_data(key, Timestamp::now()).await?.is_some())
    }

    async fn clear_expired(&self) -> Result<u64> {
        let sql = format!(
            "DELETE FROM \"{}\" WHERE \"expire_date\" < {}",
            self.table,
            self.p(1)
        );
        let n = on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(sql)))
            .bind(self.ts(Timestamp::now()))
            .execute(p)
            .await
            .map_err(backend)?
            .rows_affected());
        Ok(n)
    }

    async fn count(&self) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM \"{}\"", self.table);
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(AssertSqlSafe(self.sql(sql)))
            .fetch_one(p)
            .await
            .map_err(backend)?);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list(&self, after: Option<&SessionKey>, limit: usize) -> Result<Vec<SessionKey>> {
        let sql = format!(
            "SELECT \"session_key\" FROM \"{}\" WHERE \"session_key\" > $1 ORDER BY \"session_key\" LIMIT $2",
            self.table
        );
        let after = after.map(|k| k.as_str().to_owned()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let keys: Vec<String> = on_pool!(self, p => sqlx::query_scalar(AssertSqlSafe(self.sql(sql)))
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(backend)?);
        // Keys a custom Django setup wrote outside our alphabet are passed over.
        Ok(keys
            .iter()
            .filter_map(|k| SessionKey::parse(k).ok())
            .collect())
    }

    fn raw(&self) -> Option<&dyn RawAccess> {
        Some(self)
    }
}

#[async_trait]
impl RawAccess for DjangoDbStore {
    async fn put_raw(&self, key: &SessionKey, bytes: &[u8], expires_at: Timestamp) -> Result<()> {
        let text = String::from_utf8_lossy(bytes).into_owned();
        self.delete(key).await?;
        let sql = format!(
            "INSERT INTO \"{}\" (\"session_key\", \"session_data\", \"expire_date\") VALUES ($1, $2, {})",
            self.table,
            self.p(3)
        );
        on_pool!(self, p => sqlx::query(AssertSqlSafe(self.sql(sql)))
            .bind(key.as_str())
            .bind(text)
            .bind(self.ts(expires_at))
            .execute(p)
            .await
            .map(|_| ())
            .map_err(backend)?);
        Ok(())
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Vec<u8>>> {
        let sql = format!(
            "SELECT \"session_data\" FROM \"{}\" WHERE \"session_key\" = $1",
            self.table
        );
        let v: Option<String> = on_pool!(self, p => sqlx::query_scalar(AssertSqlSafe(self.sql(sql)))
            .bind(key.as_str())
            .fetch_optional(p)
            .await
            .map_err(backend)?);
        Ok(v.map(String::into_bytes))
    }
}
