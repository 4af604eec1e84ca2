//! `DbStore` against raw sqlx running the same statements on the same table shape, per
//! database, at concurrency 1 and 32, in one run; plus, for `create`, the four-statement
//! pattern of tower-sessions-sqlx-store (BEGIN, SELECT EXISTS, upsert, COMMIT), emulated
//! with raw sqlx 0.9 (the published store depends on sqlx 0.8, whose bundled SQLite would
//! clash with ours).
//!
//! ```text
//! cargo bench -p backend-db --bench store_vs_raw                 # all three databases
//! cargo bench -p backend-db --bench store_vs_raw -- postgres     # a subset
//! ```
//!
//! Raw sqlx gets every advantage: the same pool, pre-encoded bytes (no codec on either
//! side of the wire) and no deadline. Each phase runs a bounded number of operations;
//! within it the sides alternate call by call (the order rotating) and every call is
//! timed, so background load on a shared machine hits all sides alike. A side's rate is
//! `concurrency / mean latency`; the store/raw ratio is the raw mean latency over the
//! store's, reported as the median of five repetitions with its spread (min..max).
//! Needs the test servers (`source target/test-servers.env`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_db::{Backend, DbConfig, DbPool, DbStore};
use integration_tests::servers;
use serde_json::json;
use session_core::{BincodeCodec, Codec, Record, SessionData, SessionKey, SessionStore, Timestamp};
use sqlx::{AssertSqlSafe, SqlStr};

const REPS: usize = 5;
const CONCURRENCY: [usize; 2] = [1, 32];
/// Operations per side and phase, by concurrency. SQLite is fast and its WAL
/// checkpoints make a few calls very slow: more calls average those out.
fn ops(backend: Backend, conc: usize) -> usize {
    let n = if conc == 1 { 1_000 } else { 4_000 };
    if backend == Backend::Sqlite { n * 4 } else { n }
}
/// A phase that runs longer than this is a broken setup, not a result.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Load,
    Update,
    Delete,
    PeerCreate,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Load => "load",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::PeerCreate => "create (tower-sessions 4-statement)",
        }
    }
}

/// The raw statements: the text `DbStore` runs, on a table of the same shape.
struct Raw {
    pool: DbPool,
    insert: SqlStr,
    load: SqlStr,
    update: SqlStr,
    delete: SqlStr,
    peer_exists: SqlStr,
    peer_upsert: SqlStr,
}

fn s(text: String) -> SqlStr {
    sqlx::SqlSafeStr::into_sql_str(AssertSqlSafe(Arc::<str>::from(text)))
}

