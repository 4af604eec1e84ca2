//! Costs as the store grows (`--only growth`): the memory engine, the file engine, Redis,
//! SQLite (a file) and PostgreSQL holding 1,000, 100,000 and 1,000,000 live sessions of
//! the benchmark's 1 KiB record (the file engine to 100,000), each against its reference
//! at the same N, on a store (table, SQLite file, key prefix, directory) of its own:
//!
//! | engine | reference |
//! |---|---|
//! | memory | tower-sessions' `MemoryStore` (an in-process store has no raw client) |
//! | file | `tokio::fs` (`RawFs`); both without `fsync`, to keep 200,000 files in minutes |
//! | redis | `GET` and the compare-and-set script (`RawRedisCas`) through redis-rs |
//! | postgres | the same statements through the same pool (`RawSql`) |
//! | sqlite | the same statements through a pool of the same configuration (`RawSql`) |
//!
//! At each size: how fast each side filled, then loads and updates (compare-and-set
//! where the side has versions) of sessions picked at random among all N (every key is
//! as likely; a site with many visitors, not 32 hot sessions) by 32 tasks. Each side
//! first runs one untimed phase of each operation (so that no size's figure carries the
//! first touch of a connection or a page), then ours and the reference take turns,
//! [`ROUNDS`] rounds in alternating order. Our ratio to the reference is taken within
//! each round (the two phases of one operation, back to back) and reported as the median
//! of the rounds with their range: adjacent phases meet the machine in nearly the same
//! state, where phases a minute apart do not. The questions are whether that ratio holds
//! as N grows, and whether either side slows down.
//!
//! At 32 tasks on two cores shared with the server, a phase's rate moves by tens of
//! percent from one second to the next (a checkpoint, a rehash, where the scheduler puts
//! the server's threads), more than the 10 % the ratio is asked to hold. So each size is
//! also measured the way `--interleaved` measures the engine groups, at concurrency 1:
//! one task alternates a batch of [`BATCH`] operations on our side with a batch on the
//! reference (random sessions among all N; which side goes first drawn at random each
//! time), each batch timed, for [`PAIRED_ROUNDS`] rounds. The ratio of the two sides'
//! times is then a ratio of costs at that N, with what the machine did meanwhile
//! falling on both alike. For the memory
//! engine, a fresh process of this binary per side fills N sessions and reports the
//! resident memory they added (`--count rss:memory --count-n N`).
//!
//! The database tables are filled by one generated `INSERT ... SELECT` per 100,000 rows
//! (keys `g` and 31 digits, the encoded record as a bound blob), not through the store:
//! that fill rate is the database's, the same for both sides. The other engines are
//! filled through each side's own `create`, by 32 tasks. Everything written is removed
//! after each size (tables dropped, directories deleted, Redis key prefixes unlinked).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backend_db::{DbPool, DbStore};
use integration_tests::servers;
use session_core::{SessionKey, SessionStore, Timestamp};

use crate::harness::{BATCH, Key, R, Target, XorShift, quantile_us};
use crate::ours::{Ours, from_toml};
use crate::raw::{RawFs, RawRedisCas, RawSql, RedisConn};
use crate::wrong;

/// `--growth-self-check`: on SQLite and PostgreSQL, our side is replaced by the
/// reference itself on our side's store (table, or SQLite file): what the method reads
/// when the two sides run the same code.
pub static SELF_CHECK: AtomicBool = AtomicBool::new(false);
/// The engines [`SELF_CHECK`] applies to.
pub const SELF_CHECK_ENGINES: [&str; 2] = ["sqlite", "postgres"];

/// The engines, in the order they run.
pub const ENGINES: [&str; 5] = ["memory", "file", "redis", "sqlite", "postgres"];
/// Concurrent tasks in the fill, load and update phases.
const TASKS: usize = 32;
/// Rows one fill statement writes.
const FILL_CHUNK: u64 = 100_000;
/// The longest one phase of one side runs.
const PHASE_TIME: Duration = Duration::from_secs(1);
/// Timed rounds per size: each runs a load and an update phase of both sides.
const ROUNDS: usize = 5;
/// Rounds of the interleaved measure at concurrency 1, per operation.
const PAIRED_ROUNDS: usize = 5;
/// The longest one interleaved phase (both sides) runs.
const PAIRED_TIME: Duration = Duration::from_millis(600);
/// The file engine is measured up to this many sessions (a million files is a
/// filesystem benchmark).
const FILE_MAX: u64 = 100_000;

