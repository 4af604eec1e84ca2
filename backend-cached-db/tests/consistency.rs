//! The consistency rule and outage behaviour, with a cache that fails on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backend_cache::MemoryStore;
use backend_cached_db::{CachedDbConfig, CachedDbStore};
use serde_json::json;
use session_core::{
    Capabilities, Error, Inserted, Record, Result, SessionData, SessionKey, SessionStore,
    Timestamp, async_trait,
};

/// A memory cache whose writes (and optionally reads) fail while `down` is set.
#[derive(Debug, Default)]
struct FlakyCache {
    inner: MemoryStore,
    writes_fail: AtomicBool,
    reads_fail: AtomicBool,
}

fn outage() -> Error {
    Error::backend("flaky", std::io::Error::other("cache is down"))
}

impl FlakyCache {
    fn check_write(&self) -> Result<()> {
        if self.writes_fail.load(Ordering::SeqCst) {
            Err(outage())
        } else {
            Ok(())
        }
    }
    fn check_read(&self) -> Result<()> {
        if self.reads_fail.load(Ordering::SeqCst) {
            Err(outage())
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for FlakyCache {
    fn engine(&self) -> &str {
        "flaky"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.check_write()?;
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.check_read()?;
        self.inner.load(key).await
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.check_write()?;
        self.inner.update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.check_write()?;
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.check_write()?;
        self.inner.touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.check_read()?;
        self.inner.exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.inner.clear_expired().await
    }
}

fn rec(n: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("n".into(), json!(n));
    Record::with_ttl(d, 3600)
}

fn setup(retry_ms: u64) -> (Arc<FlakyCache>, Arc<MemoryStore>, CachedDbStore) {
    let cache = Arc::new(FlakyCache::default());
    let db = Arc::new(MemoryStore::new());
    let store = CachedDbStore::with_config(
        cache.clone(),
        db.clone(),
        CachedDbConfig {
            retry_interval_ms: retry_ms,
            ..CachedDbConfig::default()
        },
    );
    (cache, db, store)
}

#[tokio::test]
async fn a_failed_cache_write_never_lets_a_later_read_return_old_data() {
    let (cache, _db, store) = setup(0);
    let k = store.create(&rec(1)).await.expect("create");
    // Warm: the cache holds version 1.
    assert_eq!(
        store.load(&k).await.expect("load").expect("rec").data["n"],
        json!(1)
    );
    assert!(cache.inner.exists(&k).await.expect("cached"));
    // The cache stops accepting writes but still serves its (now stale) entry.
    cache.writes_fail.store(true, Ordering::SeqCst);
    let v = store
        .update(&k, &rec(2), Some(1))
        .await
        .expect("durable write succeeds");
    assert_eq!(v, 2);
    for _ in 0..3 {
        let got = store.load(&k).await.expect("load").expect("rec");
        assert_eq!(
            got.data["n"],
            json!(2),
            "stale read after a failed cache write"
        );
        assert_eq!(got.version, 2);
    }
    // The cache recovers: the stale entry is dropped, then the cache is used again.
    cache.writes_fail.store(false, Ordering::SeqCst);
    let got = store.load(&k).await.expect("load").expect("rec");
    assert_eq!(got.data["n"], json!(2));
    assert_eq!(store.stats().suspects, 0);
    let hits_before = store.stats().hits;
    let got = store.load(&k).await.expect("load").expect("rec");
    assert_eq!(got.data["n"], json!(2));
    assert_eq!(
        store.stats().hits,
        hits_before + 1,
        "served from the cache again"
    );
}

#[tokio::test]
async fn a_failed_invalidation_after_delete_does_not_resurrect() {
    let (cache, _db, store) = setup(0);
    let k = store.create(&rec(1)).await.expect("create");
    store.load(&k).await.expect("warm");
    cache.writes_fail.store(true, Ordering::SeqCst);
    assert!(store.delete(&k).await.expect("delete"));
    assert!(
        store.load(&k).await.expect("load").is_none(),
        "deleted session served from a stale cache"
    );
    assert!(!store.exists(&k).await.expect("exists"));
    assert!(matches!(
        store.update(&k, &rec(3), None).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn a_full_cache_outage_degrades_to_the_durable_store() {
    let (cache, db, store) = setup(60_000);
    cache.writes_fail.store(true, Ordering::SeqCst);
    cache.reads_fail.store(true, Ordering::SeqCst);
    let k = store
        .create(&rec(1))
        .await
        .expect("create works without the cache");
    assert!(db.exists(&k).await.expect("durable"));
    assert_eq!(store.update(&k, &rec(2), Some(1)).await.expect("update"), 2);
    assert_eq!(
        store.load(&k).await.expect("load").expect("rec").data["n"],
        json!(2)
    );
    let errors = store.stats().cache_errors;
    // The breaker skips the cache now: no further cache errors per request.
    for _ in 0..10 {
        store.load(&k).await.expect("load");
    }
    assert_eq!(store.stats().cache_errors, errors);
}

#[tokio::test]
async fn the_cache_is_used_again_after_an_outage_without_a_restart() {
    let (cache, _db, store) = setup(1);
    let k = store.create(&rec(1)).await.expect("create");
    cache.reads_fail.store(true, Ordering::SeqCst);
    cache.writes_fail.store(true, Ordering::SeqCst);
    store.load(&k).await.expect("degraded load");
    cache.reads_fail.store(false, Ordering::SeqCst);
    cache.writes_fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.load(&k).await.expect("miss fills");
    let before = store.stats().hits;
    store.load(&k).await.expect("hit");
    assert_eq!(store.stats().hits, before + 1);
}

#[tokio::test]
async fn durable_errors_propagate_and_versions_are_the_durable_ones() {
    let (_cache, db, store) = setup(0);
    let k = store.create(&rec(1)).await.expect("create");
    store.update(&k, &rec(2), Some(1)).await.expect("update");
    assert!(matches!(
        store.update(&k, &rec(3), Some(1)).await,
        Err(Error::Conflict {
            expected: 1,
            found: 2
        })
    ));
    assert_eq!(db.load(&k).await.expect("db").expect("rec").version, 2);
    assert_eq!(store.load(&k).await.expect("load").expect("rec").version, 2);
}

#[tokio::test]
async fn a_fill_racing_a_write_is_dropped() {
    // Simulate the race by writing to the durable store behind the cached store's back
    // between its durable read and its fill: afterwards no stale entry may remain.
    let (cache, db, store) = setup(0);
    let k = store.create(&rec(1)).await.expect("create");
    cache.inner.delete(&k).await.expect("evict");
    db.update(&k, &rec(2), None)
        .await
        .expect("writer behind the back");
    let got = store.load(&k).await.expect("load").expect("rec");
    assert_eq!(got.data["n"], json!(2));
    let cached = cache.inner.load(&k).await.expect("cache");
    assert!(cached.is_none_or(|c| c.version == 2));
}

#[tokio::test]
async fn first_level_serves_repeated_loads_and_is_invalidated_by_local_writes() {
    let cache = Arc::new(MemoryStore::new());
    let db = Arc::new(MemoryStore::new());
    let l1 = Arc::new(MemoryStore::new());
    let store =
        CachedDbStore::new(cache, db).with_l1(l1.clone(), std::time::Duration::from_secs(1));
    let k = store.create(&rec(1)).await.expect("create");
    store.load(&k).await.expect("fill");
    assert!(l1.exists(&k).await.expect("l1 filled"));
    store.update(&k, &rec(2), None).await.expect("update");
    assert!(!l1.exists(&k).await.expect("l1 invalidated"));
    assert_eq!(
        store.load(&k).await.expect("load").expect("rec").data["n"],
        json!(2)
    );
}
