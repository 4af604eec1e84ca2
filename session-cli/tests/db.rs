//! The db and cached_db paths of the operator commands, on the built `sessions` binary,
//! against SQLite, PostgreSQL and MariaDB: migrate (and the in-place upgrade of a table
//! an older release made), clear-expired, stats and copy.
//!
//! Tables get random names and are dropped at the end. A missing server fails the test
//! with a message naming it and how to start it.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use backend_db::{DbConfig, DbPool, DbStore, SCHEMA_VERSION};
use backend_file::FileStore;
use integration_tests::servers;
use serde_json::json;
use session_core::{
    BincodeCodec, Codec, Config, EngineRegistry, Record, SessionData, SessionKey, SessionStore,
};
use sqlx::AssertSqlSafe;

fn bin() -> Command {
    support::sessions()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run sessions")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `args`, asserts exit 0, returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sessions {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn write_config(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write config");
    p.to_string_lossy().into_owned()
}

fn record(n: i64, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("user_id".into(), json!(n));
    d.insert("cart".into(), json!(["apple", n.to_string()]));
    Record::with_ttl(d, ttl)
}

async fn build(toml: &str) -> Result<Arc<dyn SessionStore>, session_core::Error> {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    backend_db::register(&registry);
    backend_cached_db::register(&registry);
    registry.build(&Config::from_toml(toml)).await
}

/// `SELECT COUNT(*)` of `table`: an error when the table does not exist.
async fn rows(pool: &DbPool, table: &str) -> Result<i64, sqlx::Error> {
    let q = format!("SELECT COUNT(*) FROM {table}");
    match pool {
        DbPool::Sqlite(p) => sqlx::query_scalar(AssertSqlSafe(q)).fetch_one(p).await,
        DbPool::Postgres(p) => sqlx::query_scalar(AssertSqlSafe(q)).fetch_one(p).await,
        DbPool::MySql(p) => sqlx::query_scalar(AssertSqlSafe(q)).fetch_one(p).await,
    }
}

/// `DROP TABLE` by hand, leaving the schema-version record behind.
async fn drop_by_hand(pool: &DbPool, table: &str) {
    let q = format!("DROP TABLE {table}");
    let done = match pool {
        DbPool::Sqlite(p) => sqlx::raw_sql(AssertSqlSafe(q)).execute(p).await.map(drop),
        DbPool::Postgres(p) => sqlx::raw_sql(AssertSqlSafe(q)).execute(p).await.map(drop),
        DbPool::MySql(p) => sqlx::raw_sql(AssertSqlSafe(q)).execute(p).await.map(drop),
    };
    done.expect("DROP TABLE");
}

fn db_toml(url: &str, table: &str) -> String {
    format!("engine = \"db\"\n[db]\nurl = {url:?}\ntable = {table:?}\n")
}

