//! Costs as the store grows (`--only growth`): SQLite (a file) and PostgreSQL holding
//! 1,000, 100,000 and 1,000,000 live sessions of the benchmark's 1 KiB record, our
//! store and its floor (the same statements through the same pool, `RawSql`) each on a
//! table of its own. At each size: how fast the table filled, then loads and
//! compare-and-set updates of sessions picked at random among all N (every key is as
//! likely; a site with many visitors, not 32 hot sessions) by 32 tasks, ours and the
//! floor in turn, twice in alternating order. The question is whether our ratio to the
//! floor holds as N grows, and whether either side slows down.
//!
//! The tables are filled by one generated `INSERT ... SELECT` per 100,000 rows (keys
//! `g` and 31 digits, the encoded record as a bound blob), not through the store: the
//! fill rate reported is the database's, the same for both sides. Tables are dropped
//! after each size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backend_db::{DbPool, DbStore};
use integration_tests::servers;
use session_core::{SessionKey, SessionStore, Timestamp};

use crate::harness::{Key, R, Target, XorShift, quantile_us};
use crate::ours::Ours;
use crate::raw::RawSql;
use crate::wrong;

/// Concurrent tasks in the load and update phases.
const TASKS: usize = 32;
/// Rows one fill statement writes.
const FILL_CHUNK: u64 = 100_000;
/// The longest one phase of one side runs.
const PHASE_TIME: Duration = Duration::from_secs(3);

/// One engine, size and side.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GrowthRow {
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// Live sessions stored.
    pub n: u64,
    /// Rows per second of the fill (both tables).
    pub fill_rate: f64,
    /// Ours: load ops/s, p50 µs, p99 µs.
    pub load: [f64; 3],
    /// Floor: load ops/s, p50 µs, p99 µs.
    pub floor_load: [f64; 3],
    /// Ours: update ops/s, p50 µs, p99 µs.
    pub update: [f64; 3],
    /// Floor: update ops/s, p50 µs, p99 µs.
    pub floor_update: [f64; 3],
}

/// Runs every size (each at least [`TASKS`]) on SQLite and PostgreSQL; `ops` bounds
/// one phase of one side.
pub async fn run(sizes: &[u64], ops: usize, run_id: &str) -> R<Vec<GrowthRow>> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()?;
    for engine in ["sqlite", "postgres"] {
        for &n in sizes {
            let (url, ours_t, raw_t) = match engine {
                "sqlite" => (
                    format!("sqlite://{}", dir.path().join(format!("g{n}.db")).display()),
                    "sessions".to_owned(),
                    "raw_sessions".to_owned(),
                ),
                _ => (
                    servers::postgres_url(),
                    format!("bench_growth_{run_id}"),
                    format!("bench_growth_raw_{run_id}"),
                ),
            };
            let ours = crate::groups::db_store(&url, &ours_t).await?;
            let raw = Arc::new(DbStore::new(ours.pool().clone(), &raw_t)?);
            raw.migrate().await?;
            let result = measure(engine, n, ops, &ours, &raw).await;
            ours.drop_table().await?;
            raw.drop_table().await?;
            if engine == "sqlite" {
                let _ = std::fs::remove_file(dir.path().join(format!("g{n}.db")));
            }
            let row = result.map_err(|e| format!("growth {engine} n={n}: {e}"))?;
            println!("{}", line(&row));
            rows.push(row);
        }
    }
    Ok(rows)
}

async fn measure(
    engine: &str,
    n: u64,
    ops: usize,
    ours: &Arc<DbStore>,
    raw: &Arc<DbStore>,
) -> R<GrowthRow> {
    let bytes = crate::groups::encoded()?;
    let t = Instant::now();
    fill(ours, n, &bytes).await?;
    fill(raw, n, &bytes).await?;
    let fill_rate = (2 * n) as f64 / t.elapsed().as_secs_f64();
    // Let the database settle after the bulk write (PostgreSQL: statistics for the
    // planner, as autovacuum would gather them).
    if let DbPool::Postgres(p) = ours.pool() {
        for table in [ours.table(), raw.table()] {
            sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE \"{table}\"")))
                .execute(p)
                .await?;
        }
    }
    let sides: [(Arc<dyn Target>, Arc<Versions>); 2] = [
        (
            Arc::new(Ours::new(ours.clone() as Arc<dyn SessionStore>)),
            Arc::new(Versions::new(n)),
        ),
        (
            Arc::new(RawSql::new(raw, bytes.clone())),
            Arc::new(Versions::new(n)),
        ),
    ];
    // By side, then by operation (load, update): each phase's rate and latencies.
    let mut samples: [[Vec<Phase>; 2]; 2] = Default::default();
    for round in 0..2 {
        for (oi, update) in [false, true].into_iter().enumerate() {
            for k in 0..2 {
                let side = (k + round) % 2;
                let (target, versions) = &sides[side];
                let s = phase(target, versions, n, update, ops).await.map_err(|e| {
                    format!(
                        "{} {}: {e}",
                        ["ours", "floor"][side],
                        if update { "update" } else { "load" }
                    )
                })?;
                samples[side][oi].push(s);
            }
        }
    }
    let fig = |v: &mut Vec<Phase>| -> [f64; 3] {
        let rates: Vec<f64> = v.iter().map(|(r, _)| *r).collect();
        let mut lat: Vec<u64> = v.iter_mut().flat_map(|(_, l)| std::mem::take(l)).collect();
        [
            crate::harness::median(&rates),
            quantile_us(&mut lat, 0.5),
            quantile_us(&mut lat, 0.99),
        ]
    };
    let [mut o, mut f] = samples;
    Ok(GrowthRow {
        engine: engine.to_owned(),
        n,
        fill_rate,
        load: fig(&mut o[0]),
        floor_load: fig(&mut f[0]),
        update: fig(&mut o[1]),
        floor_update: fig(&mut f[1]),
    })
}

