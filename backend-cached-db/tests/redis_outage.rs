//! Fault test: Redis (a private server) dies in the middle of a mixed load on
//! cached_db(Redis + SQLite) and comes back. No request may fail, no acknowledged write
//! may be lost, and once Redis is back the cache serves reads again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore};
use backend_cached_db::{CachedDbConfig, CachedDbStore};
use backend_db::{DbConfig, DbStore};
use integration_tests::servers::{PrivateRedis, free_port};
use serde_json::json;
use session_core::{
    CodecKind, Record, SessionData, SessionKey, SessionStore, StoreLayerExt, TimeoutLayer,
};

const WORKERS: usize = 8;
const KEYS_PER_WORKER: usize = 20;

fn record(n: u64) -> Record {
    let mut d = SessionData::new();
    d.insert("n".into(), json!(n));
    d.insert("pad".into(), json!("x".repeat(200)));
    Record::with_ttl(d, 600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dies_mid_load_without_failed_requests_or_lost_writes() {
    let port = free_port();
    let mut redis = PrivateRedis::start(port);
    let codec = CodecKind::Bincode.build(1 << 22);
    let cache_config = CacheConfig {
        command_timeout_ms: 250,
        connect_timeout_ms: 250,
        ..CacheConfig::new(redis.url()).with_key_prefix("outage:")
    };
    // Built directly, the cache wears the deadline the `cache` engine would give it.
    let cache = CacheStore::connect(&cache_config, codec.clone())
        .await
        .expect("redis")
        .with_layer(TimeoutLayer::new(cache_config.command_timeout()));
    let dir = tempfile::tempdir().expect("tmp");
    let db = DbStore::connect(&DbConfig::new(format!(
        "sqlite://{}",
        dir.path().join("s.db").display()
    )))
    .await
    .expect("sqlite");
    let db = Arc::new(db.with_codec(codec));
    let store = Arc::new(CachedDbStore::with_config(
        cache,
        db.clone(),
        CachedDbConfig {
            retry_interval_ms: 100,
            log_interval_secs: 1,
            ..CachedDbConfig::default()
        },
    ));

    // Every worker owns its keys, so the last acknowledged value of each is known.
    let mut keys = Vec::new();
    for _ in 0..WORKERS * KEYS_PER_WORKER {
        keys.push(store.create(&record(0)).await.expect("create"));
    }
    let acked: Arc<Mutex<HashMap<SessionKey, (u64, u64)>>> = Arc::new(Mutex::new(
        keys.iter().map(|k| (k.clone(), (0u64, 1u64))).collect(),
    ));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mine: Vec<SessionKey> = keys[w * KEYS_PER_WORKER..(w + 1) * KEYS_PER_WORKER].to_vec();
        let (store, acked, failures) = (store.clone(), acked.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut ops = 0u64;
            let mut i = 0usize;
            while Instant::now() < stop && ops < 200_000 {
                let k = &mine[i % mine.len()];
                i += 1;
                ops += 1;
                // Three reads for every write.
                if !ops.is_multiple_of(4) {
                    match store.load(k).await {
                        Ok(Some(r)) => {
                            let want = acked.lock().expect("lock")[k].0;
                            if r.data["n"] != json!(want) {
                                failures
                                    .lock()
                                    .expect("lock")
                                    .push(format!("stale read: {} instead of {want}", r.data["n"]));
                            }
                        }
                        Ok(None) => failures
                            .lock()
                            .expect("lock")
                            .push("session vanished".into()),
                        Err(e) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("load failed: {e}")),
                    }
                } else {
                    let (n, v) = acked.lock().expect("lock")[k];
                    match store.update(k, &record(n + 1), Some(v)).await {
                        Ok(nv) => {
                            acked.lock().expect("lock").insert(k.clone(), (n + 1, nv));
                        }
                        Err(e) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("update failed: {e}")),
                    }
                }
                tokio::task::yield_now().await;
            }
            ops
        }));
    }

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before_outage = store.stats();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = store.stats();
    let _redis = PrivateRedis::start(port);
    let restarted = Instant::now();
    let mut total_ops = 0;
    for t in tasks {
        total_ops += t.await.expect("worker");
    }
    let after = store.stats();

    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        during.cache_errors > before_outage.cache_errors,
        "the outage was noticed"
    );
    assert!(total_ops > 1000, "the load ran ({total_ops} ops)");

    // Every acknowledged write is readable, through the cache and from the durable store.
    let acked: Vec<_> = acked
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, nv)| (k.clone(), *nv))
        .collect();
    for (k, (n, v)) in &acked {
        let via_store = store.load(k).await.expect("load").expect("present");
        assert_eq!(via_store.data["n"], json!(n));
        let durable = db.load(k).await.expect("durable").expect("present");
        assert_eq!((durable.data["n"].clone(), durable.version), (json!(n), *v));
    }

    // The hit rate recovers: after the restart the cache answers most reads again.
    let hits_before = store.stats().hits;
    for _ in 0..2 {
        for k in &keys {
            store.load(k).await.expect("load");
        }
    }
    let s = store.stats();
    let reads = 2 * keys.len() as u64;
    let hits = s.hits - hits_before;
    assert!(
        hits * 10 >= reads * 4,
        "hit rate after recovery too low: {hits}/{reads} (stats {s:?}, restarted {:?} ago)",
        restarted.elapsed()
    );
    assert!(
        after.hits > during.hits,
        "the cache served reads after the restart"
    );
}
