//! DbStore behaviour that the conformance suite does not reach: migrations, the
//! per-dialect insert and update paths, timeouts and outages, configuration.
//! Every test runs on SQLite (a temp file), PostgreSQL and MariaDB.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_db::{DbConfig, DbPool, DbStore, Migrated, SCHEMA_VERSION};
use common::{ALL, open, with_store};
use serde_json::json;
use session_core::{
    Config, EngineRegistry, Error, Inserted, Record, SessionData, SessionKey, SessionStore,
    Timestamp,
};

fn record(n: i64, ttl_secs: i64) -> Record {
    let mut data = SessionData::new();
    data.insert("n".into(), json!(n));
    Record::with_ttl(data, ttl_secs)
}

fn key() -> SessionKey {
    SessionKey::generate().expect("OS randomness")
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_versioned_and_idempotent() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        let store = DbStore::new(db.pool.clone(), &common::table("mig")).expect("name");
        let first = store.migrate().await.expect("migrate");
        let second = store.migrate().await.expect("migrate again");
        // Concurrent runs from several "instances" serialise on the migration lock.
        let others: Vec<_> = (0..3)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.migrate().await })
            })
            .collect();
        for o in others {
            o.await.expect("join").expect("concurrent migrate");
        }
        let k = store.create(&record(1, 60)).await.expect("create");
        let third = store.migrate().await.expect("migrate with data");
        let kept = store.load(&k).await.expect("load");
        // A table migrated by a newer release is refused, not downgraded.
        let bump = "UPDATE session_store_schema SET version = 99 WHERE table_name = ";
        let bumped = match &db.pool {
            DbPool::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(format!("{bump}?1")))
                .bind(store.table())
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            DbPool::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(format!("{bump}$1")))
                .bind(store.table())
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            DbPool::MySql(p) => sqlx::query(sqlx::AssertSqlSafe(format!("{bump}?")))
                .bind(store.table())
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        };
        assert_eq!(bumped.expect("bump"), 1, "{backend}");
        let newer = store.migrate().await.expect_err("newer schema");
        store.drop_table().await.expect("drop");
        assert_eq!(
            first,
            Migrated {
                from: 0,
                to: SCHEMA_VERSION
            },
            "{backend}"
        );
        assert!(first.changed());
        assert_eq!(
            second,
            Migrated {
                from: SCHEMA_VERSION,
                to: SCHEMA_VERSION
            },
            "{backend}"
        );
        assert!(!second.changed() && !third.changed(), "{backend}");
        assert!(kept.is_some(), "{backend}: migrate lost data");
        assert!(
            newer.to_string().contains("newer than this build"),
            "{backend}: {newer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_new_replaces_only_expired_rows() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "ins", async |store| {
            let k = key();
            check!(
                store
                    .insert_new(&k, &record(1, -5))
                    .await
                    .map_err(|e| e.to_string())?
                    == Inserted::Created,
                "insert expired"
            );
            // Expired holder: replaced atomically, version restarts at the record's.
            check!(
                store
                    .insert_new(&k, &record(2, 60))
                    .await
                    .map_err(|e| e.to_string())?
                    == Inserted::Created,
                "replace expired"
            );
            let got = store
                .load(&k)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("vanished")?;
            check!(
                got.data.get("n") == Some(&json!(2)) && got.version == 1,
                "replaced record is {got:?}"
            );
            // Live holder: kept.
            check!(
                store
                    .insert_new(&k, &record(3, 60))
                    .await
                    .map_err(|e| e.to_string())?
                    == Inserted::KeyTaken,
                "live key taken"
            );
            let got = store
                .load(&k)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("vanished")?;
            check!(
                got.data.get("n") == Some(&json!(2)),
                "live record overwritten: {got:?}"
            );
            Ok(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_returns_the_stored_version_on_every_path() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "upd", async |store| {
            let k = store
                .create(&record(1, 60))
                .await
                .map_err(|e| e.to_string())?;
            let mut expected = 1;
            for i in 0..5 {
                let cas = i % 2 == 0;
                let v = store
                    .update(&k, &record(i, 60), cas.then_some(expected))
                    .await
                    .map_err(|e| e.to_string())?;
                check!(
                    v == expected + 1,
                    "update {i} (cas {cas}) returned {v}, wanted {}",
                    expected + 1
                );
                expected = v;
            }
            // The same bytes and deadline again still count as a write (MySQL reports
            // changed rows by default; the version bump makes every update a change).
            let same = record(9, 60);
            let a = store
                .update(&k, &same, None)
                .await
                .map_err(|e| e.to_string())?;
            let b = store
                .update(&k, &same, Some(a))
                .await
                .map_err(|e| e.to_string())?;
            check!(b == a + 1, "identical update gave {b} after {a}");
            let got = store
                .load(&k)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("vanished")?;
            check!(got.version == b, "loaded version {} != {b}", got.version);
            match store.update(&k, &same, Some(1)).await {
                Err(Error::Conflict { expected: 1, found }) if found == b => {}
                other => return Err(format!("stale CAS gave {other:?}")),
            }
            // An expired row is NotFound for both kinds of update, and stays expired.
            let gone = store
                .create(&record(1, 60))
                .await
                .map_err(|e| e.to_string())?;
            store
                .touch(&gone, Timestamp::now().add_secs(-1))
                .await
                .map_err(|e| e.to_string())?;
            for exp in [None, Some(1)] {
                match store.update(&gone, &record(2, 60), exp).await {
                    Err(Error::NotFound) => {}
                    other => return Err(format!("update of expired row gave {other:?}")),
                }
            }
            check!(
                store
                    .load(&gone)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none(),
                "expired row resurrected"
            );
            Ok(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_moves_only_the_deadline() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "touch", async |store| {
            let k = store
                .create(&record(1, 60))
                .await
                .map_err(|e| e.to_string())?;
            let raw_before = store
                .raw()
                .ok_or("no raw")?
                .get_raw(&k)
                .await
                .map_err(|e| e.to_string())?;
            let later = Timestamp::now().add_secs(3600);
            store.touch(&k, later).await.map_err(|e| e.to_string())?;
            // Touching to the same deadline is still a hit (MySQL found-rows semantics).
            store.touch(&k, later).await.map_err(|e| e.to_string())?;
            let got = store
                .load(&k)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("vanished")?;
            check!(
                got.expires_at == later && got.version == 1,
                "after touch: {got:?}"
            );
            let raw_after = store
                .raw()
                .ok_or("no raw")?
                .get_raw(&k)
                .await
                .map_err(|e| e.to_string())?;
            check!(raw_before == raw_after, "touch rewrote the data");
            match store.touch(&key(), later).await {
                Err(Error::NotFound) => Ok(()),
                other => Err(format!("touch of a missing key gave {other:?}")),
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_a_backend_error_never_not_found() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        let store = common::store(&db, "outage").await;
        let k = store.create(&record(1, 60)).await.expect("create");
        let table = store.table().to_owned();
        db.pool.close().await;
        let load = store.load(&k).await;
        let update = store.update(&k, &record(2, 60), Some(1)).await;
        let delete = store.delete(&k).await;
        for (op, err) in [
            ("load", load.map(|_| ()).err()),
            ("update", update.map(|_| ()).err()),
            ("delete", delete.map(|_| ()).err()),
        ] {
            let err = err.unwrap_or_else(|| panic!("{backend}: {op} on a closed pool succeeded"));
            assert!(err.is_unavailable(), "{backend}: {op} gave {err:?}");
            assert!(
                !err.is_not_found(),
                "{backend}: {op} reported an outage as NotFound"
            );
        }
        // Clean up through a new pool.
        let again = open(backend, |c| c.url = db.config.url.clone()).await;
        DbStore::new(again.pool.clone(), &table)
            .expect("name")
            .drop_table()
            .await
            .expect("drop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_a_timeout() {
    for backend in ALL {
        let db = open(backend, |c| {
            c.max_connections = 1;
            c.acquire_timeout_ms = 150;
        })
        .await;
        let store = common::store(&db, "pool").await;
        let held = match &db.pool {
            DbPool::Sqlite(p) => Held::Sqlite(p.acquire().await.expect("acquire")),
            DbPool::Postgres(p) => Held::Postgres(p.acquire().await.expect("acquire")),
            DbPool::MySql(p) => Held::MySql(p.acquire().await.expect("acquire")),
        };
        let started = Instant::now();
        let outcome = store.load(&key()).await;
        let waited = started.elapsed();
        drop(held);
        store.drop_table().await.expect("drop");
        let err = outcome.expect_err("no connection is free");
        assert!(
            matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(150)),
            "{backend}: {err:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{backend}: waited {waited:?}"
        );
    }
}

#[allow(dead_code)] // held only for its Drop
enum Held {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    MySql(sqlx::pool::PoolConnection<sqlx::MySql>),
}

/// A statement stuck behind a lock ends in `Error::Timeout` after the configured
/// statement timeout, enforced by the database itself (PostgreSQL's statement_timeout,
/// MariaDB's max_statement_time, SQLite's busy timeout) before the store's own deadline,
/// so the timed-out write is not applied later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_statement_is_a_timeout() {
    for backend in ALL {
        let db = open(backend, |c| {
            c.statement_timeout_ms = 300;
            c.acquire_timeout_ms = 300;
        })
        .await;
        let table = common::table("stmt");
        let store = DbStore::new(db.pool.clone(), &table)
            .expect("name")
            .with_statement_timeout(Some(Duration::from_millis(300)));
        store.migrate().await.expect("migrate");
        let k = store.create(&record(1, 60)).await.expect("create");
        let lock = match &db.pool {
            DbPool::Postgres(p) => {
                let mut tx = p.begin().await.expect("begin");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT 1 FROM \"{table}\" WHERE session_key = $1 FOR UPDATE"
                )))
                .bind(k.as_str())
                .execute(&mut *tx)
                .await
                .expect("lock row");
                Lock::Postgres(tx)
            }
            DbPool::MySql(p) => {
                let mut tx = p.begin().await.expect("begin");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT 1 FROM `{table}` WHERE session_key = ? FOR UPDATE"
                )))
                .bind(k.as_str())
                .execute(&mut *tx)
                .await
                .expect("lock row");
                Lock::MySql(tx)
            }
            DbPool::Sqlite(p) => {
                // SQLite locks the whole database: hold the write lock.
                let tx = p.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                Lock::Sqlite(tx)
            }
        };
        let started = Instant::now();
        let err = store
            .update(&k, &record(2, 60), Some(1))
            .await
            .expect_err("blocked behind the lock");
        let waited = started.elapsed();
        drop(lock);
        // The pool recovers: the row is still there, unchanged.
        let after = store.load(&k).await;
        store.drop_table().await.expect("drop");
        assert!(matches!(err, Error::Timeout { .. }), "{backend}: {err:?}");
        // The store's own deadline is 300 + 300 ms + 1 s: the database answered first.
        assert!(
            waited < Duration::from_millis(1200),
            "{backend}: waited {waited:?}"
        );
        let got = after.expect("load after timeout").expect("row");
        assert_eq!(got.version, 1, "{backend}");
    }
}

