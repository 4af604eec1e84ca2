//! `clear_expired` on a big table: 200,000 expired and 1,000 live rows. It must remove
//! exactly the expired ones, in bounded batches, while concurrent loads of live sessions
//! keep succeeding. Runs on SQLite (a temp file), PostgreSQL and MariaDB. On SQLite, a
//! save made during the sweep waits for at most the batch under way.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend_db::{Backend, CLEAR_BATCH, DbPool, DbStore, SQLITE_CLEAR_BATCH};
use common::{ALL, open, with_store};
use session_core::{Record, SessionData, SessionKey, SessionStore, Timestamp};

const EXPIRED: i64 = 200_000;
const LIVE: usize = 1_000;
/// The whole test on one database must finish within this.
const BOUND: Duration = Duration::from_secs(180);
/// Most loads one loader task issues (the loop is bounded in count as well as time).
const MAX_LOADS_PER_TASK: u64 = 200_000;

/// Inserts `EXPIRED` expired rows in one statement generated on the server.
async fn bulk_insert_expired(store: &DbStore) -> Result<(), String> {
    let t = store.table();
    let expired_at = Timestamp::now().add_secs(-3600).as_unix_millis();
    let done = match store.pool() {
        DbPool::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{t}\" (session_key, session_data, expires_at, version) \
             SELECT 'x' || lpad(i::text, 31, '0'), '\\x00'::bytea, $1, 1 \
             FROM generate_series(1, $2::bigint) AS s(i)"
        )))
        .bind(expired_at)
        .bind(EXPIRED)
        .execute(p)
        .await
        .map(|r| r.rows_affected()),
        DbPool::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{t}\" (session_key, session_data, expires_at, version) \
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2) \
             SELECT printf('x%031d', i), x'00', ?1, 1 FROM s"
        )))
        .bind(expired_at)
        .bind(EXPIRED)
        .execute(p)
        .await
        .map(|r| r.rows_affected()),
        DbPool::MySql(p) => {
            // Portable to MySQL and MariaDB: a 10^6-row cross join of digits, cut at EXPIRED.
            let digits = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                          UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 \
                          UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO `{t}` (session_key, session_data, expires_at, version) \
                 SELECT CONCAT('x', LPAD(n, 31, '0')), x'00', ?, 1 FROM (\
                 SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d AS n \
                 FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f, {digits} g\
                 ) nums WHERE n < ?"
            )))
            .bind(expired_at)
            .bind(EXPIRED)
            .execute(p)
            .await
            .map(|r| r.rows_affected())
        }
    };
    let rows = done.map_err(|e| format!("bulk insert: {e}"))?;
    if rows != EXPIRED as u64 {
        return Err(format!("bulk insert wrote {rows} rows"));
    }
    Ok(())
}