/// One engine, size and side.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GrowthRow {
    /// One of [`ENGINES`].
    pub engine: String,
    /// What ours is measured against.
    pub reference: String,
    /// Live sessions stored.
    pub n: u64,
    /// Sessions per second of the fill: ours, the reference.
    pub fill_rate: [f64; 2],
    /// Ours: load ops/s, p50 µs, p99 µs.
    pub load: [f64; 3],
    /// Reference: load ops/s, p50 µs, p99 µs.
    pub floor_load: [f64; 3],
    /// Ours: update ops/s, p50 µs, p99 µs.
    pub update: [f64; 3],
    /// Reference: update ops/s, p50 µs, p99 µs.
    pub floor_update: [f64; 3],
    /// Our load rate over the reference's, taken within each round: median, least,
    /// greatest.
    pub load_ratio: [f64; 3],
    /// The same for updates.
    pub update_ratio: [f64; 3],
    /// At concurrency 1, the sides interleaved in batches: our load rate over the
    /// reference's per round, as median, least and greatest.
    pub paired_load: [f64; 3],
    /// The same for updates.
    pub paired_update: [f64; 3],
    /// Memory engine only: resident bytes per session, ours and the reference, each
    /// filled in a fresh process.
    pub rss_per_session: Option<[f64; 2]>,
}