/// One phase of one side: ops/s and every latency (ns).
type Phase = (f64, Vec<u64>);

/// Each session's version as the benchmark last wrote it (updates are
/// compare-and-set).
struct Versions(Vec<AtomicU64>);

impl Versions {
    fn new(n: u64) -> Self {
        Versions((0..=n).map(|_| AtomicU64::new(1)).collect())
    }
}

/// The key of session `i` (1-based).
fn key(i: u64) -> R<Key> {
    Ok(Key::Session(SessionKey::parse(&format!("g{i:031}"))?))
}

/// Writes sessions 1..=n into `store`'s table, live for an hour.
async fn fill(store: &DbStore, n: u64, bytes: &[u8]) -> R<()> {
    let t = store.table();
    let expires = Timestamp::now().add_secs(3600).as_unix_millis();
    let mut from = 1u64;
    while from <= n {
        let to = (from + FILL_CHUNK - 1).min(n);
        let done = match store.pool() {
            DbPool::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO \"{t}\" (session_key, session_data, expires_at, version) \
                 WITH RECURSIVE s(i) AS (SELECT ?3 UNION ALL SELECT i + 1 FROM s WHERE i < ?4) \
                 SELECT printf('g%031d', i), ?1, ?2, 1 FROM s"
            )))
            .bind(bytes)
            .bind(expires)
            .bind(from as i64)
            .bind(to as i64)
            .execute(p)
            .await?
            .rows_affected(),
            DbPool::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO \"{t}\" (session_key, session_data, expires_at, version) \
                 SELECT 'g' || lpad(i::text, 31, '0'), $1, $2, 1 \
                 FROM generate_series($3::bigint, $4::bigint) AS s(i)"
            )))
            .bind(bytes)
            .bind(expires)
            .bind(from as i64)
            .bind(to as i64)
            .execute(p)
            .await?
            .rows_affected(),
            DbPool::MySql(_) => return wrong!("growth: MySQL is not measured"),
        };
        if done != to - from + 1 {
            return wrong!("fill wrote {done} rows of {}", to - from + 1);
        }
        from = to + 1;
    }
    Ok(())
}

/// `TASKS` tasks loading (or updating) random sessions among `n`, `ops` in all or
/// [`PHASE_TIME`]; ops/s and every latency (ns).
async fn phase(
    target: &Arc<dyn Target>,
    versions: &Arc<Versions>,
    n: u64,
    update: bool,
    ops: usize,
) -> R<Phase> {
    let left = Arc::new(AtomicUsize::new(ops));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (target, versions, left) = (target.clone(), versions.clone(), left.clone());
            tokio::spawn(async move {
                let mut rng = XorShift::new(t as u64);
                let mut lat = Vec::new();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                    && started.elapsed() < PHASE_TIME
                {
                    // Task t owns the sessions t + 1, t + 1 + TASKS, ...: no two tasks
                    // update one session at once, so every compare-and-set holds.
                    let i = 1 + t as u64 + TASKS as u64 * rng.below(n / TASKS as u64);
                    let k = key(i)?;
                    let one = Instant::now();
                    if update {
                        let slot = &versions.0[i as usize];
                        let v = slot.load(Ordering::Relaxed);
                        slot.store(target.update(&k, v).await?, Ordering::Relaxed);
                    } else {
                        target.load(&k, false).await?;
                    }
                    lat.push(one.elapsed().as_nanos() as u64);
                }
                Ok::<_, crate::harness::BenchError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((all.len() as f64 / secs, all))
}

fn line(r: &GrowthRow) -> String {
    let cell = |v: &[f64; 3]| format!("{:.0} ({:.0} / {:.0})", v[0], v[1], v[2]);
    format!(
        "| {} | {} | {:.0} | {} | {} | {:.2}x | {} | {} | {:.2}x |",
        r.engine,
        r.n,
        r.fill_rate,
        cell(&r.load),
        cell(&r.floor_load),
        r.load[0] / r.floor_load[0],
        cell(&r.update),
        cell(&r.floor_update),
        r.update[0] / r.floor_update[0],
    )
}

/// The rows as a Markdown table.
pub fn table(rows: &[GrowthRow]) -> String {
    let mut s = String::from(
        "| engine | sessions | fill rows/s | load ours ops/s (p50 / p99 µs) | load floor | ours ÷ floor | update ours ops/s (p50 / p99 µs) | update floor | ours ÷ floor |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        s.push_str(&line(r));
        s.push('\n');
    }
    s
}