async fn run(backend: Backend) {
    let db = open(backend, |c| c.max_connections = 8).await;
    with_store(&db, "clear", async |store| {
        let started = Instant::now();
        bulk_insert_expired(&store).await?;
        let mut live: Vec<SessionKey> = Vec::with_capacity(LIVE);
        for chunk in 0..(LIVE / 50) {
            let batch = futures::future::join_all((0..50).map(|i| {
                let s = store.clone();
                async move {
                    let mut data = SessionData::new();
                    data.insert("n".into(), ((chunk * 50 + i) as u64).into());
                    s.create(&Record::with_ttl(data, 3600)).await
                }
            }))
            .await;
            for k in batch {
                live.push(k.map_err(|e| format!("create live: {e}"))?);
            }
        }
        let live = Arc::new(live);
        let filled = started.elapsed();

        // Loaders: live sessions must stay readable throughout the sweep.
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let loads = Arc::new(AtomicU64::new(0));
        let slowest = Arc::new(AtomicU64::new(0));
        let loaders: Vec<_> = (0..4u64)
            .map(|t| {
                let (store, live, stop) = (store.clone(), live.clone(), stop.clone());
                let (failures, loads, slowest) = (failures.clone(), loads.clone(), slowest.clone());
                tokio::spawn(async move {
                    let mut i = t as usize * 97;
                    for _ in 0..MAX_LOADS_PER_TASK {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        i = (i + 7919) % live.len();
                        let one = Instant::now();
                        match store.load(&live[i]).await {
                            Ok(Some(_)) => {}
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        slowest.fetch_max(one.elapsed().as_micros() as u64, Ordering::Relaxed);
                        loads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();

        let before = store.count().await.map_err(|e| e.to_string())?;
        let sweep = Instant::now();
        let mut batches = 0u32;
        let removed = store
            .clear_expired_with_progress(|_| batches += 1)
            .await
            .map_err(|e| format!("clear_expired: {e}"))?;
        let swept = sweep.elapsed();
        let loads_during = loads.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for l in loaders {
            l.await.map_err(|e| format!("loader: {e}"))?;
        }
        println!(
            "{backend}: filled in {filled:?}; clear_expired removed {removed} of {before} rows \
             in {batches} batches in {swept:?}; {loads_during} concurrent loads, slowest {} ms",
            slowest.load(Ordering::Relaxed) / 1000
        );

        if removed != EXPIRED as u64 {
            return Err(format!("removed {removed} rows, wanted {EXPIRED}"));
        }
        let batch = store.clear_batch();
        let wanted = if backend == Backend::Sqlite {
            SQLITE_CLEAR_BATCH
        } else {
            CLEAR_BATCH
        };
        if batch != wanted as u64 {
            return Err(format!("{batch} rows a batch, wanted {wanted}"));
        }
        let min_batches = (EXPIRED as u64).div_ceil(batch) as u32;
        if batches < min_batches {
            return Err(format!(
                "{batches} batches; at most {batch} rows each needs {min_batches}"
            ));
        }
        let failed = failures.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!("{failed} concurrent loads of live sessions failed"));
        }
        if loads_during == 0 {
            return Err("no load ran during the sweep".into());
        }
        let after = store.count().await.map_err(|e| e.to_string())?;
        if after != LIVE as u64 {
            return Err(format!("{after} rows left, wanted the {LIVE} live ones"));
        }
        for k in live.iter() {
            if store.load(k).await.map_err(|e| e.to_string())?.is_none() {
                return Err("a live session was removed".into());
            }
        }
        if store.clear_expired().await.map_err(|e| e.to_string())? != 0 {
            return Err("a second sweep found more".into());
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_expired_removes_exactly_the_expired_rows_in_batches() {
    for backend in ALL {
        tokio::time::timeout(BOUND, run(backend))
            .await
            .unwrap_or_else(|_| panic!("{backend}: did not finish within {BOUND:?}"));
    }
}

/// Writers saving at once during the SQLite sweep below.
const WRITERS: usize = 8;

/// SQLite: while a sweep runs, [`WRITERS`] tasks save their sessions over and over; each
/// save waits for at most the batch under way and one more (and the other writers'
/// saves queued before it), never for the sweep: the sweep deletes small batches and
/// takes its turn for each one like any other writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_save_during_a_sweep_waits_for_one_batch_not_the_sweep() {
    let db = open(Backend::Sqlite, |c| c.max_connections = 12).await;
    let run = with_store(&db, "turns", async |store| {
        assert_eq!(store.clear_batch(), SQLITE_CLEAR_BATCH as u64);
        // `sessions clear-expired` without `--batch-size` takes the same.
        let default = store.maintenance().map(|m| m.default_batch());
        assert_eq!(default, Some(SQLITE_CLEAR_BATCH as u64));
        bulk_insert_expired(&store).await?;
        let record = Record::with_ttl(SessionData::new(), 3600);
        let batches = Arc::new(AtomicU32::new(0));
        let sweep = {
            let (store, batches) = (store.clone(), batches.clone());
            tokio::spawn(async move {
                store
                    .clear_expired_with_progress(|_| {
                        batches.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            })
        };
        while batches.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let total = (EXPIRED as u64).div_ceil(SQLITE_CLEAR_BATCH as u64) as u32;
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (store, batches, record) = (store.clone(), batches.clone(), record.clone());
                tokio::spawn(async move {
                    let key = store.create(&record).await.map_err(|e| e.to_string())?;
                    let mut version = 1;
                    let mut waited = Vec::new();
                    for _ in 0..10 {
                        let before = batches.load(Ordering::SeqCst);
                        version = store
                            .update(&key, &record, Some(version))
                            .await
                            .map_err(|e| format!("save during the sweep: {e}"))?;
                        waited.push(batches.load(Ordering::SeqCst) - before);
                    }
                    Ok::<_, String>(waited)
                })
            })
            .collect();
        let mut waited = Vec::new();
        for w in writers {
            waited.extend(w.await.map_err(|e| e.to_string())??);
        }
        let during = batches.load(Ordering::SeqCst);
        if during >= total {
            return Err(format!(
                "the sweep ended ({during} batches) before the saves did: nothing was shown"
            ));
        }
        let removed = sweep
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("clear_expired: {e}"))?;
        if removed != EXPIRED as u64 {
            return Err(format!("removed {removed} rows, wanted {EXPIRED}"));
        }
        let worst = waited.iter().max().copied().unwrap_or(0);
        if worst > 2 {
            return Err(format!(
                "a save waited while the sweep finished {worst} batches (at most 2); all: {waited:?}"
            ));
        }
        Ok(())
    });
    tokio::time::timeout(BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {BOUND:?}"));
}