impl Raw {
    fn new(pool: DbPool, table: &str) -> Raw {
        let backend = pool.backend();
        let (t, p): (String, fn(u32) -> String) = match backend {
            Backend::Postgres => (format!("\"{table}\""), |n| format!("${n}")),
            Backend::Sqlite => (format!("\"{table}\""), |n| format!("?{n}")),
            Backend::MySql => (format!("`{table}`"), |_| "?".to_owned()),
        };
        let cols = "session_key, session_data, expires_at, version";
        let (insert, update_version, update_target, returning, peer_upsert) = match backend {
            Backend::Postgres | Backend::Sqlite => (
                format!(
                    "INSERT INTO {t} ({cols}) VALUES ({}, {}, {}, {}) ON CONFLICT (session_key) \
                     DO UPDATE SET session_data = excluded.session_data, expires_at = \
                     excluded.expires_at, version = excluded.version WHERE {t}.expires_at <= {}",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5)
                ),
                "version + 1",
                t.clone(),
                " RETURNING version",
                format!(
                    "INSERT INTO {t} ({cols}) VALUES ({}, {}, {}, 1) ON CONFLICT (session_key) \
                     DO UPDATE SET session_data = excluded.session_data, expires_at = \
                     excluded.expires_at",
                    p(1),
                    p(2),
                    p(3)
                ),
            ),
            Backend::MySql => (
                format!("INSERT INTO {t} ({cols}) VALUES (?, ?, ?, ?)"),
                "LAST_INSERT_ID(version + 1)",
                format!("{t} FORCE INDEX (PRIMARY)"),
                "",
                format!(
                    "INSERT INTO {t} ({cols}) VALUES (?, ?, ?, 1) ON DUPLICATE KEY UPDATE \
                     session_data = VALUES(session_data), expires_at = VALUES(expires_at)"
                ),
            ),
        };
        Raw {
            insert: s(insert),
            load: s(format!(
                "SELECT session_data, expires_at, version FROM {t} \
                 WHERE session_key = {} AND expires_at > {}",
                p(1),
                p(2)
            )),
            update: s(format!(
                "UPDATE {update_target} SET session_data = {}, expires_at = {}, \
                 version = {update_version} WHERE session_key = {} AND expires_at > {} \
                 AND version = {}{returning}",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5)
            )),
            delete: s(format!("DELETE FROM {t} WHERE session_key = {}", p(1))),
            peer_exists: s(format!(
                "SELECT EXISTS(SELECT 1 FROM {t} WHERE session_key = {})",
                p(1)
            )),
            peer_upsert: s(peer_upsert),
            pool,
        }
    }

    async fn create(&self, bytes: &[u8], expires_at: i64) -> SessionKey {
        let key = SessionKey::generate().expect("OS randomness");
        let now = Timestamp::now().as_unix_millis();
        let rows = match &self.pool {
            DbPool::Postgres(p) => sqlx::query(self.insert.clone())
                .bind(key.as_str())
                .bind(bytes)
                .bind(expires_at)
                .bind(1i64)
                .bind(now)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            DbPool::Sqlite(p) => sqlx::query(self.insert.clone())
                .bind(key.as_str())
                .bind(bytes)
                .bind(expires_at)
                .bind(1i64)
                .bind(now)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            DbPool::MySql(p) => sqlx::query(self.insert.clone())
                .bind(key.as_str())
                .bind(bytes)
                .bind(expires_at)
                .bind(1i64)
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        };
        assert_eq!(rows.expect("raw insert"), 1);
        key
    }

    async fn peer_create(&self, bytes: &[u8], expires_at: i64) -> SessionKey {
        macro_rules! four {
            ($p:expr) => {{
                let mut tx = $p.begin().await.expect("begin");
                let mut key = SessionKey::generate().expect("OS randomness");
                loop {
                    let exists: bool = sqlx::query_scalar(self.peer_exists.clone())
                        .bind(key.as_str())
                        .fetch_one(&mut *tx)
                        .await
                        .expect("exists");
                    if !exists {
                        break;
                    }
                    key = SessionKey::generate().expect("OS randomness");
                }
                sqlx::query(self.peer_upsert.clone())
                    .bind(key.as_str())
                    .bind(bytes)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await
                    .expect("upsert");
                tx.commit().await.expect("commit");
                key
            }};
        }
        match &self.pool {
            DbPool::Postgres(p) => four!(p),
            DbPool::Sqlite(p) => four!(p),
            DbPool::MySql(p) => four!(p),
        }
    }

    async fn load(&self, key: &SessionKey) {
        let now = Timestamp::now().as_unix_millis();
        let row: Option<(Vec<u8>, i64, i64)> = match &self.pool {
            DbPool::Postgres(p) => sqlx::query_as(self.load.clone())
                .bind(key.as_str())
                .bind(now)
                .fetch_optional(p)
                .await
                .expect("load"),
            DbPool::Sqlite(p) => sqlx::query_as(self.load.clone())
                .bind(key.as_str())
                .bind(now)
                .fetch_optional(p)
                .await
                .expect("load"),
            DbPool::MySql(p) => sqlx::query_as(self.load.clone())
                .bind(key.as_str())
                .bind(now)
                .fetch_optional(p)
                .await
                .expect("load"),
        };
        assert!(row.is_some(), "raw load missed");
    }

    async fn update(&self, key: &SessionKey, bytes: &[u8], expires_at: i64) {
        let now = Timestamp::now().as_unix_millis();
        let version: Option<i64> = match &self.pool {
            DbPool::Postgres(p) => sqlx::query_scalar(self.update.clone())
                .bind(bytes)
                .bind(expires_at)
                .bind(key.as_str())
                .bind(now)
                .bind(1i64)
                .fetch_optional(p)
                .await
                .expect("update"),
            DbPool::Sqlite(p) => sqlx::query_scalar(self.update.clone())
                .bind(bytes)
                .bind(expires_at)
                .bind(key.as_str())
                .bind(now)
                .bind(1i64)
                .fetch_optional(p)
                .await
                .expect("update"),
            DbPool::MySql(p) => {
                let r = sqlx::query(self.update.clone())
                    .bind(bytes)
                    .bind(expires_at)
                    .bind(key.as_str())
                    .bind(now)
                    .bind(1i64)
                    .execute(p)
                    .await
                    .expect("update");
                (r.rows_affected() > 0).then(|| r.last_insert_id() as i64)
            }
        };
        assert_eq!(version, Some(2), "raw update");
    }

    async fn delete(&self, key: &SessionKey) {
        let rows = match &self.pool {
            DbPool::Postgres(p) => sqlx::query(self.delete.clone())
                .bind(key.as_str())
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            DbPool::Sqlite(p) => sqlx::query(self.delete.clone())
                .bind(key.as_str())
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
            DbPool::MySql(p) => sqlx::query(self.delete.clone())
                .bind(key.as_str())
                .execute(p)
                .await
                .map(|r| r.rows_affected()),
        };
        assert_eq!(rows.expect("delete"), 1, "raw delete");
    }
}

