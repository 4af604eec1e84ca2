//! The `db` engine's options (config section `db`) and the validated table name.
//!
//! Everything an operator can set is checked here before any connection is opened: the
//! URL's scheme picks the database, the table name must be a plain SQL identifier (it is
//! the only thing ever interpolated into SQL), and pool sizes and timeouts must be usable.
//! Passwords in URLs never reach `Debug` output or error messages.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_core::{Error, Result};

/// The table that records each session table's schema version. Reserved: a session table
/// cannot have this name.
pub const SCHEMA_TABLE: &str = "session_store_schema";

/// The default database: an SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://sessions.db";

/// The default session table.
pub const DEFAULT_TABLE: &str = "sessions";

/// Options of the `db` engine (config section `db`).
///
/// ```toml
/// engine = "db"
/// [db]
/// url = "postgres://app@127.0.0.1/app"   # or sqlite://sessions.db, mysql://...
/// table = "sessions"
/// max_connections = 16
/// acquire_timeout_ms = 5000
/// statement_timeout_ms = 5000
/// auto_migrate = true
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    /// Where the database is; the scheme picks the driver: `sqlite:`, `postgres:` /
    /// `postgresql:`, `mysql:` / `mariadb:`.
    pub url: String,
    /// The session table (an identifier: `^[A-Za-z_][A-Za-z0-9_]{0,62}$`).
    pub table: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections the pool keeps open even when idle.
    pub min_connections: u32,
    /// How long an operation waits for a free connection before failing with
    /// `Error::Timeout`.
    pub acquire_timeout_ms: u64,
    /// How long one statement may run before failing with `Error::Timeout`; 0 disables
    /// the limit. PostgreSQL also enforces it on the server; SQLite uses it as its busy
    /// timeout (how long a writer waits for the lock).
    pub statement_timeout_ms: u64,
    /// Whether building the store from configuration runs the migrations.
    pub auto_migrate: bool,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            url: DEFAULT_URL.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 5_000,
            auto_migrate: true,
        }
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("auto_migrate", &self.auto_migrate)
            .finish()
    }
}

impl DbConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DbConfig {
            url: url.into(),
            ..DbConfig::default()
        }
    }

    /// This configuration with `table`.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Checks every value; errors name the offending key (`db.url`, `db.table`, ...).
    ///
    /// A URL naming a database whose driver this build does not include (see the
    /// crate's cargo features) is an error at `db.url` that names the feature to enable.
    pub fn validate(&self) -> Result<()> {
        let backend = Backend::from_url(&self.url)?;
        if !backend.is_compiled_in() {
            return Err(backend.not_compiled_in());
        }
        TableName::new(&self.table)?;
        if self.max_connections == 0 {
            return Err(Error::config("db.max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(Error::config(
                "db.min_connections",
                format!(
                    "must not exceed db.max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        if self.acquire_timeout_ms == 0 {
            return Err(Error::config(
                "db.acquire_timeout_ms",
                "must be at least 1 millisecond",
            ));
        }
        Ok(())
    }

    /// The pool's acquire timeout.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// The statement timeout, `None` when disabled.
    pub fn statement_timeout(&self) -> Option<Duration> {
        (self.statement_timeout_ms > 0).then(|| Duration::from_millis(self.statement_timeout_ms))
    }
}

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite, embedded (a file, or `sqlite::memory:`).
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Backend {
    /// The database `url` names by its scheme; a configuration error at `db.url` otherwise.
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            Some("mysql" | "mariadb") => Ok(Backend::MySql),
            _ => Err(Error::config(
                "db.url",
                format!(
                    "{:?} does not start with a known scheme; use sqlite://FILE, \
                     postgres://USER@HOST/DB or mysql://USER@HOST/DB",
                    redact_url(url)
                ),
            )),
        }
    }

    /// Whether this build includes the database's driver (the cargo feature named
    /// [`Backend::feature`]).
    pub fn is_compiled_in(self) -> bool {
        match self {
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::MySql => cfg!(feature = "mysql"),
        }
    }

    /// The cargo feature of backend-db that compiles this database's driver.
    pub fn feature(self) -> &'static str {
        self.name()
    }

    /// The configuration error for a URL whose driver this build does not include.
    pub fn not_compiled_in(self) -> Error {
        Error::config(
            "db.url",
            format!(
                "{self} support is not compiled in: enable the `{}` feature of backend-db",
                self.feature()
            ),
        )
    }

    /// A short name for messages: `sqlite`, `postgres`, `mysql`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated table name: `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, not [`SCHEMA_TABLE`].