/// Runs every engine in `engines` at every size (each at least [`TASKS`]); `ops` bounds
/// one phase of one side (ten times more on the memory engine, whose calls take a
/// microsecond).
pub async fn run(engines: &[&str], sizes: &[u64], ops: usize, run_id: &str) -> R<Vec<GrowthRow>> {
    let mut rows = Vec::new();
    for &engine in engines {
        for &n in sizes {
            if engine == "file" && n > FILE_MAX {
                continue;
            }
            let ops = if engine == "memory" { ops * 10 } else { ops };
            let row = one(engine, n, ops, run_id)
                .await
                .map_err(|e| format!("growth {engine} n={n}: {e}"))?;
            println!("{}", line(&row));
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Both sides of `engine` at `n` sessions: built, filled, measured, removed.
async fn one(engine: &str, n: u64, ops: usize, run_id: &str) -> R<GrowthRow> {
    let dir = tempfile::tempdir()?;
    let mut rss_per_session = None;
    let (sides, reference, redis_prefixes) = match engine {
        "sqlite" | "postgres" => {
            let (url, ours_t, raw_t) = if engine == "sqlite" {
                (
                    format!("sqlite://{}", dir.path().join("g.db").display()),
                    "sessions".to_owned(),
                    "raw_sessions".to_owned(),
                )
            } else {
                (
                    servers::postgres_url(),
                    format!("bench_growth_{run_id}"),
                    format!("bench_growth_raw_{run_id}"),
                )
            };
            let ours = crate::groups::db_store(&url, &ours_t).await?;
            let self_check = SELF_CHECK.load(Ordering::Relaxed);
            let raw = if engine == "sqlite" {
                crate::groups::sqlite_floor_store(dir.path(), &raw_t).await?
            } else {
                let raw = Arc::new(DbStore::new(ours.pool().clone(), &raw_t)?);
                raw.migrate().await?;
                raw
            };
            let result = async {
                // One encoding for the fill and the floor's check of what it reads (the
                // record's timestamps differ from one encoding to the next).
                let bytes = crate::groups::encoded()?;
                let (keys, rates) = fill_tables(&ours, &raw, n, &bytes).await?;
                let first: Arc<dyn Target> = if self_check {
                    Arc::new(RawSql::new(&ours, bytes.clone()))
                } else {
                    Arc::new(Ours::new(ours.clone() as Arc<dyn SessionStore>))
                };
                let sides: [Arc<dyn Target>; 2] = [first, Arc::new(RawSql::new(&raw, bytes))];
                let m = measure(&sides, &keys, &keys, ops).await?;
                Ok::<_, crate::harness::BenchError>((rates, m))
            }
            .await;
            // The tables go whatever happened.
            ours.drop_table().await?;
            raw.drop_table().await?;
            let (rates, m) = result?;
            let reference = if self_check {
                "sqlx (same statements), against itself"
            } else {
                "sqlx (same statements)"
            };
            return Ok(row(engine, reference, n, rates, m, None));
        }
        "memory" => {
            rss_per_session = Some([rss_probe("memory", n)?, rss_probe("tower", n)?]);
            let ours = from_toml(&memory_toml(n)).await?;
            let sides: [Arc<dyn Target>; 2] =
                [Arc::new(Ours::new(ours)), Arc::new(crate::peers::memory())];
            (sides, "tower-sessions MemoryStore", None)
        }
        "file" => {
            let (a, b) = (dir.path().join("ours"), dir.path().join("raw"));
            std::fs::create_dir_all(&a)?;
            std::fs::create_dir_all(&b)?;
            let ours = from_toml(&format!(
                "engine = \"file\"\n[file]\npath = {a:?}\nfsync = false\n"
            ))
            .await?;
            let sides: [Arc<dyn Target>; 2] = [
                Arc::new(Ours::new(ours)),
                Arc::new(RawFs::new(b, crate::groups::encoded()?, false)),
            ];
            (sides, "tokio::fs", None)
        }
        "redis" => {
            let url = servers::redis_url();
            let (p_ours, p_raw) = (
                format!("bench-g-{run_id}:"),
                format!("bench-gcas-{run_id}:"),
            );
            let ours = from_toml(&format!(
                "engine = \"cache\"\n[cache]\nurl = {url:?}\nkey_prefix = {p_ours:?}\n"
            ))
            .await?;
            let conn = RedisConn::single(&url).await?;
            let sides: [Arc<dyn Target>; 2] = [
                Arc::new(Ours::new(ours)),
                Arc::new(RawRedisCas::new(
                    conn.clone(),
                    p_raw.clone(),
                    &crate::groups::encoded()?,
                )),
            ];
            (
                sides,
                "redis-rs GET / compare-and-set script",
                Some((conn, [p_ours, p_raw])),
            )
        }
        other => {
            return wrong!(
                "growth: unknown engine {other}; known: {}",
                ENGINES.join(", ")
            );
        }
    };
    let result = async {
        let (ours_keys, ours_rate) = fill_by_create(&sides[0], n).await?;
        let (ref_keys, ref_rate) = fill_by_create(&sides[1], n).await?;
        let m = measure(&sides, &ours_keys, &ref_keys, ops).await?;
        Ok::<_, crate::harness::BenchError>(([ours_rate, ref_rate], m))
    }
    .await;
    if let Some((conn, prefixes)) = &redis_prefixes {
        for p in prefixes {
            conn.unlink_prefix(p).await?;
        }
    }
    drop(sides);
    drop(dir);
    let (rates, m) = result?;
    Ok(row(engine, reference, n, rates, m, rss_per_session))
}

/// The memory engine's configuration, bounded well above `n`.
fn memory_toml(n: u64) -> String {
    format!(
        "engine = \"memory\"\n[memory]\nmax_entries = {}\n",
        (n * 2).max(1_000)
    )
}

fn row(
    engine: &str,
    reference: &str,
    n: u64,
    fill_rate: [f64; 2],
    m: Measured,
    rss_per_session: Option<[f64; 2]>,
) -> GrowthRow {
    let Measured {
        figures: [load, floor_load, update, floor_update],
        ratios: [load_ratio, update_ratio],
        paired: [paired_load, paired_update],
    } = m;
    GrowthRow {
        engine: engine.to_owned(),
        reference: reference.to_owned(),
        n,
        fill_rate,
        load,
        floor_load,
        update,
        floor_update,
        load_ratio,
        update_ratio,
        paired_load,
        paired_update,
        rss_per_session,
    }
}

/// Fills both tables with sessions 1..=n of `bytes`; their keys and each table's rows
/// per second.
async fn fill_tables(
    ours: &DbStore,
    raw: &DbStore,
    n: u64,
    bytes: &[u8],
) -> R<(Vec<Key>, [f64; 2])> {
    let mut rates = [0.0; 2];
    for (i, store) in [ours, raw].into_iter().enumerate() {
        let t = Instant::now();
        fill(store, n, bytes).await?;
        rates[i] = n as f64 / t.elapsed().as_secs_f64();
    }
    // Let the database settle after the bulk write (PostgreSQL: statistics for the
    // planner, as autovacuum would gather them).
    if let DbPool::Postgres(p) = ours.pool() {
        for table in [ours.table(), raw.table()] {
            sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE \"{table}\"")))
                .execute(p)
                .await?;
        }
    }
    let keys = (1..=n).map(key).collect::<R<Vec<_>>>()?;
    Ok((keys, rates))
}

