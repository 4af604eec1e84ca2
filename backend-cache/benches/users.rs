//! Benchmarks of the cache stores' per-user index.
//!
//! ```text
//! cargo bench -p backend-cache --bench users
//! ```
//!
//! - `memory_anonymous`: create, load and update of anonymous sessions on the memory
//!   engine (the hot path the index must leave alone).
//! - `list_10_of_n`: listing the 10 sessions of one user among `n` stored sessions
//!   (1,000 and 1,000,000), on the memory engine and on Redis
//!   (`SESSIONS_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`). Redis is filled with
//!   pipelined `SET`s of a real stored value under a random prefix (each filler key
//!   expires after ten minutes), which the bench deletes afterwards. Without a reachable
//!   Redis server the Redis rows are skipped with a note.
//! - `redis_update`: an update of an anonymous and of a signed-in session on Redis (the
//!   latter pays the index step).

use std::hint::black_box;
use std::sync::Arc;

use backend_cache::{CacheConfig, MemoryConfig, MemoryStore, RedisStore};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;
use session_core::{Record, SessionData, SessionKey, SessionStore, UserIndex};

/// The user whose sessions are listed.
const USER: &str = "bench-user@example.com";
/// How many sessions that user has.
const USER_SESSIONS: usize = 10;
/// Store sizes measured.
const SIZES: [usize; 2] = [1_000, 1_000_000];
/// Filler keys written per Redis pipeline.
const BATCH: usize = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small anonymous record (a cart), one hour to live.
fn anonymous() -> Record {
    let mut d = SessionData::new();
    d.insert("cart".into(), json!(["apple", "pear"]));
    Record::with_ttl(d, 3600)
}

fn memory_anonymous(c: &mut Criterion) {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let r = anonymous();
    let mut g = c.benchmark_group("memory_anonymous");
    g.bench_function("create", |b| {
        b.iter(|| rt.block_on(store.create(black_box(&r))).expect("create"))
    });
    let key = rt.block_on(store.create(&r)).expect("create");
    g.bench_function("load", |b| {
        b.iter(|| rt.block_on(store.load(black_box(&key))).expect("load"))
    });
    g.bench_function("update", |b| {
        b.iter(|| {
            rt.block_on(store.update(black_box(&key), &r, None))
                .expect("update")
        })
    });
    g.finish();
}

fn signed_in() -> Record {
    let mut r = anonymous();
    r.meta.principal = Some(USER.to_owned());
    r
}

/// A filler session key: `i` in 32 decimal digits (a valid key).
fn filler_key(i: usize) -> String {
    format!("{i:0>32}")
}

/// A memory store of `n` sessions, `USER_SESSIONS` of them the user's.
fn memory_of(n: usize, rt: &tokio::runtime::Runtime) -> MemoryStore {
    let store = MemoryStore::with_config(MemoryConfig { max_entries: n * 2 });
    let r = anonymous();
    for _ in 0..n - USER_SESSIONS {
        rt.block_on(store.create(&r)).expect("create");
    }
    let mine = signed_in();
    for _ in 0..USER_SESSIONS {
        rt.block_on(store.create(&mine)).expect("create");
    }
    assert_eq!(
        rt.block_on(store.count_of(USER)).expect("count"),
        USER_SESSIONS as u64
    );
    store
}

fn list_memory(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group("list_10_of_n");
    for n in SIZES {
        // Filled on first use: a filtered-out row costs nothing.
        let mut store = None;
        g.bench_with_input(BenchmarkId::new("memory", n), &n, |b, &n| {
            let store = store.get_or_insert_with(|| memory_of(n, rt));
            b.iter(|| {
                rt.block_on(store.sessions_of(black_box(USER), None))
                    .expect("list")
            })
        });
    }
    g.finish();
}

async fn redis_store(prefix: &str) -> Option<(RedisStore, redis::aio::MultiplexedConnection)> {
    let url = std::env::var("SESSIONS_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let codec = session_core::CodecKind::Bincode.build(1 << 20);
    let store = RedisStore::connect(&CacheConfig::new(&url).with_key_prefix(prefix), codec)
        .await
        .map_err(|e| eprintln!("list_10_of_n/redis skipped: {e}"))
        .ok()?;
    let raw = redis::Client::open(url.as_str())
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()?;
    Some((store, raw))
}

/// Writes filler keys `from..to` under `prefix`, each holding `value`, pipelined.
async fn fill(
    raw: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    value: &[u8],
    from: usize,
    to: usize,
) {
    for start in (from..to).step_by(BATCH) {
        let mut pipe = redis::pipe();
        for i in start..(start + BATCH).min(to) {
            pipe.cmd("SET")
                .arg(format!("{prefix}{}", filler_key(i)))
                .arg(value)
                .arg("PX")
                .arg(600_000)
                .ignore();
        }
        let () = pipe.query_async(raw).await.expect("fill");
    }
}

/// Deletes filler keys `0..to` under `prefix`, pipelined.
async fn unfill(raw: &mut redis::aio::MultiplexedConnection, prefix: &str, to: usize) {
    for start in (0..to).step_by(BATCH) {
        let mut cmd = redis::cmd("UNLINK");
        for i in start..(start + BATCH).min(to) {
            cmd.arg(format!("{prefix}{}", filler_key(i)));
        }
        let _: i64 = cmd.query_async(raw).await.expect("unlink");
    }
}

fn list_redis(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let suffix = SessionKey::generate().expect("rng");
    let prefix = format!("bench-users-{}:", &suffix.as_str()[..12]);
    let Some((store, mut raw)) = rt.block_on(redis_store(&prefix)) else {
        return;
    };
    // One real stored value, copied under every filler key.
    let model = rt.block_on(store.create(&anonymous())).expect("create");
    let value: Vec<u8> = rt
        .block_on(
            redis::cmd("GET")
                .arg(format!("{prefix}{}", model.as_str()))
                .query_async(&mut raw),
        )
        .expect("GET");
    rt.block_on(store.delete(&model)).expect("delete");
    let mine = signed_in();
    for _ in 0..USER_SESSIONS {
        rt.block_on(store.create(&mine)).expect("create");
    }
    let mut g = c.benchmark_group("list_10_of_n");
    // Filled on first use, up to each row's size: a filtered-out row costs nothing.
    let mut filled = 0;
    for n in SIZES {
        g.bench_with_input(BenchmarkId::new("redis", n), &n, |b, &n| {
            if filled < n - USER_SESSIONS {
                rt.block_on(fill(&mut raw, &prefix, &value, filled, n - USER_SESSIONS));
                filled = n - USER_SESSIONS;
            }
            b.iter(|| {
                let list = rt
                    .block_on(store.sessions_of(black_box(USER), None))
                    .expect("list");
                assert_eq!(list.len(), USER_SESSIONS);
            })
        });
    }
    g.finish();
    // What the index step costs a write: updates of an anonymous and of a signed-in
    // session (the latter adds the key to the user's set first).
    let mut g = c.benchmark_group("redis_update");
    for (name, record) in [("anonymous", anonymous()), ("signed_in", signed_in())] {
        let key = rt.block_on(store.create(&record)).expect("create");
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(store.update(black_box(&key), &record, None))
                    .expect("update")
            })
        });
    }
    g.finish();
    rt.block_on(unfill(&mut raw, &prefix, filled));
    rt.block_on(store.purge_prefix()).expect("purge");
}

fn list_10_of_n(c: &mut Criterion) {
    let rt = runtime();
    list_memory(c, &rt);
    list_redis(c, &rt);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = memory_anonymous, list_10_of_n
}
criterion_main!(benches);