///
/// Being the only text ever interpolated into SQL, it is checked character by character,
/// and it is quoted as well, so a name that happens to be a keyword (`order`) still works.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// Validates `name`; a configuration error at `db.table` otherwise.
    pub fn new(name: &str) -> Result<TableName> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || !rest_ok || name.len() > 63 {
            return Err(Error::config(
                "db.table",
                format!(
                    "{name:?} is not a plain SQL identifier: use 1 to 63 ASCII letters, digits \
                     and underscores, not starting with a digit"
                ),
            ));
        }
        if name.eq_ignore_ascii_case(SCHEMA_TABLE) {
            return Err(Error::config(
                "db.table",
                format!("{name:?} is reserved for the schema-version table; pick another name"),
            ));
        }
        Ok(TableName(name.to_owned()))
    }

    /// The name as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `url` with any password replaced by `***`, for messages and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the first '/', '?' or '#'; credentials end at its last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["sessions", "_x", "S1_b", &"a".repeat(63)] {
            assert!(TableName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "x;DROP TABLE users",
            "a\"b",
            "é",
            &"a".repeat(64),
            "session_store_schema",
            "SESSION_STORE_SCHEMA",
        ] {
            let err = TableName::new(bad).expect_err(bad);
            assert!(
                matches!(&err, Error::Config { key: Some(k), .. } if k == "db.table"),
                "{err}"
            );
        }
    }

    #[test]
    fn schemes() {
        assert_eq!(
            Backend::from_url("sqlite://x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/d").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("MariaDB://h/d").ok(),
            Some(Backend::MySql)
        );
        let err = Backend::from_url("redis://u:hunter2@h").expect_err("redis");
        let msg = err.to_string();
        assert!(msg.contains("db.url") && !msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x?sslmode=disable"),
            "postgres://app:***@db:5432/x?sslmode=disable"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1/t"),
            "mysql://root@127.0.0.1/t"
        );
        assert_eq!(redact_url("sqlite://a@b.db"), "sqlite://a@b.db");
        let cfg = DbConfig::new("postgres://app:s3cret@db/x");
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }

    /// A URL of a database whose driver this build includes.
    fn compiled_url() -> &'static str {
        [
            (Backend::Sqlite, "sqlite://x.db"),
            (Backend::Postgres, "postgres://app@h/x"),
            (Backend::MySql, "mysql://app@h/x"),
        ]
        .into_iter()
        .find(|(b, _)| b.is_compiled_in())
        .map(|(_, url)| url)
        .expect("at least one driver is compiled in")
    }

    /// Each URL validates exactly when its driver is compiled in; otherwise the error is
    /// at `db.url`, typed, and names the feature to enable, and the registry reports it
    /// when it validates a configuration, before connecting anywhere. (The default
    /// build has every driver; `cargo test -p backend-db --lib --no-default-features
    /// --features postgres` exercises the refusals.)
    #[test]
    fn urls_of_drivers_not_compiled_in_are_config_errors() {
        let registry = session_core::EngineRegistry::new();
        crate::register(&registry);
        for (backend, url) in [
            (Backend::Sqlite, "sqlite://x.db"),
            (Backend::Postgres, "postgres://app@h/x"),
            (Backend::MySql, "mariadb://app@h/x"),
        ] {
            let direct = DbConfig::new(url).validate();
            let config =
                session_core::Config::from_toml(&format!("engine = \"db\"\n[db]\nurl = \"{url}\""));
            let via_registry = registry.validate(&config);
            if backend.is_compiled_in() {
                assert!(direct.is_ok(), "{url}: {direct:?}");
                assert!(via_registry.is_ok(), "{url}: {via_registry:?}");
                continue;
            }
            for err in [direct.expect_err(url), via_registry.expect_err(url)] {
                let feature = format!("enable the `{}` feature of backend-db", backend.name());
                assert!(
                    matches!(&err, Error::Config { key: Some(k), message }
                        if k == "db.url" && message.contains(&feature)),
                    "{url}: {err}"
                );
            }
        }
    }

    #[test]
    fn validation_names_keys() {
        let base = || DbConfig::new(compiled_url());
        assert!(base().validate().is_ok());
        let cases = [
            (
                DbConfig {
                    max_connections: 0,
                    ..base()
                },
                "db.max_connections",
            ),
            (
                DbConfig {
                    min_connections: 11,
                    ..base()
                },
                "db.min_connections",
            ),
            (
                DbConfig {
                    acquire_timeout_ms: 0,
                    ..base()
                },
                "db.acquire_timeout_ms",
            ),
            (base().with_table("no way"), "db.table"),
            (DbConfig::new("ftp://x"), "db.url"),
        ];
        for (config, key) in cases {
            let err = config.validate().expect_err(key);
            assert!(
                matches!(&err, Error::Config { key: Some(k), .. } if k == key),
                "{key}: {err}"
            );
        }
    }
}