#[allow(dead_code)] // held only for its Drop (rollback)
enum Lock {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    MySql(sqlx::Transaction<'static, sqlx::MySql>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_from_configuration() {
    let registry = EngineRegistry::new();
    backend_db::register(&registry);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cfg.db").display());
    let config = Config::from_toml(&format!(
        "engine = \"db\"\ncodec = \"json\"\n[db]\nurl = \"{url}\"\ntable = \"web_sessions\"\n"
    ));
    let store = registry.build(&config).await.expect("build");
    assert_eq!(store.engine(), "db");
    let caps = store.capabilities();
    assert!(caps.durable && caps.compare_and_set && caps.listing && caps.cross_process);
    let k = store
        .create(&record(7, 60))
        .await
        .expect("create (auto-migrated)");
    let raw = store
        .raw()
        .expect("raw")
        .get_raw(&k)
        .await
        .expect("raw")
        .expect("row");
    assert_eq!(
        raw.first(),
        Some(&b'{'),
        "the configured JSON codec is used"
    );

    for (toml, key) in [
        ("[db]\ntable = \"x; DROP TABLE users\"", "db.table"),
        ("[db]\nurl = \"redis://127.0.0.1\"", "db.url"),
        ("[db]\nmax_connections = 0", "db.max_connections"),
        ("[db]\npool_size = 3", "db.pool_size"),
    ] {
        let config = Config::from_toml(&format!("engine = \"db\"\n{toml}"));
        let err = registry.build(&config).await.expect_err(toml);
        assert!(
            matches!(&err, Error::Config { .. }) && err.to_string().contains(key),
            "{toml}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_works_and_is_not_durable() {
    let store = Arc::new(
        DbStore::connect(&DbConfig::new("sqlite::memory:"))
            .await
            .expect("connect"),
    );
    assert!(!store.capabilities().durable);
    let keys: Vec<_> = futures::future::join_all((0..20).map(|i| {
        let s = store.clone();
        async move { s.create(&record(i, 60)).await }
    }))
    .await
    .into_iter()
    .collect::<Result<_, _>>()
    .expect("parallel creates on one connection");
    assert_eq!(store.count().await.expect("count"), keys.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_in_byte_order() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "list", async |store| {
            let mut keys = Vec::new();
            for i in 0..25 {
                keys.push(
                    store
                        .create(&record(i, 60))
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            // Digits sort before letters bytewise; a locale collation could disagree.
            let digits =
                SessionKey::parse("0123456789abcdefghijklmnopqrstuv").map_err(|e| e.to_string())?;
            store
                .insert_new(&digits, &record(0, 60))
                .await
                .map_err(|e| e.to_string())?;
            keys.push(digits);
            keys.sort();
            let mut seen = Vec::new();
            let mut after: Option<SessionKey> = None;
            loop {
                let page = store
                    .list(after.as_ref(), 7)
                    .await
                    .map_err(|e| e.to_string())?;
                if page.is_empty() {
                    break;
                }
                after = page.last().cloned();
                seen.extend(page);
            }
            check!(
                seen == keys,
                "pages gave {} keys out of order or incomplete",
                seen.len()
            );
            check!(
                store.count().await.map_err(|e| e.to_string())? == 26,
                "count"
            );
            Ok(())
        })
        .await;
    }
}

/// An update racing a delete of the same row ends as one of the two, never in a
/// deadlock (MariaDB once chose the expiry index for the update and locked a range of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_racing_a_delete_never_deadlocks() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "race", async |store| {
            for round in 0..150 {
                let k = store
                    .create(&record(round, 60))
                    .await
                    .map_err(|e| e.to_string())?;
                let (s1, s2, k1, k2) = (store.clone(), store.clone(), k.clone(), k.clone());
                let update =
                    tokio::spawn(async move { s1.update(&k1, &record(-1, 120), Some(1)).await });
                let delete = tokio::spawn(async move { s2.delete(&k2).await });
                let (u, d) = (
                    update.await.map_err(|e| e.to_string())?,
                    delete.await.map_err(|e| e.to_string())?,
                );
                d.map_err(|e| format!("round {round}: delete failed: {e}"))?;
                match u {
                    Ok(2) | Err(Error::NotFound) => {}
                    other => return Err(format!("round {round}: update gave {other:?}")),
                }
                check!(
                    store.load(&k).await.map_err(|e| e.to_string())?.is_none(),
                    "round {round}: resurrected"
                );
            }
            Ok(())
        })
        .await;
    }
}

