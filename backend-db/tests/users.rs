//! Every session of a user on the SQL store: the `principal` column behind
//! `UserIndex` (listing, counting, ending one or all others, expiry, re-binding), the
//! no-resurrection rule when a session is ended under an in-flight request, and the
//! in-place upgrade of a schema-version-1 table. Every test runs on SQLite (a temp
//! file), PostgreSQL and MariaDB.

mod common;

use std::sync::Arc;

use backend_db::{Backend, DbPool, DbStore, Migrated, SCHEMA_VERSION};
use common::{ALL, Db, open, with_store};
use serde_json::json;
use session_core::users::{UserIndex, session_id};
use session_core::{
    BincodeCodec, Codec, Error, Inserted, RawAccess, Record, Session, SessionData, SessionKey,
    SessionSettings, SessionStore, Timestamp,
};

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// `?` placeholders in PostgreSQL's `$n` form where needed.
fn dialect(backend: Backend, sql: &str) -> String {
    if backend != Backend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::new();
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `sql` (`?` placeholders) binding `texts` in order; returns rows affected.
async fn exec(pool: &DbPool, sql: &str, texts: &[&str]) -> Result<u64, String> {
    let q = dialect(pool.backend(), sql);
    macro_rules! go {
        ($p:expr) => {{
            let mut query = sqlx::query(sqlx::AssertSqlSafe(q.clone()));
            for t in texts {
                query = query.bind(*t);
            }
            query
                .execute($p)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| format!("{sql}: {e}"))
        }};
    }
    match pool {
        DbPool::Sqlite(p) => go!(p),
        DbPool::Postgres(p) => go!(p),
        DbPool::MySql(p) => go!(p),
    }
}

/// `SELECT COUNT(*) ...` binding `texts`.
async fn count(pool: &DbPool, sql: &str, texts: &[&str]) -> Result<i64, String> {
    let q = dialect(pool.backend(), sql);
    macro_rules! go {
        ($p:expr) => {{
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(q.clone()));
            for t in texts {
                query = query.bind(*t);
            }
            query.fetch_one($p).await.map_err(|e| format!("{sql}: {e}"))
        }};
    }
    match pool {
        DbPool::Sqlite(p) => go!(p),
        DbPool::Postgres(p) => go!(p),
        DbPool::MySql(p) => go!(p),
    }
}

fn settings() -> Arc<SessionSettings> {
    Arc::new(SessionSettings::default())
}

/// A new session with some data, signed in as `who` (stored under a fresh key).
async fn signed_in(store: &Arc<DbStore>, who: &str) -> Result<Session, String> {
    let s = Session::new(store.clone(), settings(), None);
    s.insert("cart", &json!(["apple"]))
        .await
        .map_err(|e| e.to_string())?;
    s.login(who, None).await.map_err(|e| e.to_string())?;
    Ok(s)
}

fn key_of(s: &Session) -> Result<SessionKey, String> {
    s.key()
        .ok_or_else(|| "a signed-in session has a key".to_owned())
}

/// A record of `who` (or anonymous) expiring `ttl_secs` from now.
fn record_of(who: Option<&str>, ttl_secs: i64) -> Record {
    let mut data = SessionData::new();
    data.insert("n".into(), json!(1));
    let mut r = Record::with_ttl(data, ttl_secs);
    r.meta.principal = who.map(str::to_owned);
    r
}