struct Bench {
    backend: Backend,
    store: DbStore,
    raw: Raw,
    record: Record,
    bytes: Vec<u8>,
    with_peer: bool,
}

/// The contestants; `Peer` only creates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Raw = 0,
    Store = 1,
    Peer = 2,
}

/// Mean latency per side over one phase.
type Means = [Duration; 3];

/// Runs operation `op` for `n` indices with `conc` workers. Each index runs once on every
/// contestant, back to back, in an order that rotates with the index, and each call is
/// timed on its own: the sides interleave at the finest grain, so background load hits
/// them alike. Returns each side's mean latency.
async fn phase(
    b: &Arc<Bench>,
    op: Op,
    sides: &[Side],
    n: usize,
    conc: usize,
    keys: &Arc<[Vec<SessionKey>; 3]>,
) -> (Means, [Vec<SessionKey>; 3]) {
    let sides: Arc<Vec<Side>> = Arc::new(sides.to_vec());
    let workers: Vec<_> = (0..conc)
        .map(|w| {
            let (b, sides, keys) = (b.clone(), sides.clone(), keys.clone());
            tokio::spawn(async move {
                let mut total = [Duration::ZERO; 3];
                let mut made: [Vec<(usize, SessionKey)>; 3] = Default::default();
                let expires_at = b.record.expires_at.as_unix_millis();
                let mut i = w;
                while i < n {
                    for j in 0..sides.len() {
                        let side = sides[(i + j) % sides.len()];
                        let s = side as usize;
                        let started = Instant::now();
                        match (op, side) {
                            (Op::Create, Side::Store) => {
                                made[s].push((i, b.store.create(&b.record).await.expect("create")))
                            }
                            (Op::Create, Side::Raw) => {
                                made[s].push((i, b.raw.create(&b.bytes, expires_at).await))
                            }
                            (Op::Create, Side::Peer) => {
                                made[s].push((i, b.raw.peer_create(&b.bytes, expires_at).await))
                            }
                            (Op::Load, Side::Store) => {
                                b.store
                                    .load(&keys[s][i])
                                    .await
                                    .expect("load")
                                    .expect("live");
                            }
                            (Op::Load, _) => b.raw.load(&keys[s][i]).await,
                            (Op::Update, Side::Store) => {
                                let v = b
                                    .store
                                    .update(&keys[s][i], &b.record, Some(1))
                                    .await
                                    .expect("update");
                                assert_eq!(v, 2);
                            }
                            (Op::Update, _) => {
                                b.raw.update(&keys[s][i], &b.bytes, expires_at).await
                            }
                            (Op::Delete, Side::Store) => {
                                assert!(b.store.delete(&keys[s][i]).await.expect("delete"));
                            }
                            (Op::Delete, _) => b.raw.delete(&keys[s][i]).await,
                            (Op::PeerCreate, _) => unreachable!("peer creates under Op::Create"),
                        }
                        total[s] += started.elapsed();
                    }
                    i += conc;
                }
                (total, made)
            })
        })
        .collect();
    let all = async {
        let mut total = [Duration::ZERO; 3];
        let mut made: [Vec<Option<SessionKey>>; 3] = Default::default();
        if op == Op::Create {
            for side in sides.iter() {
                made[*side as usize] = vec![None; n];
            }
        }
        for w in workers {
            let (t, m) = w.await.expect("worker");
            for s in 0..3 {
                total[s] += t[s];
            }
            for (s, list) in m.into_iter().enumerate() {
                for (i, k) in list {
                    made[s][i] = Some(k);
                }
            }
        }
        let means = total.map(|t| t / n as u32);
        let made = made.map(|v| v.into_iter().map(|k| k.expect("every key made")).collect());
        (means, made)
    };
    tokio::time::timeout(PHASE_LIMIT, all)
        .await
        .expect("phase exceeded its time limit")
}