/// The whole operator path on one database: `cache_toml` is the `[cached_db.cache]`
/// section of the cached_db copy target.
async fn operator_commands_on(server: &str, url: &str, cache_toml: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let suffix = servers::unique_suffix();
    let table = format!("cli_db_{suffix}");
    let cached_table = format!("cli_cdb_{suffix}");
    let probe = DbStore::connect(&DbConfig {
        auto_migrate: false,
        ..DbConfig::new(url).with_table(&table)
    })
    .await
    .unwrap_or_else(|e| servers::unreachable(server, url, e));
    let pool = probe.pool();
    let config = write_config(tmp.path(), "db.toml", &db_toml(url, &table));

    // migrate: creates the table, a re-run changes nothing, a dropped table comes back.
    assert!(rows(pool, &table).await.is_err(), "no table before migrate");
    let out = ok(&["--config", &config, "migrate"]);
    assert_eq!(
        out.trim(),
        format!("created table {table} (schema version {SCHEMA_VERSION})")
    );
    assert_eq!(rows(pool, &table).await.expect("table created"), 0);
    let out = ok(&["--config", &config, "migrate"]);
    assert_eq!(
        out.trim(),
        format!("table {table} is up to date (schema version {SCHEMA_VERSION})")
    );
    drop_by_hand(pool, &table).await;
    assert!(rows(pool, &table).await.is_err(), "table dropped");
    let out = ok(&["--config", &config, "migrate"]);
    assert_eq!(
        out.trim(),
        format!("created table {table} (schema version {SCHEMA_VERSION})"),
        "migrate must see the dropped table"
    );
    assert_eq!(rows(pool, &table).await.expect("table recreated"), 0);

    // copy file -> db: every live session, loadable with its data and expiry.
    let files = FileStore::new(tmp.path().join("files")).expect("file store");
    let mut live = Vec::new();
    for i in 0..6 {
        let r = record(i, 3600 + i);
        live.push((files.create(&r).await.expect("create"), r));
    }
    for i in 0..2 {
        let k = SessionKey::generate().expect("rng");
        files
            .insert_new(&k, &record(100 + i, -60))
            .await
            .expect("expired file session");
    }
    let file_config = write_config(
        tmp.path(),
        "file.toml",
        &format!(
            "engine = \"file\"\n[file]\npath = {:?}\n",
            tmp.path().join("files").display().to_string()
        ),
    );
    let out = ok(&["copy", "--from", &file_config, "--to", &config]);
    assert!(
        out.contains("copied 6 sessions from file to db: 6 new"),
        "{out}"
    );
    let db = build(&db_toml(url, &table)).await.expect("db store");
    for (k, r) in &live {
        let got = db.load(k).await.expect("load").expect("copied to db");
        assert_eq!(got.data, r.data);
        assert_eq!(got.expires_at, r.expires_at, "expiry kept");
    }

    // stats and clear-expired on the db: exactly the expired rows go.
    let mut expired = Vec::new();
    for i in 0..3 {
        let k = SessionKey::generate().expect("rng");
        db.insert_new(&k, &record(200 + i, -60))
            .await
            .expect("expired row");
        expired.push(k);
    }
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["--config", &config, "stats", "--json"])).expect("json");
    assert_eq!(stats["engine"], json!("db"));
    assert_eq!(stats["live"], json!(6), "{stats}");
    assert_eq!(stats["expired"], json!(3), "{stats}");
    let out = ok(&["--config", &config, "clear-expired", "--batch-size", "2"]);
    assert_eq!(
        out.trim(),
        format!("3 expired sessions removed from db ({table})")
    );
    assert_eq!(rows(pool, &table).await.expect("rows"), 6, "live rows kept");
    for (k, _) in &live {
        assert!(
            db.load(k).await.expect("load").is_some(),
            "live session kept"
        );
    }
    let out = ok(&["--config", &config, "clear-expired"]);
    assert_eq!(
        out.trim(),
        format!("0 expired sessions removed from db ({table})")
    );

    // copy db -> cached_db: every session loadable through the cache, data intact.
    let cached_toml = format!(
        "engine = \"cached_db\"\n[cached_db.cache]\n{cache_toml}\n\
         [cached_db.db]\nengine = \"db\"\n[cached_db.db.db]\nurl = {url:?}\ntable = {cached_table:?}\n"
    );
    let cached_config = write_config(tmp.path(), "cached.toml", &cached_toml);
    let out = ok(&["--config", &cached_config, "migrate"]);
    assert_eq!(
        out.trim(),
        format!("created table {cached_table} (schema version {SCHEMA_VERSION})")
    );
    let out = ok(&["copy", "--from", &config, "--to", &cached_config]);
    assert!(
        out.contains("copied 6 sessions from db to cached_db: 6 new"),
        "{out}"
    );
    let out = ok(&["copy", "--from", &config, "--to", &cached_config]);
    assert!(
        out.contains("6 already there"),
        "a re-run is a no-op: {out}"
    );
    let cached = build(&cached_toml).await.expect("cached_db store");
    for (k, r) in &live {
        let got = cached.load(k).await.expect("load").expect("copied");
        assert_eq!(got.data, r.data);
        assert_eq!(got.expires_at, r.expires_at, "expiry kept");
    }
    assert_eq!(rows(pool, &cached_table).await.expect("rows"), 6);

    // stats and clear-expired on the cached_db.
    let k = SessionKey::generate().expect("rng");
    cached
        .insert_new(&k, &record(300, -60))
        .await
        .expect("expired row");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["--config", &cached_config, "stats", "--json"])).expect("json");
    assert_eq!(stats["engine"], json!("cached_db"));
    assert_eq!(stats["live"], json!(6), "{stats}");
    assert_eq!(stats["expired"], json!(1), "{stats}");
    let out = ok(&["--config", &cached_config, "clear-expired"]);
    assert_eq!(
        out.trim(),
        format!("1 expired sessions removed from db ({cached_table})")
    );
    assert_eq!(rows(pool, &cached_table).await.expect("rows"), 6);

    for (k, _) in &live {
        cached.delete(k).await.expect("clean up the cache");
    }
    for t in [&table, &cached_table] {
        DbStore::new(pool.clone(), t)
            .expect("store")
            .drop_table()
            .await
            .expect("drop");
    }
}

