//! # backend-db
//!
//! Django's `db` session engine for Rust: sessions in one SQL table, on SQLite (embedded,
//! a file next to the application), PostgreSQL or MySQL/MariaDB, the database chosen by
//! the scheme of the configured URL (`sqlite://sessions.db`, `postgres://...`,
//! `mysql://...`). One [`DbStore`] serves all three.
//!
//! ```
//! use std::sync::Arc;
//! use backend_db::{DbConfig, DbStore};
//! use session_core::{Session, SessionSettings, SessionStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! // Any of sqlite://FILE, postgres://USER@HOST/DB, mysql://USER@HOST/DB.
//! let store = Arc::new(DbStore::connect(&DbConfig::new("sqlite::memory:")).await?);
//! let settings = Arc::new(SessionSettings::default());
//!
//! let session = Session::new(store.clone(), settings.clone(), None);
//! session.insert("user_id", &101).await?;
//! session.save().await?;
//!
//! // The next request comes back with the key from its cookie.
//! let again = Session::new(store.clone(), settings, session.key());
//! assert_eq!(again.get::<u64>("user_id").await?, Some(101));
//! assert_eq!(store.count().await?, 1);
//! # Ok(()) }
//! ```
//!
//! From configuration (engine `db`, section `db`, see [`DbConfig`]) after [`register`]:
//!
//! ```toml
//! engine = "db"
//! [db]
//! url = "postgres://app@127.0.0.1/app"
//! table = "sessions"
//! ```
//!
//! The engine builds its store with [`DbConfig::build`]`(&settings)`, the same
//! constructor every backend crate has (see "Constructors" in `docs/BACKENDS.md`);
//! [`DbStore::connect`] stays as the lower-level one returning the concrete type.
//!
//! ## The table
//!
//! Shaped like Django's `django_session`: `session_key` (primary key), `session_data`
//! (the codec's bytes), `expires_at` (indexed; Unix milliseconds in a `BIGINT`, portable
//! and free of time zones) and `version` (`BIGINT`, bumped by every write: the basis of
//! compare-and-set). The `expires_at` and `version` columns are authoritative; the copies
//! inside the encoded bytes are overwritten on load. [`DbStore::migrate`] creates the
//! table and index (and `sessions migrate` runs it); it records a schema version per
//! table so later releases can upgrade in place, and running it again changes nothing.
//!
//! Schema version 2 adds `principal`, the user a session is signed in as (`NULL` for
//! anonymous sessions), indexed with `expires_at`: the store's
//! [`UserIndex`](session_core::UserIndex), behind "your devices" pages and "sign out
//! everywhere" ([`session_core::Session::user_sessions`],
//! [`session_core::Session::end_other_sessions`]). Listing a user's sessions is one
//! indexed query whose cost follows that user's sessions, not the table's size. A
//! version-1 table is upgraded in place by the next migration (on connect with
//! `auto_migrate`, or `sessions migrate`): the column is added (a catalogue change, no
//! table rewrite) and indexed. Rows written before the upgrade have a `NULL`
//! principal: they were anonymous, or predate the feature (a release without the column
//! records no principal in the session either), and are nobody's sessions; a session
//! signed in with [`session_core::Session::login`] after the upgrade is listed. Bytes
//! written with `RawAccess::put_raw` are not decoded, so such a row also has a `NULL`
//! principal until its next save.
//!
//! ## Design
//!
//! - **Typed pools, not sqlx's `Any` driver.** [`DbPool`] is an enum over the three typed
//!   pools: values bind as native types with no runtime translation, each driver keeps its
//!   own prepared-statement cache, and each dialect runs its best statement (PostgreSQL
//!   and SQLite `RETURNING`, MySQL `LAST_INSERT_ID(expr)`), where `Any` would force the
//!   lowest common denominator.
//! - **One statement per operation.** `create` is a single conditional upsert that
//!   fails on a live duplicate and re-rolls the key (never check-then-insert, which is how
//!   tower-sessions' SQLite store got `SQLITE_BUSY` and its PostgreSQL store a race);
//!   it replaces an *expired* row with the same key atomically. `update` never upserts,
//!   so a session deleted by a concurrent logout stays deleted. `clear_expired` deletes
//!   in batches ([`CLEAR_BATCH`] rows, [`SQLITE_CLEAR_BATCH`] on SQLite) so it never holds
//!   long locks on a big table.
//! - **SQLite writers queue in the process.** The stores of one process on one SQLite
//!   file take turns on a fair async lock before they write, instead of polling
//!   SQLite's lock through its busy handler (see [`DbStore`], "Writers on SQLite").
//! - **Outages are errors, not missing sessions.** Database failures are
//!   [`session_core::Error::Backend`], pool and statement timeouts
//!   [`session_core::Error::Timeout`]; only a genuinely absent row is `NotFound` or `None`
//!   (Django reports a failed save as a deleted session).
//!
//! ## Security
//!
//! Every value is a bind parameter. The only text interpolated into SQL is the table
//! name, validated as `^[A-Za-z_][A-Za-z0-9_]{0,62}$` and quoted. Session keys are
//! validated before any query and never logged (logs carry a fingerprint); passwords in
//! database URLs are redacted from `Debug` output and errors.
//!
//! ## Cargo features
//!
//! One per database driver, all on by default: `sqlite` (SQLite bundled into the
//! build), `postgres`, `mysql` (MySQL and MariaDB). A build with
//! `default-features = false, features = ["postgres"]` compiles neither SQLite nor the
//! MySQL driver; a configured URL whose driver is not compiled in is a configuration
//! error at `db.url`, found when the configuration is validated, that names the feature
//! to enable. At least one driver must be enabled.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "backend-db needs at least one database driver: enable its `sqlite`, `postgres` \
     or `mysql` feature"
);

pub mod config;
#[cfg(feature = "sqlite")]
mod gate;
pub mod migrate;
pub mod pool;
mod sql;
pub mod store;

pub use config::{Backend, DbConfig, TableName};
pub use migrate::{Migrated, SCHEMA_VERSION};
pub use pool::DbPool;
pub use sql::Statements;
pub use store::{CLEAR_BATCH, DbStore, SQLITE_CLEAR_BATCH};

use std::sync::Arc;

use session_core::{EngineContext, EngineRegistry, Result, SessionSettings, SessionStore};

impl DbConfig {
    /// Builds the store from this configuration and the shared settings (codec):
    /// connects, and applies the schema when `auto_migrate` is on. The constructor the
    /// `db` engine uses; [`DbStore::connect`] is the lower-level one.
    pub async fn build(&self, settings: &SessionSettings) -> Result<Arc<dyn SessionStore>> {
        let store = DbStore::connect(self).await?.with_codec(settings.codec());
        Ok(Arc::new(store))
    }
}

/// Registers the `db` engine (options in the `db` section, see [`DbConfig`]).
pub fn register(registry: &EngineRegistry) {
    registry.register_checked(
        "db",
        |ctx: EngineContext| async move {
            let config: DbConfig = ctx.section("db")?;
            config.build(&ctx.settings).await.map_err(|e| ctx.locate(e))
        },
        |ctx: &EngineContext| {
            let config: DbConfig = ctx.section("db")?;
            config.validate().map_err(|e| ctx.locate(e))
        },
    );
}

/// The README's examples, compiled and run as doctests so they cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