/// One repetition: create, load, update, delete, every side interleaved. Returns the
/// mean latencies per operation (create, load, update, delete).
async fn round(b: &Arc<Bench>, conc: usize) -> [Means; 4] {
    let n = ops(b.backend, conc);
    let mut sides = vec![Side::Raw, Side::Store];
    if b.with_peer {
        sides.push(Side::Peer);
    }
    let none: Arc<[Vec<SessionKey>; 3]> = Arc::new(Default::default());
    let (create, keys) = phase(b, Op::Create, &sides, n, conc, &none).await;
    let keys = Arc::new(keys);
    // The peer's rows served only to time its create.
    for k in keys[Side::Peer as usize].iter() {
        b.raw.delete(k).await;
    }
    let pair = [Side::Raw, Side::Store];
    let (load, _) = phase(b, Op::Load, &pair, n, conc, &keys).await;
    let (update, _) = phase(b, Op::Update, &pair, n, conc, &keys).await;
    let (delete, _) = phase(b, Op::Delete, &pair, n, conc, &keys).await;
    [create, load, update, delete]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (lo, hi)
}

/// Throughput a side would reach alone at this concurrency: `conc / mean latency`.
fn rate(conc: usize, mean: Duration) -> f64 {
    conc as f64 / mean.as_secs_f64()
}

fn sample_record() -> Record {
    let mut data = SessionData::new();
    data.insert("user_id".into(), json!(101));
    data.insert("name".into(), json!("Zoë"));
    data.insert("cart".into(), json!(["apple", "pear", "fig"]));
    data.insert("csrf".into(), json!("0123456789abcdef0123456789abcdef"));
    Record::with_ttl(data, 3600)
}