/// `n` sessions created through `target` by [`TASKS`] tasks; their keys and the
/// sessions created per second.
async fn fill_by_create(target: &Arc<dyn Target>, n: u64) -> R<(Vec<Key>, f64)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|t| {
            let target = target.clone();
            let share = n / TASKS as u64 + u64::from(t < n % TASKS as u64);
            tokio::spawn(async move {
                let mut keys = Vec::with_capacity(share as usize);
                for _ in 0..share {
                    keys.push(target.create().await?);
                }
                Ok::<_, crate::harness::BenchError>(keys)
            })
        })
        .collect();
    let mut keys = Vec::with_capacity(n as usize);
    for t in tasks {
        keys.extend(t.await??);
    }
    Ok((keys, n as f64 / started.elapsed().as_secs_f64()))
}

/// What [`measure`] found.
struct Measured {
    /// By side and operation (ours load, reference load, ours update, reference update):
    /// the median of the rounds' ops/s, and p50 and p99 µs over every operation.
    figures: [[f64; 3]; 4],
    /// Load, then update: our rate over the reference's within each round, as median,
    /// least and greatest.
    ratios: [[f64; 3]; 2],
    /// Load, then update: the same at concurrency 1, the sides interleaved in batches.
    paired: [[f64; 3]; 2],
}

