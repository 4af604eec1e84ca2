//! Listing the sessions of one user among N stored: `DbStore::sessions_of` for a user
//! with 10 sessions, on a table of 1,000 and one of 1,000,000 signed-in sessions (every
//! row belongs to some user, 10 sessions each, so the principal index holds all N), per
//! database. The claim under test: the cost follows the user's sessions, not the table.
//!
//! ```text
//! cargo bench -p backend-db --bench user_listing              # SQLite and PostgreSQL
//! cargo bench -p backend-db --bench user_listing -- postgres  # a subset (sqlite, postgres, mysql)
//! ```
//!
//! Each table is filled with multi-row `INSERT`s inside one transaction (rows carry
//! records encoded by the store's codec, so listing decodes real bytes), and PostgreSQL's
//! planner statistics are refreshed (`ANALYZE`, what autovacuum does after a bulk load).
//! The two tables are then listed alternately, call by call, so background load on a
//! shared machine hits both alike; every call is timed. Reported: median and p90 latency
//! per table and the ratio of the 1M median to the 1k median. The tables are dropped at
//! the end. Needs the test servers (`source target/test-servers.env`).

use std::time::{Duration, Instant};

use backend_db::{Backend, DbConfig, DbPool, DbStore};
use integration_tests::servers;
use serde_json::json;
use session_core::users::UserIndex;
use session_core::{BincodeCodec, Codec, Record, SessionData, SessionKey, Timestamp};
use sqlx::AssertSqlSafe;

/// Table sizes compared.
const SIZES: [usize; 2] = [1_000, 1_000_000];
/// Sessions per user (the listed user's too).
const PER_USER: usize = 10;
/// Rows per `INSERT` statement (4 parameters each: far below every driver's limit).
const ROWS_PER_INSERT: usize = 500;
/// Timed listings per table, after `WARMUP` untimed ones.
const CALLS: usize = 2_000;
const WARMUP: usize = 100;
/// A fill or a measurement that runs longer than this is a broken setup, not a result.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

fn principal(user: usize) -> String {
    format!("user-{user:07}")
}

/// The encoded record of a session of `who`.
fn bytes_of(who: &str) -> Vec<u8> {
    let mut data = SessionData::new();
    data.insert("cart".into(), json!(["apple", "pear", "fig"]));
    data.insert("csrf".into(), json!("0123456789abcdef0123456789abcdef"));
    let mut record = Record::with_ttl(data, 3600);
    record.meta.principal = Some(who.to_owned());
    record.meta.last_seen = Some(Timestamp::now());
    BincodeCodec::default().encode(&record).expect("encode")
}