#[tokio::test]
async fn operator_commands_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    operator_commands_on("SQLite", &url, "engine = \"memory\"").await;
}

#[tokio::test]
async fn operator_commands_on_postgres() {
    let redis = servers::redis_url();
    let prefix = format!("cli-cdb-{}:", servers::unique_suffix());
    operator_commands_on(
        "PostgreSQL",
        &servers::postgres_url(),
        &format!(
            "engine = \"cache\"\n[cached_db.cache.cache]\nurl = {redis:?}\nkey_prefix = {prefix:?}"
        ),
    )
    .await;
}

#[tokio::test]
async fn operator_commands_on_mariadb() {
    let redis = servers::redis_url();
    let prefix = format!("cli-cdb-{}:", servers::unique_suffix());
    operator_commands_on(
        "MariaDB",
        &servers::mysql_url(),
        &format!(
            "engine = \"cache\"\n[cached_db.cache.cache]\nurl = {redis:?}\nkey_prefix = {prefix:?}"
        ),
    )
    .await;
}

#[tokio::test]
async fn copy_of_a_source_it_cannot_read_fails_and_says_why() {
    let tmp = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", tmp.path().join("bad.db").display());
    let table = "cli_bad";
    let config = write_config(tmp.path(), "db.toml", &db_toml(&url, table));
    ok(&["--config", &config, "migrate"]);
    let store = DbStore::connect(&DbConfig {
        auto_migrate: false,
        ..DbConfig::new(&url).with_table(table)
    })
    .await
    .expect("sqlite");
    let DbPool::Sqlite(pool) = store.pool() else {
        panic!("a sqlite:// URL opens SQLite");
    };
    // Two live rows whose bytes no codec reads (written by something else).
    for _ in 0..2 {
        let k = SessionKey::generate().expect("rng");
        sqlx::query(
            "INSERT INTO cli_bad (session_key, session_data, expires_at, version) \
             VALUES (?1, x'00ff00ff', ?2, 1)",
        )
        .bind(k.as_str())
        .bind(session_core::Timestamp::now().as_unix_millis() + 3_600_000)
        .execute(pool)
        .await
        .expect("insert foreign bytes");
    }
    let to = write_config(
        tmp.path(),
        "file.toml",
        &format!(
            "engine = \"file\"\n[file]\npath = {:?}\n",
            tmp.path().join("files").display().to_string()
        ),
    );
    let out = run(&["copy", "--from", &config, "--to", &to]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("none of the 2 sessions of the source")
            && stderr.contains("2 could not be read"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: the source's codec"), "{stderr}");
    assert_eq!(
        rows(store.pool(), table).await.expect("rows"),
        2,
        "the source is left as it was"
    );
}

/// Runs `sql` on `pool`.
async fn exec(pool: &DbPool, sql: String) {
    let done = match pool {
        DbPool::Sqlite(p) => sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(p)
            .await
            .map(drop),
        DbPool::Postgres(p) => sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(p)
            .await
            .map(drop),
        DbPool::MySql(p) => sqlx::raw_sql(AssertSqlSafe(sql.clone()))
            .execute(p)
            .await
            .map(drop),
    };
    done.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A session table as a schema-version-1 release left it (the DDL of that release),
/// holding one live session, and its recorded version.
async fn version_1_table(pool: &DbPool, table: &str, key: &SessionKey, record: &Record) {
    let (ddl, name_type) = match pool {
        DbPool::Postgres(_) => (
            vec![
                format!(
                    "CREATE TABLE {table} (session_key VARCHAR(64) COLLATE \"C\" NOT NULL \
                     PRIMARY KEY, session_data BYTEA NOT NULL, expires_at BIGINT NOT NULL, \
                     version BIGINT NOT NULL)"
                ),
                format!("CREATE INDEX {table}_expires_at ON {table} (expires_at)"),
            ],
            "VARCHAR(64) COLLATE \"C\"",
        ),
        DbPool::Sqlite(_) => (
            vec![
                format!(
                    "CREATE TABLE {table} (session_key TEXT NOT NULL PRIMARY KEY, \
                     session_data BLOB NOT NULL, expires_at INTEGER NOT NULL, \
                     version INTEGER NOT NULL)"
                ),
                format!("CREATE INDEX {table}_expires_at ON {table} (expires_at)"),
            ],
            "TEXT",
        ),
        DbPool::MySql(_) => (
            vec![format!(
                "CREATE TABLE {table} (session_key VARCHAR(64) CHARACTER SET ascii \
                 COLLATE ascii_bin NOT NULL, session_data LONGBLOB NOT NULL, \
                 expires_at BIGINT NOT NULL, version BIGINT NOT NULL, \
                 PRIMARY KEY (session_key), KEY expires_at_idx (expires_at)) ENGINE=InnoDB"
            )],
            "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin",
        ),
    };
    for d in ddl {
        exec(pool, d).await;
    }
    exec(
        pool,
        format!(
            "CREATE TABLE IF NOT EXISTS session_store_schema (table_name {name_type} NOT NULL \
             PRIMARY KEY, version BIGINT NOT NULL, applied_at BIGINT NOT NULL)"
        ),
    )
    .await;
    let hex: String = BincodeCodec::default()
        .encode(record)
        .expect("encode")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let blob = match pool {
        DbPool::Postgres(_) => format!("decode('{hex}', 'hex')"),
        DbPool::Sqlite(_) | DbPool::MySql(_) => format!("x'{hex}'"),
    };
    exec(
        pool,
        format!(
            "INSERT INTO {table} (session_key, session_data, expires_at, version) \
             VALUES ('{}', {blob}, {}, 1)",
            key.as_str(),
            record.expires_at.as_unix_millis()
        ),
    )
    .await;
    exec(
        pool,
        format!(
            "INSERT INTO session_store_schema (table_name, version, applied_at) \
             VALUES ('{table}', 1, 0)"
        ),
    )
    .await;
}

/// `sessions migrate` on a table at schema version 1: upgraded in place (the
/// `principal` column of per-user listing), its session still there and still loading.
async fn migrate_upgrades_on(server: &str, url: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let table = format!("cli_v1_{}", servers::unique_suffix());
    let probe = DbStore::connect(&DbConfig {
        auto_migrate: false,
        ..DbConfig::new(url).with_table(&table)
    })
    .await
    .unwrap_or_else(|e| servers::unreachable(server, url, e));
    let pool = probe.pool();
    let (key, old) = (SessionKey::generate().expect("rng"), record(7, 3600));
    version_1_table(pool, &table, &key, &old).await;
    let config = write_config(tmp.path(), "db.toml", &db_toml(url, &table));

    let out = ok(&["--config", &config, "migrate"]);
    assert_eq!(
        out.trim(),
        format!("migrated table {table} from schema version 1 to {SCHEMA_VERSION}"),
        "{server}"
    );
    let out = ok(&["--config", &config, "migrate"]);
    assert_eq!(
        out.trim(),
        format!("table {table} is up to date (schema version {SCHEMA_VERSION})"),
        "{server}"
    );
    // The column exists, and the row written before it is nobody's session.
    let nobody = format!("SELECT COUNT(*) FROM {table} WHERE principal IS NULL");
    let n: i64 = match pool {
        DbPool::Sqlite(p) => sqlx::query_scalar(AssertSqlSafe(nobody)).fetch_one(p).await,
        DbPool::Postgres(p) => sqlx::query_scalar(AssertSqlSafe(nobody)).fetch_one(p).await,
        DbPool::MySql(p) => sqlx::query_scalar(AssertSqlSafe(nobody)).fetch_one(p).await,
    }
    .expect("principal column");
    assert_eq!(n, 1, "{server}");
    let store = build(&db_toml(url, &table)).await.expect("db store");
    let got = store.load(&key).await.expect("load").expect("kept");
    assert_eq!(got.data, old.data, "{server}");
    assert!(
        store.user_index().is_some(),
        "{server}: the db store lists users"
    );
    probe.drop_table().await.expect("drop");
}

#[tokio::test]
async fn migrate_upgrades_a_version_1_table_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let sqlite = format!("sqlite://{}", dir.path().join("sessions.db").display());
    migrate_upgrades_on("SQLite", &sqlite).await;
    migrate_upgrades_on("PostgreSQL", &servers::postgres_url()).await;
    migrate_upgrades_on("MariaDB", &servers::mysql_url()).await;
}