/// Loads and updates on both sides: one untimed phase of each, then [`ROUNDS`] rounds
/// in alternating order.
async fn measure(
    sides: &[Arc<dyn Target>; 2],
    ours_keys: &[Key],
    ref_keys: &[Key],
    ops: usize,
) -> R<Measured> {
    let keys = [Arc::new(ours_keys.to_vec()), Arc::new(ref_keys.to_vec())];
    let versions = [
        Arc::new(Versions::new(ours_keys.len())),
        Arc::new(Versions::new(ref_keys.len())),
    ];
    let run = |side: usize, update: bool, ops: usize| {
        let (target, keys, versions) = (&sides[side], &keys[side], &versions[side]);
        async move {
            phase(target, keys, versions, update, ops)
                .await
                .map_err(|e| {
                    format!(
                        "{} {}: {e}",
                        ["ours", "reference"][side],
                        if update { "update" } else { "load" }
                    )
                })
        }
    };
    for update in [false, true] {
        for side in 0..2 {
            run(side, update, ops / 4).await?;
        }
    }
    // By side, then by operation (load, update): each phase's rate and latencies.
    let mut samples: [[Vec<Phase>; 2]; 2] = Default::default();
    let mut ratios: [Vec<f64>; 2] = Default::default();
    for round in 0..ROUNDS {
        for (oi, update) in [false, true].into_iter().enumerate() {
            for k in 0..2 {
                let side = (k + round) % 2;
                samples[side][oi].push(run(side, update, ops).await?);
            }
            ratios[oi].push(samples[0][oi][round].0 / samples[1][oi][round].0);
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
    let mut paired: [Vec<f64>; 2] = Default::default();
    for round in 0..PAIRED_ROUNDS {
        for (oi, update) in [false, true].into_iter().enumerate() {
            let seed = (round * 2 + oi) as u64;
            let [ours, reference] = paired_phase(sides, &keys, &versions, update, ops, seed)
                .await
                .map_err(|e| {
                    format!(
                        "interleaved {}: {e}",
                        if update { "update" } else { "load" }
                    )
                })?;
            paired[oi].push(ours / reference);
        }
    }
    let [mut o, mut f] = samples;
    Ok(Measured {
        figures: [
            fig(&mut o[0]),
            fig(&mut f[0]),
            fig(&mut o[1]),
            fig(&mut f[1]),
        ],
        ratios: [spread(&ratios[0]), spread(&ratios[1])],
        paired: [spread(&paired[0]), spread(&paired[1])],
    })
}

/// Median, least and greatest of `v`.
fn spread(v: &[f64]) -> [f64; 3] {
    [
        crate::harness::median(v),
        crate::harness::quantile(v, 0.0),
        crate::harness::quantile(v, 1.0),
    ]
}

/// One task loading (or updating) random sessions on both sides in turn, a batch of
/// [`BATCH`] on one and then on the other (which goes first drawn at random each time),
/// each batch timed; `ops` per side or [`PAIRED_TIME`]. Each side's operations per second
/// of its own batches' time.
async fn paired_phase(
    sides: &[Arc<dyn Target>; 2],
    keys: &[Arc<Vec<Key>>; 2],
    versions: &[Arc<Versions>; 2],
    update: bool,
    ops: usize,
    seed: u64,
) -> R<[f64; 2]> {
    let mut rng = XorShift::new(seed);
    let mut spent = [0f64; 2];
    let mut done = [0usize; 2];
    let started = Instant::now();
    while done[0] < ops && started.elapsed() < PAIRED_TIME {
        // The generator's top bit (its lowest is the weakest).
        let first = (rng.below(u64::MAX) >> 63) as usize;
        for k in 0..2 {
            let s = (first + k) % 2;
            let (target, keys, versions) = (&sides[s], &keys[s], &versions[s]);
            let picks: [usize; BATCH] =
                std::array::from_fn(|_| rng.below(keys.len() as u64) as usize);
            let t0 = Instant::now();
            for i in picks {
                if update {
                    let slot = &versions.0[i];
                    let v = slot.load(Ordering::Relaxed);
                    slot.store(target.update(&keys[i], v).await?, Ordering::Relaxed);
                } else {
                    target.load(&keys[i], false).await?;
                }
            }
            spent[s] += t0.elapsed().as_secs_f64();
            done[s] += BATCH;
        }
    }
    if spent[0] <= 0.0 || spent[1] <= 0.0 {
        return wrong!("no batch ran");
    }
    Ok([done[0] as f64 / spent[0], done[1] as f64 / spent[1]])
}

/// `--count rss:SIDE --count-n N` (a fresh process): fills N sessions into the memory
/// engine (`memory`) or tower-sessions' `MemoryStore` (`tower`) and prints the resident
/// bytes they added per session.
pub async fn rss_count(side: &str, n: usize) -> R<()> {
    let target: Arc<dyn Target> = match side {
        "memory" => Arc::new(Ours::new(from_toml(&memory_toml(n as u64)).await?)),
        "tower" => Arc::new(crate::peers::memory()),
        other => return wrong!("unknown rss side: {other}"),
    };
    // One session first, so that what the first write sets up is in the baseline.
    let first = target.create().await?;
    let before = rss_bytes()?;
    let (keys, _) = fill_by_create(&target, n as u64).await?;
    // The keys are the benchmark's, not the store's: out of the figure.
    let keys_heap: usize = keys.len() * std::mem::size_of::<Key>()
        + keys.iter().map(|k| k.text().len()).sum::<usize>();
    let after = rss_bytes()?;
    if !target.holds(&first).await? || !target.holds(&keys[keys.len() / 2]).await? {
        return wrong!("rss {side}: a session filled was not kept");
    }
    let added = after
        .saturating_sub(before)
        .saturating_sub(keys_heap as u64);
    println!("rss_per_session {}", added as f64 / n as f64);
    Ok(())
}

/// This process's resident set, bytes (`/proc/self/statm`).
fn rss_bytes() -> R<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("statm: no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

/// Resident bytes per session of `side` at `n` sessions, measured in a fresh process.
fn rss_probe(side: &str, n: u64) -> R<f64> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--count",
            &format!("rss:{side}"),
            "--count-n",
            &n.to_string(),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return wrong!(
            "rss probe {side} n={n} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    match text
        .lines()
        .find_map(|l| l.strip_prefix("rss_per_session "))
        .map(str::parse::<f64>)
    {
        Some(Ok(v)) => Ok(v),
        _ => wrong!("rss probe {side} n={n}: no figure in {text:?}"),
    }
}

/// One phase of one side: ops/s and every latency (ns).
type Phase = (f64, Vec<u64>);

/// Each session's version as the benchmark last wrote it (updates are
/// compare-and-set).
struct Versions(Vec<AtomicU64>);

impl Versions {
    fn new(n: usize) -> Self {
        Versions((0..n).map(|_| AtomicU64::new(1)).collect())
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

/// `TASKS` tasks loading (or updating) random sessions among `keys`, `ops` in all or
/// [`PHASE_TIME`]; ops/s and every latency (ns).
async fn phase(
    target: &Arc<dyn Target>,
    keys: &Arc<Vec<Key>>,
    versions: &Arc<Versions>,
    update: bool,
    ops: usize,
) -> R<Phase> {
    let left = Arc::new(AtomicUsize::new(ops));
    let per_task = (keys.len() / TASKS) as u64;
    if per_task == 0 {
        return wrong!("{} sessions for {TASKS} tasks", keys.len());
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (target, keys, versions, left) =
                (target.clone(), keys.clone(), versions.clone(), left.clone());
            tokio::spawn(async move {
                let mut rng = XorShift::new(t as u64);
                let mut lat = Vec::new();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                    && started.elapsed() < PHASE_TIME
                {
                    // Task t owns the sessions t, t + TASKS, ...: no two tasks update
                    // one session at once, so every compare-and-set holds.
                    let i = t + TASKS * rng.below(per_task) as usize;
                    let k = &keys[i];
                    let one = Instant::now();
                    if update {
                        let slot = &versions.0[i];
                        let v = slot.load(Ordering::Relaxed);
                        slot.store(target.update(k, v).await?, Ordering::Relaxed);
                    } else {
                        target.load(k, false).await?;
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
    let rss = match r.rss_per_session {
        Some([ours, reference]) => format!("{:.0} / {:.0}", ours, reference),
        None => "-".to_owned(),
    };
    let ratio = |v: &[f64; 3]| format!("{:.2}x ({:.2}-{:.2})", v[0], v[1], v[2]);
    format!(
        "| {} | {} | {} | {:.0} / {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.engine,
        r.reference,
        r.n,
        r.fill_rate[0],
        r.fill_rate[1],
        cell(&r.load),
        cell(&r.floor_load),
        ratio(&r.load_ratio),
        cell(&r.update),
        cell(&r.floor_update),
        ratio(&r.update_ratio),
        ratio(&r.paired_load),
        ratio(&r.paired_update),
        rss,
    )
}

/// The rows as a Markdown table.
pub fn table(rows: &[GrowthRow]) -> String {
    let mut s = String::from(
        "| engine | reference | sessions | fill/s ours / reference | load ours ops/s (p50 / p99 µs) | load reference | ours ÷ reference, per round: median (range) | update ours ops/s (p50 / p99 µs) | update reference | ours ÷ reference, per round | load, c=1 interleaved: ours ÷ reference per round | update, c=1 interleaved | RSS bytes/session ours / reference |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in rows {
        s.push_str(&line(r));
        s.push('\n');
    }
    s
}