/// Fills `store`'s table with `n` sessions of `n / PER_USER` users (user `u` owns rows
/// `u, u + users, u + 2 * users, ...`: a user's sessions are spread over the table, as
/// they are created at different times).
async fn fill(store: &DbStore, n: usize) {
    let users = n / PER_USER;
    let expires_at = Timestamp::now().add_secs(3600).as_unix_millis();
    let t = store.table();
    let backend = store.backend();
    let insert = |rows: usize| {
        let mut sql = format!(
            "INSERT INTO \"{t}\" (session_key, session_data, expires_at, version, principal) VALUES "
        );
        for r in 0..rows {
            if r > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Postgres => {
                    let b = 3 * r;
                    sql.push_str(&format!(
                        "(${}, ${}, {expires_at}, 1, ${})",
                        b + 1,
                        b + 2,
                        b + 3
                    ));
                }
                Backend::Sqlite | Backend::MySql => {
                    sql.push_str(&format!("(?, ?, {expires_at}, 1, ?)"));
                }
            }
        }
        if backend == Backend::MySql {
            sql = sql.replace('"', "`");
        }
        sql
    };
    let full = insert(ROWS_PER_INSERT);
    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(users);
    for u in 0..users {
        encoded.push(bytes_of(&principal(u)));
    }
    macro_rules! load {
        ($p:expr) => {{
            let mut tx = $p.begin().await.expect("begin");
            let mut i = 0;
            while i < n {
                let rows = ROWS_PER_INSERT.min(n - i);
                let sql = if rows == ROWS_PER_INSERT {
                    full.clone()
                } else {
                    insert(rows)
                };
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for row in i..i + rows {
                    let user = row % users;
                    let key = SessionKey::generate().expect("OS randomness");
                    q = q
                        .bind(key.as_str().to_owned())
                        .bind(encoded[user].clone())
                        .bind(principal(user));
                }
                q.execute(&mut *tx).await.expect("insert");
                i += rows;
            }
            tx.commit().await.expect("commit");
        }};
    }
    match store.pool() {
        DbPool::Sqlite(p) => load!(p),
        DbPool::Postgres(p) => {
            load!(p);
            let analyze = format!("ANALYZE \"{t}\"");
            sqlx::query(AssertSqlSafe(analyze))
                .execute(p)
                .await
                .expect("ANALYZE");
        }
        DbPool::MySql(p) => load!(p),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn bench_db(backend: Backend) {
    let (url, _dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => (servers::postgres_url(), None),
        Backend::MySql => (servers::mysql_url(), None),
    };
    let config = DbConfig::new(url.clone());
    let pool = match DbPool::connect(&config).await {
        Ok(p) => p,
        Err(e) => servers::unreachable(backend.name(), &url, e),
    };
    let suffix = servers::unique_suffix();
    let mut stores = Vec::new();
    for n in SIZES {
        let store = DbStore::new(pool.clone(), &format!("bench_users_{n}_{suffix}"))
            .expect("name")
            .with_statement_timeout(config.statement_timeout());
        store.migrate().await.expect("migrate");
        let started = Instant::now();
        tokio::time::timeout(PHASE_LIMIT, fill(&store, n))
            .await
            .expect("fill exceeded its time limit");
        println!(
            "{:<9} filled {n:>9} rows in {:.1} s",
            backend.name(),
            started.elapsed().as_secs_f64()
        );
        stores.push((n, store));
    }
    // A user in the middle of each table's user range.
    let who: Vec<String> = SIZES.iter().map(|n| principal(n / PER_USER / 2)).collect();
    let measure = async {
        let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(CALLS); SIZES.len()];
        for call in 0..WARMUP + CALLS {
            // Alternate the order too, so neither table always runs first.
            for j in 0..SIZES.len() {
                let i = (j + call) % SIZES.len();
                let started = Instant::now();
                let list = stores[i].1.sessions_of(&who[i], None).await.expect("list");
                let took = started.elapsed();
                assert_eq!(
                    list.len(),
                    PER_USER,
                    "{} lists its user's sessions",
                    SIZES[i]
                );
                if call >= WARMUP {
                    times[i].push(took);
                }
            }
        }
        times
    };
    let mut times = tokio::time::timeout(PHASE_LIMIT, measure)
        .await
        .expect("measurement exceeded its time limit");
    let mut medians = Vec::new();
    for (i, t) in times.iter_mut().enumerate() {
        t.sort();
        let (median, p90) = (percentile(t, 0.5), percentile(t, 0.9));
        medians.push(median);
        println!(
            "{:<9} list {PER_USER} sessions of one user among {:>9}: median {:>7.1} µs  p90 {:>7.1} µs",
            backend.name(),
            SIZES[i],
            micros(median),
            micros(p90)
        );
    }
    println!(
        "{:<9} ratio {}/{} (median latency) = {:.2}x",
        backend.name(),
        SIZES[1],
        SIZES[0],
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
    for (_, store) in stores {
        store.drop_table().await.expect("drop");
    }
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
        "sessions_of for a user with {PER_USER} sessions; {CALLS} timed calls per table \
         after {WARMUP} warm-up calls, tables alternated call by call"
    );
    let all = [Backend::Sqlite, Backend::Postgres, Backend::MySql];
    for backend in all {
        let chosen = if wanted.is_empty() {
            backend != Backend::MySql
        } else {
            wanted.iter().any(|w| w == backend.name())
        };
        if chosen {
            runtime.block_on(bench_db(backend));
        }
    }
}