fn e(err: Error) -> String {
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_counts_and_ends_the_live_sessions_of_a_user() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "usr", async |store| {
            let a1 = signed_in(&store, "alice").await?;
            let a2 = signed_in(&store, "alice").await?;
            let a3 = signed_in(&store, "alice").await?;
            let b1 = signed_in(&store, "bob").await?;
            let anon = Session::new(store.clone(), settings(), None);
            anon.insert("n", &1).await.map_err(e)?;
            anon.save().await.map_err(e)?;
            let (k1, k2, k3) = (key_of(&a1)?, key_of(&a2)?, key_of(&a3)?);

            let list = store.sessions_of("alice", Some(&k2)).await.map_err(e)?;
            let mut keys: Vec<_> = list.iter().map(|s| s.stored_key.clone()).collect();
            keys.sort();
            let mut want = vec![k1.clone(), k2.clone(), k3.clone()];
            want.sort();
            check!(keys == want, "alice's sessions {keys:?}, wanted {want:?}");
            check!(
                list.windows(2).all(|w| w[0].created_at <= w[1].created_at),
                "not oldest first: {list:?}"
            );
            for s in &list {
                check!(s.id == session_id(&s.stored_key), "id of {s:?}");
                check!(s.current == (s.stored_key == k2), "current flag of {s:?}");
                check!(
                    s.meta.principal.as_deref() == Some("alice") && s.expires_at > s.created_at,
                    "entry {s:?}"
                );
            }
            check!(
                store.count_of("alice").await.map_err(e)? == 3,
                "count alice"
            );
            check!(store.count_of("bob").await.map_err(e)? == 1, "count bob");
            check!(
                store.count_of("carol").await.map_err(e)? == 0,
                "count carol"
            );
            check!(
                store
                    .sessions_of("carol", None)
                    .await
                    .map_err(e)?
                    .is_empty(),
                "carol has no sessions"
            );
            // Through the handle, as a "your devices" page asks.
            let mine = a2.user_sessions().await.map_err(e)?;
            check!(
                mine.len() == 3 && mine.iter().filter(|s| s.current).count() == 1,
                "handle's list {mine:?}"
            );

            // End one by its public id; only its principal may.
            let id1 = session_id(&k1);
            check!(
                !store.end_session("bob", &id1).await.map_err(e)?,
                "bob ended alice's session"
            );
            check!(store.end_session("alice", &id1).await.map_err(e)?, "end a1");
            check!(
                !store.end_session("alice", &id1).await.map_err(e)?,
                "ended a1 twice"
            );
            check!(
                store.load(&k1).await.map_err(e)?.is_none(),
                "a1 still loads"
            );

            // Sign out the other devices: a3 goes, a2 (current), bob and anon stay.
            check!(
                a2.end_other_sessions().await.map_err(e)? == 1,
                "end others of a2"
            );
            check!(
                store.load(&k3).await.map_err(e)?.is_none(),
                "a3 still loads"
            );
            check!(store.load(&k2).await.map_err(e)?.is_some(), "a2 was ended");
            check!(
                store.load(&key_of(&b1)?).await.map_err(e)?.is_some(),
                "bob's session was ended"
            );
            check!(
                store.load(&key_of(&anon)?).await.map_err(e)?.is_some(),
                "anonymous session was ended"
            );
            check!(store.count_of("alice").await.map_err(e)? == 1, "alice left");

            // Expired rows are never listed, counted or ended, and clear_expired takes
            // them.
            let gone = SessionKey::generate().map_err(|x| x.to_string())?;
            check!(
                store
                    .insert_new(&gone, &record_of(Some("alice"), -5))
                    .await
                    .map_err(e)?
                    == Inserted::Created,
                "insert an expired row"
            );
            // A live one whose deadline passes (moved into the past).
            let lapsed = signed_in(&store, "alice").await?;
            let kl = key_of(&lapsed)?;
            store
                .touch(&kl, Timestamp::now().add_secs(-1))
                .await
                .map_err(e)?;
            let list = store.sessions_of("alice", None).await.map_err(e)?;
            check!(
                list.len() == 1 && list[0].stored_key == k2,
                "expired rows listed: {list:?}"
            );
            check!(
                store.count_of("alice").await.map_err(e)? == 1,
                "expired rows counted"
            );
            check!(
                !store
                    .end_session("alice", &session_id(&gone))
                    .await
                    .map_err(e)?,
                "ended an expired session"
            );
            check!(
                store.end_sessions("alice", None).await.map_err(e)? == 1,
                "end all counts live sessions only"
            );
            check!(store.load(&k2).await.map_err(e)?.is_none(), "a2 survived");
            check!(
                store.clear_expired().await.map_err(e)? == 2,
                "clear expired"
            );
            check!(store.count().await.map_err(e)? == 2, "bob and anon remain");
            Ok(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_follows_its_principal_through_rebinding() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "rebind", async |store| {
            // clear() signs out but keeps the key: the row leaves alice's listing.
            let s = signed_in(&store, "alice").await?;
            let k = key_of(&s)?;
            s.clear();
            s.save().await.map_err(e)?;
            check!(
                store.count_of("alice").await.map_err(e)? == 0,
                "after clear"
            );
            check!(
                store.load(&k).await.map_err(e)?.is_some(),
                "clear kept the row"
            );

            // Re-login as someone else moves the session to bob.
            let s = signed_in(&store, "alice").await?;
            s.login("bob", None).await.map_err(e)?;
            check!(
                store.count_of("alice").await.map_err(e)? == 0,
                "after re-login"
            );
            let bobs = store.sessions_of("bob", None).await.map_err(e)?;
            check!(
                bobs.len() == 1 && Some(&bobs[0].stored_key) == s.key().as_ref(),
                "bob's sessions {bobs:?}"
            );

            // A plain update that changes the principal moves the row too.
            let k = store
                .create(&record_of(Some("carol"), 60))
                .await
                .map_err(e)?;
            store
                .update(&k, &record_of(Some("dave"), 60), Some(1))
                .await
                .map_err(e)?;
            check!(store.count_of("carol").await.map_err(e)? == 0, "carol left");
            check!(store.count_of("dave").await.map_err(e)? == 1, "dave has it");
            // Bytes written with put_raw are not decoded: the row is nobody's.
            let bytes = BincodeCodec::default()
                .encode(&record_of(Some("dave"), 60))
                .map_err(|x| x.to_string())?;
            store
                .put_raw(&k, &bytes, Timestamp::now().add_secs(60))
                .await
                .map_err(e)?;
            check!(store.count_of("dave").await.map_err(e)? == 0, "put_raw row");
            Ok(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_not_written_back_by_its_request() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "race", async |store| {
            let here = signed_in(&store, "alice").await?;
            let there = signed_in(&store, "alice").await?;
            let idle = signed_in(&store, "alice").await?;
            let kt = key_of(&there)?;
            let ki = key_of(&idle)?;
            // Request A (on "there") loads its session...
            let a = Session::new(store.clone(), settings(), Some(kt.clone()));
            check!(
                a.get::<serde_json::Value>("cart")
                    .await
                    .map_err(e)?
                    .is_some(),
                "request A loads"
            );
            let a_idle = Session::new(store.clone(), settings(), Some(ki.clone()));
            check!(
                a_idle.principal().await.map_err(e)?.as_deref() == Some("alice"),
                "idle request loads"
            );
            // ...request B signs alice's other devices out...
            check!(
                here.end_other_sessions().await.map_err(e)? == 2,
                "B ends two sessions"
            );
            // ...and A's save finds its session gone instead of writing it back.
            a.insert("cart", &json!(["apple", "pear"]))
                .await
                .map_err(e)?;
            match a.save().await {
                Err(Error::NotFound) => {}
                other => return Err(format!("A's save after the end: {other:?}")),
            }
            // A read-only signed-in request saves for last_seen: also not resurrected.
            check!(
                !a_idle
                    .touch_if_due(std::time::Duration::ZERO)
                    .await
                    .map_err(e)?,
                "idle touch after the end"
            );
            check!(store.load(&kt).await.map_err(e)?.is_none(), "A resurrected");
            check!(
                store.load(&ki).await.map_err(e)?.is_none(),
                "idle resurrected"
            );
            let left = store.sessions_of("alice", None).await.map_err(e)?;
            check!(
                left.len() == 1 && Some(&left[0].stored_key) == here.key().as_ref(),
                "alice's sessions {left:?}"
            );
            Ok(())
        })
        .await;
    }
}

/// Sessions of one user saved in a loop while another request ends them all: every
/// request's saves succeed until its session is ended and then get `NotFound`, and
/// nothing comes back. On MariaDB many rounds: deletes that InnoDB ran through the
/// principal index deadlocked with such saves (error 1213) a few times in 150 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ending_sessions_while_they_are_being_saved() {
    const SESSIONS: usize = 16;
    /// Saves a request makes at most (it stops at `NotFound`, long before).
    const SAVES: usize = 5_000;
    for backend in ALL {
        let rounds = if backend == Backend::MySql { 150 } else { 5 };
        let db = open(backend, |c| c.max_connections = 24).await;
        with_store(&db, "busy", async |store| {
            for round in 0..rounds {
                let mut keys = Vec::new();
                for _ in 0..SESSIONS {
                    keys.push(
                        store
                            .create(&record_of(Some("alice"), 600))
                            .await
                            .map_err(e)?,
                    );
                }
                let started = Arc::new(tokio::sync::Barrier::new(SESSIONS + 1));
                let mut tasks = Vec::new();
                for k in keys.clone() {
                    let (store, started) = (store.clone(), started.clone());
                    tasks.push(tokio::spawn(async move {
                        // One request holding its session, saving it again and again.
                        let s = Session::new(store, settings(), Some(k));
                        for i in 0..SAVES {
                            let done = async {
                                s.insert("i", &i).await?;
                                s.save().await
                            }
                            .await;
                            if i == 0 {
                                started.wait().await;
                            }
                            match done {
                                Ok(()) => {}
                                Err(Error::NotFound) if i > 0 => return Ok(i),
                                Err(other) => return Err(format!("save {i}: {other}")),
                            }
                        }
                        Err(format!("{SAVES} saves and never ended"))
                    }));
                }
                started.wait().await;
                // Not a synchronisation: a varying head start, so the end meets the
                // saves at different points of their statements.
                let stagger = u64::try_from(round % 5).unwrap_or(0) * 1_500;
                tokio::time::sleep(std::time::Duration::from_micros(stagger)).await;
                let ended = store.end_sessions("alice", None).await;
                let mut failed = Vec::new();
                for t in tasks {
                    if let Err(why) = t.await.map_err(|x| x.to_string())? {
                        failed.push(why);
                    }
                }
                let ended = ended.map_err(|x| format!("round {round}: end: {x}"))?;
                check!(failed.is_empty(), "round {round}: {failed:?}");
                check!(
                    ended == SESSIONS as u64,
                    "round {round}: ended {ended} of {SESSIONS}"
                );
                for k in &keys {
                    check!(
                        store.load(k).await.map_err(e)?.is_none(),
                        "round {round}: an ended session came back"
                    );
                }
                check!(
                    store.count().await.map_err(e)? == 0,
                    "round {round}: rows left"
                );
            }
            Ok(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_are_checked_and_compared_exactly() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "prin", async |store| {
            for bad in ["", "a\nb", &"x".repeat(257)] {
                check!(
                    matches!(
                        store.sessions_of(bad, None).await,
                        Err(Error::InvalidPrincipal { .. })
                    ),
                    "sessions_of({bad:?})"
                );
                check!(
                    matches!(
                        store.end_sessions(bad, None).await,
                        Err(Error::InvalidPrincipal { .. })
                    ),
                    "end_sessions({bad:?})"
                );
                check!(
                    matches!(
                        store.count_of(bad).await,
                        Err(Error::InvalidPrincipal { .. })
                    ),
                    "count_of({bad:?})"
                );
                check!(
                    matches!(
                        store.end_session(bad, "00").await,
                        Err(Error::InvalidPrincipal { .. })
                    ),
                    "end_session({bad:?})"
                );
            }
            // A record whose principal does not fit is refused before any SQL runs.
            let k = SessionKey::generate().map_err(|x| x.to_string())?;
            let long = "x".repeat(257);
            check!(
                matches!(
                    store.insert_new(&k, &record_of(Some(&long), 60)).await,
                    Err(Error::InvalidPrincipal { .. })
                ),
                "insert of a long principal"
            );
            // The longest principal, in multi-byte characters, round-trips.
            let widest = "é".repeat(128);
            let kw = store
                .create(&record_of(Some(&widest), 60))
                .await
                .map_err(e)?;
            let got = store.sessions_of(&widest, None).await.map_err(e)?;
            check!(
                got.len() == 1 && got[0].stored_key == kw,
                "widest principal: {got:?}"
            );
            // Case and trailing spaces matter (MySQL's PAD SPACE text collations would
            // make "alice" and "alice " equal).
            for who in ["alice", "Alice", "alice ", "ålice"] {
                store.create(&record_of(Some(who), 60)).await.map_err(e)?;
            }
            for who in ["alice", "Alice", "alice ", "ålice"] {
                let n = store.count_of(who).await.map_err(e)?;
                let list = store.sessions_of(who, None).await.map_err(e)?;
                check!(
                    n == 1 && list.len() == 1,
                    "{who:?}: counted {n}, listed {list:?}"
                );
            }
            Ok(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_foreign_row_is_skipped_not_fatal() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        with_store(&db, "skip", async |store| {
            let t = store.table().to_owned();
            let good = signed_in(&store, "alice").await?;
            // Bytes no codec reads, in a row the column says is alice's.
            let bad = SessionKey::generate().map_err(|x| x.to_string())?;
            store
                .put_raw(&bad, b"\x00garbage", Timestamp::now().add_secs(60))
                .await
                .map_err(e)?;
            // A readable record of bob's whose column says alice (written by hand).
            let bobs = store.create(&record_of(Some("bob"), 60)).await.map_err(e)?;
            let set = format!("UPDATE {t} SET principal = ? WHERE session_key = ?");
            for k in [&bad, &bobs] {
                check!(
                    exec(&db.pool, &set, &["alice", k.as_str()]).await? == 1,
                    "set the column by hand"
                );
            }
            let list = store.sessions_of("alice", None).await.map_err(e)?;
            check!(
                list.len() == 1 && Some(&list[0].stored_key) == good.key().as_ref(),
                "alice's readable sessions {list:?}"
            );
            // Ending by id works on the column: the unreadable row can be ended.
            check!(
                store
                    .end_session("alice", &session_id(&bad))
                    .await
                    .map_err(e)?,
                "end the unreadable row"
            );
            check!(
                store.get_raw(&bad).await.map_err(e)?.is_none(),
                "unreadable row still there"
            );
            Ok(())
        })
        .await;
    }
}

// ------------------------------------------------------------------ upgrade

/// The schema-version-1 DDL, as releases before the principal column created it.
fn v1_ddl(backend: Backend, t: &str) -> Vec<String> {
    match backend {
        Backend::Postgres => vec![
            format!(
                "CREATE TABLE {t} (session_key VARCHAR(64) COLLATE \"C\" NOT NULL PRIMARY KEY, \
                 session_data BYTEA NOT NULL, expires_at BIGINT NOT NULL, \
                 version BIGINT NOT NULL)"
            ),
            format!("CREATE INDEX {t}_expires_at ON {t} (expires_at)"),
        ],
        Backend::Sqlite => vec![
            format!(
                "CREATE TABLE {t} (session_key TEXT NOT NULL PRIMARY KEY, \
                 session_data BLOB NOT NULL, expires_at INTEGER NOT NULL, \
                 version INTEGER NOT NULL)"
            ),
            format!("CREATE INDEX {t}_expires_at ON {t} (expires_at)"),
        ],
        Backend::MySql => vec![format!(
            "CREATE TABLE {t} (session_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin \
             NOT NULL, session_data LONGBLOB NOT NULL, expires_at BIGINT NOT NULL, \
             version BIGINT NOT NULL, PRIMARY KEY (session_key), \
             KEY expires_at_idx (expires_at)) ENGINE=InnoDB"
        )],
    }
}

fn schema_table_ddl(backend: Backend) -> String {
    let name = match backend {
        Backend::MySql => "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin",
        Backend::Postgres => "VARCHAR(64) COLLATE \"C\"",
        Backend::Sqlite => "TEXT",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS session_store_schema (table_name {name} NOT NULL \
         PRIMARY KEY, version BIGINT NOT NULL, applied_at BIGINT NOT NULL)"
    )
}

/// A table as a version-1 release left it, holding one anonymous session.
async fn v1_table(db: &Db, t: &str) -> Result<(SessionKey, Record), String> {
    let backend = db.pool.backend();
    for ddl in v1_ddl(backend, t) {
        exec(&db.pool, &ddl, &[]).await?;
    }
    exec(&db.pool, &schema_table_ddl(backend), &[]).await?;
    let now = Timestamp::now().as_unix_millis().to_string();
    let record = record_of(None, 3600);
    let bytes = BincodeCodec::default()
        .encode(&record)
        .map_err(|x| x.to_string())?;
    let key = SessionKey::generate().map_err(|x| x.to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let blob = match backend {
        Backend::Postgres => format!("decode('{hex}', 'hex')"),
        Backend::Sqlite | Backend::MySql => format!("x'{hex}'"),
    };
    let exp = record.expires_at.as_unix_millis();
    exec(
        &db.pool,
        &format!(
            "INSERT INTO {t} (session_key, session_data, expires_at, version) \
             VALUES (?, {blob}, {exp}, 1)"
        ),
        &[key.as_str()],
    )
    .await?;
    exec(
        &db.pool,
        &format!(
            "INSERT INTO session_store_schema (table_name, version, applied_at) \
             VALUES (?, 1, {now})"
        ),
        &[t],
    )
    .await?;
    Ok((key, record))
}

/// Whether `t` has an index named `name` (MySQL: per-table names).
async fn has_index(pool: &DbPool, t: &str, name: &str) -> Result<bool, String> {
    let sql = match pool.backend() {
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_indexes WHERE tablename = ? AND indexname = ?"
        }
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?"
        }
        Backend::MySql => {
            "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = ? AND index_name = ?"
        }
    };
    Ok(count(pool, sql, &[t, name]).await? > 0)
}

/// Upgrades a version-1 table (`half_done`: with the column already added by an
/// interrupted run) and checks old rows load and new logins are indexed.
async fn upgrade(db: &Db, t: &str, half_done: bool) -> Result<(), String> {
    let backend = db.pool.backend();
    let (old_key, old) = v1_table(db, t).await?;
    if half_done {
        let column = match backend {
            Backend::MySql => "VARBINARY(256) NULL",
            Backend::Postgres => "VARCHAR(256) COLLATE \"C\"",
            Backend::Sqlite => "TEXT",
        };
        exec(
            &db.pool,
            &format!("ALTER TABLE {t} ADD COLUMN principal {column}"),
            &[],
        )
        .await?;
    }
    let store = Arc::new(DbStore::new(db.pool.clone(), t).map_err(e)?);
    // Before the upgrade, the new build cannot write to the old table, and says why.
    if !half_done {
        let refused = store.create(&record_of(Some("x"), 60)).await;
        check!(
            matches!(&refused, Err(Error::Backend { .. }))
                && refused
                    .as_ref()
                    .err()
                    .is_some_and(|x| x.to_string().contains("principal")),
            "write to a version-1 table: {refused:?}"
        );
    }
    let done = store.migrate().await.map_err(e)?;
    check!(
        done == Migrated {
            from: 1,
            to: SCHEMA_VERSION
        },
        "upgrade reported {done:?}"
    );
    let index = match backend {
        Backend::MySql => "principal_idx".to_owned(),
        Backend::Sqlite | Backend::Postgres => format!("{t}_principal"),
    };
    check!(has_index(&db.pool, t, &index).await?, "no index {index}");
    let again = store.migrate().await.map_err(e)?;
    check!(!again.changed(), "second run changed {again:?}");

    // The old row still loads, and is nobody's session.
    let got = store
        .load(&old_key)
        .await
        .map_err(e)?
        .ok_or("old row lost")?;
    check!(
        got.data == old.data && got.principal().is_none(),
        "old row {got:?}"
    );
    // New logins are indexed; so is the old session once it signs in.
    let fresh = signed_in(&store, "erin").await?;
    let old_session = Session::new(store.clone(), settings(), Some(old_key.clone()));
    old_session.login("erin", None).await.map_err(e)?;
    let list = store
        .sessions_of("erin", Some(&key_of(&fresh)?))
        .await
        .map_err(e)?;
    check!(
        list.len() == 2 && list.iter().filter(|s| s.current).count() == 1,
        "erin's sessions after the upgrade {list:?}"
    );
    check!(
        store.load(&old_key).await.map_err(e)?.is_none(),
        "login cycled the old key"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_upgrades_a_version_1_table_in_place() {
    for backend in ALL {
        let db = open(backend, |_| {}).await;
        for half_done in [false, true] {
            let t = common::table(if half_done { "half" } else { "v1" });
            let outcome = upgrade(&db, &t, half_done).await;
            let store = DbStore::new(db.pool.clone(), &t).expect("table name");
            store.drop_table().await.expect("drop the test table");
            outcome.unwrap_or_else(|why| panic!("{backend} (half done: {half_done}): {why}"));
        }
    }
}