/// A server that is not there is a backend error naming the cause, not a bare timeout,
/// and the URL's password never shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_reported_with_its_cause() {
    // Port 1 on loopback: nothing listens there.
    for url in [
        "postgres://app:s3cret@127.0.0.1:1/test",
        "mysql://app:s3cret@127.0.0.1:1/test",
    ] {
        let started = Instant::now();
        let err = DbStore::connect(&DbConfig {
            acquire_timeout_ms: 2_000,
            ..DbConfig::new(url)
        })
        .await
        .expect_err("nothing listens on port 1");
        let msg = err.to_string();
        assert!(err.is_unavailable(), "{url}: {err:?}");
        assert!(
            msg.contains("could not connect to") && msg.contains("127.0.0.1:1"),
            "{msg}"
        );
        assert!(!msg.contains("s3cret"), "password leaked: {msg}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{url}: {:?}",
            started.elapsed()
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/missing/dir/x.db", dir.path().display());
    let err = DbStore::connect(&DbConfig::new(url))
        .await
        .expect_err("no such directory");
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_config_gives_the_concrete_store_for_tools() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("tool.db").display());
    let config = Config::from_toml(&format!(
        "engine = \"db\"\n[db]\nurl = \"{url}\"\nauto_migrate = false\n"
    ));
    let store = DbStore::from_config(&config).await.expect("connect");
    let first = store.migrate().await.expect("migrate");
    assert!(
        first.changed(),
        "auto_migrate = false left the work to migrate()"
    );
    assert!(!store.migrate().await.expect("again").changed());
    assert_eq!(store.table(), "sessions");
}