/// Benchmarks one database. `variant` labels a run on a differently configured server
/// session (then only `create` is reported).
async fn bench_db(backend: Backend, variant: Option<(&str, &str)>) {
    let (mut url, _dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => (servers::postgres_url(), None),
        Backend::MySql => (servers::mysql_url(), None),
    };
    if let Some((_, params)) = variant {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(params);
    }
    let label = match variant {
        Some((label, _)) => format!("{} {label}", backend.name()),
        None => backend.name().to_owned(),
    };
    let config = DbConfig {
        max_connections: 32,
        ..DbConfig::new(url.clone())
    };
    let pool = match DbPool::connect(&config).await {
        Ok(p) => p,
        Err(e) => servers::unreachable(backend.name(), &url, e),
    };
    if let (Some((label, _)), DbPool::Postgres(p)) = (variant, &pool) {
        let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(p)
            .await
            .expect("SHOW synchronous_commit");
        assert_eq!(setting, "off", "{label} did not reach the server");
    }
    let suffix = servers::unique_suffix();
    let store = DbStore::new(pool.clone(), &format!("bench_store_{suffix}"))
        .expect("name")
        .with_statement_timeout(config.statement_timeout());
    store.migrate().await.expect("migrate");
    // The raw side's table: the same shape, made by the same migration.
    let raw_table = format!("bench_raw_{suffix}");
    let raw_shape = DbStore::new(pool.clone(), &raw_table).expect("name");
    raw_shape.migrate().await.expect("migrate raw table");
    let record = sample_record();
    let bytes = BincodeCodec::default().encode(&record).expect("encode");
    let b = Arc::new(Bench {
        backend,
        store,
        raw: Raw::new(pool.clone(), &raw_table),
        record,
        bytes,
        // The peer's pattern on SQLite fails under concurrency with SQLITE_BUSY (a
        // deferred transaction upgrading its read lock), the bug that made tower-sessions
        // switch its SQLite store to a plain insert: measured on the servers only.
        with_peer: backend != Backend::Sqlite,
    });
    // Warm up: connections opened, statements prepared on every side.
    round(&b, 32).await;

    for conc in CONCURRENCY {
        let mut rates = [
            [Vec::new(), Vec::new(), Vec::new()],
            Default::default(),
            Default::default(),
            Default::default(),
        ];
        let mut ratios: [Vec<f64>; 4] = Default::default();
        let mut peer_ratios = Vec::new();
        for _ in 0..REPS {
            let r = round(&b, conc).await;
            for (i, means) in r.iter().enumerate() {
                for s in 0..3 {
                    if means[s] > Duration::ZERO {
                        rates[i][s].push(rate(conc, means[s]));
                    }
                }
                ratios[i].push(means[0].as_secs_f64() / means[1].as_secs_f64());
            }
            if b.with_peer {
                peer_ratios.push(r[0][2].as_secs_f64() / r[0][1].as_secs_f64());
            }
        }
        for (i, op) in [Op::Create, Op::Load, Op::Update, Op::Delete]
            .into_iter()
            .enumerate()
            .take(if variant.is_some() { 1 } else { 4 })
        {
            let (lo, hi) = spread(&ratios[i]);
            println!(
                "{label:<9} c={:<3} {:<7} raw {:>7.0}  store {:>7.0} ops/s   store/raw = {:.2}x [{lo:.2}..{hi:.2}]",
                conc,
                op.name(),
                median(&mut rates[i][0]),
                median(&mut rates[i][1]),
                median(&mut ratios[i]),
            );
        }
        if b.with_peer {
            let (lo, hi) = spread(&peer_ratios);
            println!(
                "{label:<9} c={:<3} {:<7} peer {:>6.0}  store {:>7.0} ops/s   store/peer = {:.2}x [{lo:.2}..{hi:.2}]   ({})",
                conc,
                "create",
                median(&mut rates[0][2]),
                median(&mut rates[0][1].clone()),
                median(&mut peer_ratios),
                Op::PeerCreate.name(),
            );
        }
    }
    b.store.drop_table().await.expect("drop");
    raw_shape.drop_table().await.expect("drop raw");
    pool.close().await;
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "{} operations per side and phase at c=1, {} at c=32 (SQLite 4x), sides interleaved \
         call by call; {REPS} repetitions: median ops/s (conc / mean latency) and median \
         ratio [min..max]",
        ops(Backend::Postgres, 1),
        ops(Backend::Postgres, 32)
    );
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        if wanted.is_empty() || wanted.iter().any(|w| w == backend.name()) {
            runtime.block_on(bench_db(backend, None));
        }
    }
    // With durable commits a create costs one WAL flush on every side, which bounds the
    // gain of one round trip over four; without the flush the round trips alone show.
    if wanted.is_empty() || wanted.iter().any(|w| w == "postgres" || w == "nosync") {
        runtime.block_on(bench_db(
            Backend::Postgres,
            Some((
                "(synchronous_commit=off)",
                "options=-c%20synchronous_commit%3Doff",
            )),
        ));
    }
}
