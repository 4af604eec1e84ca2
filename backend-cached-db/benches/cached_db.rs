//! cached_db against its parts, in one run: cached loads vs the bare cache store's
//! loads, cached writes vs the bare durable store's writes, at concurrency 1 and 32,
//! for Redis + PostgreSQL and memory + SQLite.
//!
//! ```text
//! source target/test-servers.env
//! cargo bench -p backend-cached-db --bench cached_db
//! ```
//!
//! Each phase runs a bounded number of operations on ~1 KiB sessions (10 fields); the
//! bare and cached variants alternate over three repetitions and the median is reported
//! with the spread (min..max).

use std::sync::Arc;
use std::time::Instant;

use backend_cache::{CacheConfig, CacheStore, MemoryStore};
use backend_cached_db::CachedDbStore;
use backend_db::{DbConfig, DbStore};
use integration_tests::servers;
use serde_json::json;
use session_core::{CodecKind, Record, SessionData, SessionKey, SessionStore};

const REPS: usize = 3;
const KEYS: usize = 256;

fn ops(conc: usize) -> usize {
    if conc == 1 { 2_000 } else { 8_000 }
}

fn record(n: u64) -> Record {
    let mut d = SessionData::new();
    for i in 0..9 {
        d.insert(format!("field_{i}"), json!("x".repeat(100)));
    }
    d.insert("n".into(), json!(n));
    Record::with_ttl(d, 3600)
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Load,
    Write,
}

/// Runs `total` operations over `conc` workers; returns ops/s.
async fn phase(
    store: Arc<dyn SessionStore>,
    keys: Arc<Vec<SessionKey>>,
    op: Op,
    conc: usize,
    total: usize,
) -> f64 {
    let started = Instant::now();
    let per = total / conc;
    let mut tasks = Vec::new();
    for w in 0..conc {
        let (store, keys) = (store.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                // Workers own disjoint keys for writes, so no CAS conflicts muddy the figure.
                let k = &keys[(w + i * conc) % keys.len()];
                match op {
                    Op::Load => {
                        store.load(k).await.expect("load").expect("present");
                    }
                    Op::Write => {
                        store
                            .update(k, &record(i as u64), None)
                            .await
                            .expect("update");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    (per * conc) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn compare(
    label: &str,
    bare: Arc<dyn SessionStore>,
    cached: Arc<dyn SessionStore>,
    keys: Arc<Vec<SessionKey>>,
    op: Op,
) {
    for conc in [1usize, 32] {
        let (mut b, mut c) = (Vec::new(), Vec::new());
        for _ in 0..REPS {
            b.push(phase(bare.clone(), keys.clone(), op, conc, ops(conc)).await);
            c.push(phase(cached.clone(), keys.clone(), op, conc, ops(conc)).await);
        }
        let (bm, blo, bhi) = median(b);
        let (cm, clo, chi) = median(c);
        println!(
            "| {label} | {} | {conc} | {bm:.0} ({blo:.0}..{bhi:.0}) | {cm:.0} ({clo:.0}..{chi:.0}) | {:.2}x |",
            if op == Op::Load { "load" } else { "write" },
            cm / bm
        );
    }
}

async fn run(label: &str, cache: Arc<dyn SessionStore>, db: Arc<dyn SessionStore>) {
    let cached: Arc<dyn SessionStore> = Arc::new(CachedDbStore::new(cache.clone(), db.clone()));
    let mut keys = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        keys.push(cached.create(&record(i as u64)).await.expect("create"));
    }
    let keys = Arc::new(keys);
    // Warm the cache so cached loads are hits, as in steady state.
    for k in keys.iter() {
        cached.load(k).await.expect("warm");
    }
    compare(
        &format!("{label}: cached vs bare cache"),
        cache,
        cached.clone(),
        keys.clone(),
        Op::Load,
    )
    .await;
    compare(
        &format!("{label}: cached vs bare durable"),
        db,
        cached.clone(),
        keys.clone(),
        Op::Write,
    )
    .await;
    for k in keys.iter() {
        let _ = cached.delete(k).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
        let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
        let codec = CodecKind::Bincode.build(1 << 22);
        println!("| combination | op | concurrency | bare ops/s (min..max) | cached ops/s (min..max) | ratio |");
        println!("|---|---|---|---|---|---|");
        if want("memory+sqlite") {
            let dir = tempfile::tempdir().expect("tmp");
            let db = DbStore::connect(&DbConfig::new(format!(
                "sqlite://{}",
                dir.path().join("bench.db").display()
            )))
            .await
            .expect("sqlite")
            .with_codec(codec.clone());
            run("memory+sqlite", Arc::new(MemoryStore::new()), Arc::new(db)).await;
        }
        if want("redis+postgres") {
            let table = format!("bench_cdb_{}", servers::unique_suffix());
            let db = DbStore::connect(&DbConfig {
                max_connections: 32,
                ..DbConfig::new(servers::postgres_url()).with_table(&table)
            })
            .await
            .expect("postgres")
            .with_codec(codec.clone());
            let cache = CacheStore::connect(
                &CacheConfig::new(servers::redis_url())
                    .with_key_prefix(format!("bench-cdb-{}:", servers::unique_suffix())),
                codec.clone(),
            )
            .await
            .expect("redis");
            let db = Arc::new(db);
            run("redis+postgres", Arc::new(cache), db.clone()).await;
            db.drop_table().await.expect("drop");
        }
    });
}
