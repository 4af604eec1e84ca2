//! The consistency rule and outage behaviour, with a cache that fails on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backend_cache::{CacheConfig, CacheStore, MemoryStore};
use backend_cached_db::{CachedDbConfig, CachedDbStore};
use backend_db::{DbConfig, DbStore};
use backend_file::FileStore;
use integration_tests::servers;
use serde_json::json;
use session_core::{
    BincodeCodec, Capabilities, Codec, CodecKind, Error, Inserted, LazyRecord, Record, Result,
    SessionData, SessionKey, SessionStore, Timestamp, async_trait,
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
    async fn load_lazy(&self, key: &SessionKey) -> Result<Option<LazyRecord>> {
        self.check_read()?;
        self.inner.load_lazy(key).await
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

/// A record of `keys` keys, `k00` = `n`, `k01` = `n + 1`, ...
fn wide(n: i64, keys: i64) -> Record {
    let mut d = SessionData::new();
    for i in 0..keys {
        d.insert(
            format!("k{i:02}"),
            json!({"n": n + i, "s": format!("v{i}")}),
        );
    }
    Record::with_ttl(d, 3600)
}

/// Checks that `lazy` holds exactly `whole`: its header, every key, absent keys and the
/// full decode (the conformance suite's check).
fn assert_reads(lazy: &LazyRecord, whole: &Record) {
    if let Err(e) =
        integration_tests::lazy::lazy_reads_as(lazy, whole, &["", "k", "k5", "k99", "zz"])
    {
        panic!("{e}");
    }
}

/// A lazy load of `k` finds nothing, and fills nothing into the cache.
async fn absent_and_not_filled(store: &CachedDbStore, cache: &MemoryStore, k: &SessionKey) {
    assert!(store.load_lazy(k).await.expect("load_lazy").is_none());
    assert!(!cache.exists(k).await.expect("cache"), "nothing filled");
}

#[tokio::test]
async fn lazy_loads_are_lazy_on_a_cache_hit_and_refill_the_cache_after_a_miss() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(MemoryStore::new());
    let db = Arc::new(
        FileStore::builder()
            .dir(tmp.path())
            .fsync(false)
            .build()
            .expect("file store"),
    );
    let store = CachedDbStore::new(cache.clone(), db.clone());

    // A hit: the create filled the cache.
    let k = store.create(&wide(1, 40)).await.expect("create");
    let whole = db.load(&k).await.expect("db").expect("live");
    let before = store.stats();
    let lazy = store.load_lazy(&k).await.expect("load_lazy").expect("live");
    assert_eq!(store.stats().hits, before.hits + 1, "answered by the cache");
    assert_eq!(store.stats().misses, before.misses);
    assert!(!lazy.data.is_decoded(), "a cache hit decoded the data");
    assert_reads(&lazy, &whole);

    // A miss: the record is only in the durable store.
    let only_db = db.create(&wide(100, 40)).await.expect("durable create");
    let whole = db.load(&only_db).await.expect("db").expect("live");
    assert!(!cache.exists(&only_db).await.expect("cache"));
    let before = store.stats();
    let lazy = store
        .load_lazy(&only_db)
        .await
        .expect("load_lazy")
        .expect("live");
    assert_eq!(
        store.stats().misses,
        before.misses + 1,
        "read from the durable store"
    );
    assert_reads(&lazy, &whole);
    let refilled = cache
        .load(&only_db)
        .await
        .expect("cache")
        .expect("refilled");
    assert_eq!(refilled, whole, "the miss refilled the cache");
    // And the next load is a lazy hit.
    let lazy = store
        .load_lazy(&only_db)
        .await
        .expect("load_lazy")
        .expect("live");
    assert_eq!(store.stats().hits, before.hits + 1);
    assert!(!lazy.data.is_decoded());
    assert_reads(&lazy, &whole);

    // Missing and expired records are `None`, wherever they are.
    let missing = SessionKey::generate().expect("key");
    absent_and_not_filled(&store, &cache, &missing).await;
    let expired = SessionKey::generate().expect("key");
    let mut old = wide(7, 3);
    old.expires_at = Timestamp::now().add_secs(-5);
    db.insert_new(&expired, &old).await.expect("durable insert");
    cache
        .insert_new(&expired, &old)
        .await
        .expect("cache insert");
    absent_and_not_filled(&store, &cache, &expired).await;
    store.delete(&k).await.expect("delete");
    assert!(store.load_lazy(&k).await.expect("load_lazy").is_none());
}

#[tokio::test]
async fn a_failed_cache_write_never_lets_a_later_lazy_read_return_old_data() {
    let (cache, _db, store) = setup(0);
    let k = store.create(&rec(1)).await.expect("create");
    let got = store.load_lazy(&k).await.expect("load").expect("rec");
    assert_eq!(got.data.get("n").expect("read"), Some(json!(1)));
    cache.writes_fail.store(true, Ordering::SeqCst);
    store.update(&k, &rec(2), Some(1)).await.expect("update");
    for _ in 0..3 {
        let got = store.load_lazy(&k).await.expect("load").expect("rec");
        assert_eq!(
            got.data.get("n").expect("read"),
            Some(json!(2)),
            "stale lazy read after a failed cache write"
        );
        assert_eq!(got.version, 2);
    }
    // The cache recovers: the stale entry is dropped and refilled, then served lazily.
    cache.writes_fail.store(false, Ordering::SeqCst);
    store.load_lazy(&k).await.expect("load").expect("rec");
    assert_eq!(store.stats().suspects, 0);
    let hits = store.stats().hits;
    let got = store.load_lazy(&k).await.expect("load").expect("rec");
    assert_eq!(store.stats().hits, hits + 1, "served from the cache again");
    assert!(!got.data.is_decoded());
    assert_eq!(got.data.get("n").expect("read"), Some(json!(2)));

    // A cache that fails to answer: the durable store answers, and the breaker opens.
    cache.reads_fail.store(true, Ordering::SeqCst);
    let errors = store.stats().cache_errors;
    let got = store.load_lazy(&k).await.expect("degraded").expect("rec");
    assert_eq!(got.data.get("n").expect("read"), Some(json!(2)));
    assert_eq!(store.stats().cache_errors, errors + 1);
}

/// A file store as the cache tier, whose raw access plants damaged entries.
fn file_cache(dir: &std::path::Path) -> Arc<FileStore> {
    Arc::new(
        FileStore::builder()
            .dir(dir)
            .fsync(false)
            .build()
            .expect("file store"),
    )
}

/// The compact bytes of a two-key record whose second value (`b`) is damaged.
fn damaged_value(record: &Record) -> Vec<u8> {
    let mut bytes = BincodeCodec::default().encode(record).expect("encode");
    let last = bytes.len() - 1;
    bytes[last] = 0xFF; // the last byte of `b`'s string becomes invalid UTF-8
    bytes
}

/// The two-key record the damaged-entry tests store (`a` = "ok", `b` = "xyz").
fn two_keys() -> Record {
    let mut two = SessionData::new();
    two.insert("a".into(), json!("ok"));
    two.insert("b".into(), json!("xyz"));
    Record::with_ttl(two, 3600)
}

/// Plants `r` damaged inside its data ([`damaged_value`]) as `k`'s entry in `cache`,
/// then loads `k` lazily through `store`: the load must read the durable store (one more
/// miss) and drop the entry. Returns what it served.
async fn lazy_load_over_a_damaged_entry(
    store: &CachedDbStore,
    cache: &FileStore,
    k: &SessionKey,
    r: &Record,
) -> LazyRecord {
    let raw = cache.raw().expect("raw");
    raw.put_raw(k, &damaged_value(r), Timestamp::now().add_secs(3600))
        .await
        .expect("plant");
    let misses = store.stats().misses;
    let got = store.load_lazy(k).await.expect("load_lazy").expect("live");
    assert_eq!(
        store.stats().misses,
        misses + 1,
        "read from the durable store"
    );
    assert!(
        raw.get_raw(k).await.expect("raw").is_none(),
        "the damaged entry was kept"
    );
    got
}

#[tokio::test]
async fn a_cache_entry_that_cannot_be_decoded_is_dropped_by_a_lazy_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = file_cache(tmp.path());
    let db = Arc::new(MemoryStore::new());
    let store = CachedDbStore::new(cache.clone(), db.clone());
    let r = two_keys();
    let live = Timestamp::now().add_secs(3600);
    let raw = cache.raw().expect("raw");

    // A header that cannot be decoded: dropped, and the durable record served.
    let k = store.create(&r).await.expect("create");
    raw.put_raw(&k, b"\xB1SR\x01garbage", live)
        .await
        .expect("plant");
    let got = store.load_lazy(&k).await.expect("load_lazy").expect("live");
    assert_eq!(got.data.get("b").expect("read"), Some(json!("xyz")));
    assert!(
        raw.get_raw(&k).await.expect("raw").is_none(),
        "the undecodable entry was kept"
    );

    // A value damaged inside the data (no first level): the check of the hit finds
    // it, the entry is dropped, and the durable record is served, every value sound.
    let k = store.create(&r).await.expect("create");
    let got = lazy_load_over_a_damaged_entry(&store, &cache, &k, &r).await;
    assert_eq!(got.data.get("a").expect("sound"), Some(json!("ok")));
    assert_eq!(got.data.get("b").expect("sound"), Some(json!("xyz")));
}

#[tokio::test]
async fn lazy_loads_with_a_first_level_fill_it_and_are_lazy_on_its_hits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = file_cache(tmp.path());
    let db = Arc::new(MemoryStore::new());
    let l1 = Arc::new(MemoryStore::new());
    let store = CachedDbStore::new(cache.clone(), db.clone())
        .with_l1(l1.clone(), std::time::Duration::from_secs(60));
    let r = wide(1, 40);
    let k = store.create(&r).await.expect("create");
    let whole = db.load(&k).await.expect("db").expect("live");

    // A cache hit fills the first level (with the whole record it decodes).
    assert!(!l1.exists(&k).await.expect("l1"));
    let got = store.load_lazy(&k).await.expect("load_lazy").expect("live");
    assert_reads(&got, &whole);
    assert!(
        l1.exists(&k).await.expect("l1"),
        "the first level was not filled"
    );
    // Its hits are lazy.
    let hits = store.stats().hits;
    let got = store.load_lazy(&k).await.expect("load_lazy").expect("live");
    assert_eq!(store.stats().hits, hits + 1);
    assert!(!got.data.is_decoded(), "a first-level hit decoded the data");
    assert_eq!(
        got.data.get("k05").expect("read"),
        whole.data.get("k05").cloned()
    );

    // A cache entry damaged inside its data fails the decode that fills the first
    // level: dropped as `load` drops it, and the durable record served.
    let r = two_keys();
    let k = store.create(&r).await.expect("create");
    let got = lazy_load_over_a_damaged_entry(&store, &cache, &k, &r).await;
    assert_eq!(got.data.get("b").expect("read"), Some(json!("xyz")));
}

/// A durable store that can hold a `load` after it read (the reader's durable read
/// lands before a write, its next step after it), or before it reads (the read lands
/// after a write, the steps before it before the write), until the test releases it.
#[derive(Debug)]
struct GatedDb {
    inner: Arc<dyn SessionStore>,
    gates: std::sync::Mutex<std::collections::VecDeque<Gate>>,
}

#[derive(Debug)]
struct Gate {
    reached: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
    /// Held before the read rather than after it.
    before_read: bool,
}

/// The test's side of a [`Gate`]: told when a load reached it, and releases it.
struct GateHandle {
    reached: tokio::sync::oneshot::Receiver<()>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl GatedDb {
    fn new(inner: Arc<dyn SessionStore>) -> Self {
        GatedDb {
            inner,
            gates: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Holds the next load that has no gate yet, after it read.
    fn gate(&self) -> GateHandle {
        self.push_gate(false)
    }

    /// Holds the next load that has no gate yet, before it reads.
    fn gate_before_read(&self) -> GateHandle {
        self.push_gate(true)
    }

    fn push_gate(&self, before_read: bool) -> GateHandle {
        let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        self.gates.lock().expect("gates").push_back(Gate {
            reached: reached_tx,
            release: release_rx,
            before_read,
        });
        GateHandle {
            reached: reached_rx,
            release: release_tx,
        }
    }
}

#[async_trait]
impl SessionStore for GatedDb {
    fn engine(&self) -> &str {
        "gated"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let gate = self.gates.lock().expect("gates").pop_front();
        let Some(g) = gate else {
            return self.inner.load(key).await;
        };
        if g.before_read {
            let _ = g.reached.send(());
            let _ = g.release.await;
            return self.inner.load(key).await;
        }
        let read = self.inner.load(key).await;
        let _ = g.reached.send(());
        let _ = g.release.await;
        read
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.inner.update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.inner.touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.inner.exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.inner.clear_expired().await
    }
}

/// Two processes on one cache and one durable store, and a session (version 1) that
/// only the durable store holds: `reader`'s durable loads can be held, `other` reads
/// freely.
struct TwoProcesses {
    gated: Arc<GatedDb>,
    cache: Arc<MemoryStore>,
    reader: Arc<CachedDbStore>,
    other: CachedDbStore,
    key: SessionKey,
}

async fn two_processes() -> TwoProcesses {
    let cache = Arc::new(MemoryStore::new());
    let durable = Arc::new(MemoryStore::new());
    let gated = Arc::new(GatedDb::new(durable.clone()));
    let reader = Arc::new(CachedDbStore::new(cache.clone(), gated.clone()));
    let other = CachedDbStore::new(cache.clone(), durable.clone());
    let key = other.create(&rec(1)).await.expect("create");
    cache.delete(&key).await.expect("evict");
    TwoProcesses {
        gated,
        cache,
        reader,
        other,
        key,
    }
}

/// Runs a reader's load of `k` whose durable read lands before `write` and whose fill
/// comes after it; `check` runs while the reader is held after its fill (at its own
/// re-read), or after the reader finished when its fill was refused. Returns what the
/// reader's load answered.
async fn fill_racing<W, C>(
    gated: &GatedDb,
    reader: Arc<CachedDbStore>,
    k: &SessionKey,
    write: W,
    check: C,
) -> Option<Record>
where
    W: std::future::Future<Output = ()>,
    C: std::future::Future<Output = ()>,
{
    let first = gated.gate();
    let second = gated.gate();
    let key = k.clone();
    let mut load = tokio::spawn(async move { reader.load(&key).await });
    first.reached.await.expect("the reader's durable read");
    write.await;
    first.release.send(()).expect("release the reader");
    let mut reached = second.reached;
    let finished = tokio::select! {
        _ = &mut reached => None,
        done = &mut load => Some(done),
    };
    check.await;
    let _ = second.release.send(());
    match finished {
        Some(done) => done,
        None => load.await,
    }
    .expect("reader task")
    .expect("reader load")
}

#[tokio::test]
async fn a_fill_racing_a_delete_is_never_served() {
    let TwoProcesses {
        gated,
        cache: _,
        reader,
        other,
        key: k,
    } = two_processes().await;
    fill_racing(
        &gated,
        reader.clone(),
        &k,
        async {
            assert!(other.delete(&k).await.expect("logout"));
        },
        async {
            assert!(
                other.load(&k).await.expect("load").is_none(),
                "a logged-out session read back from a fill that raced the logout"
            );
            assert!(!other.exists(&k).await.expect("exists"));
        },
    )
    .await;
    assert!(other.load(&k).await.expect("load").is_none());
    assert!(reader.load(&k).await.expect("load").is_none());
}

#[tokio::test]
async fn a_fill_racing_an_update_is_never_served_and_the_new_version_is_cached() {
    let TwoProcesses {
        gated,
        cache,
        reader,
        other,
        key: k,
    } = two_processes().await;
    fill_racing(
        &gated,
        reader.clone(),
        &k,
        async {
            other.update(&k, &rec(2), Some(1)).await.expect("update");
        },
        async {
            let got = other.load(&k).await.expect("load").expect("live");
            assert_eq!(got.data["n"], json!(2), "an older version read back");
            assert_eq!(got.version, 2);
        },
    )
    .await;
    // The miss after the fence filled the cache with the new version, over the fence.
    let cached = cache.load(&k).await.expect("cache").expect("filled");
    assert_eq!((cached.data["n"].clone(), cached.version), (json!(2), 2));
    let before = other.stats().hits;
    assert_eq!(
        other.load(&k).await.expect("load").expect("live").version,
        2
    );
    assert_eq!(
        other.stats().hits,
        before + 1,
        "the next load is a cache hit"
    );
}

/// A fill found stale by its own re-read is taken back without dropping the fence a
/// writer put in its place meanwhile: a reader slower than it (its durable read older
/// than the write) is still refused, and the process that knew its read was old does
/// not keep it in its first level. Over `cache` and `durable`, empty of the session.
async fn a_fill_found_stale_leaves_the_writers_fence(
    cache: Arc<dyn SessionStore>,
    durable: Arc<dyn SessionStore>,
) {
    let fast_db = Arc::new(GatedDb::new(durable.clone()));
    let slow_db = Arc::new(GatedDb::new(durable.clone()));
    let l1 = Arc::new(MemoryStore::new());
    let fast = Arc::new(
        CachedDbStore::new(cache.clone(), fast_db.clone())
            .with_l1(l1.clone(), std::time::Duration::from_secs(60)),
    );
    let slow = Arc::new(CachedDbStore::new(cache.clone(), slow_db.clone()));
    let writer = CachedDbStore::new(cache.clone(), durable.clone());
    let k = writer.create(&rec(1)).await.expect("create");
    cache.delete(&k).await.expect("evict");

    // The slow reader's durable read (version 1) lands before all of this, its fill
    // after it. Meanwhile the fast reader reads version 1 and fills it, another process
    // writes version 2 and fences the entry, and the fast reader's re-read finds
    // version 2 and takes its fill back. Had the fast reader deleted the entry, the slow
    // reader's fill would be in the cache while the slow reader re-reads.
    let race = async {
        let fast_read = fast_db.gate();
        let fast_check = fast_db.gate_before_read();
        let key = k.clone();
        let fast_reader = fast.clone();
        let fast_load = tokio::spawn(async move { fast_reader.load(&key).await });
        fast_read
            .reached
            .await
            .expect("the fast reader's durable read");
        fast_read.release.send(()).expect("release");
        fast_check.reached.await.expect("the fast reader's re-read");
        let filled = cache.load(&k).await.expect("cache").expect("the fast fill");
        assert_eq!(filled.version, 1);
        writer.update(&k, &rec(2), Some(1)).await.expect("update");
        fast_check.release.send(()).expect("release");
        let answered = fast_load.await.expect("task").expect("load").expect("live");
        assert_eq!(answered.version, 1, "its read came before the write");
    };
    let check = async {
        let got = writer.load(&k).await.expect("load").expect("live");
        assert_eq!(
            (got.data["n"].clone(), got.version),
            (json!(2), 2),
            "an older version read back from a fill the writer's fence should have refused"
        );
    };
    let slow_answer = fill_racing(&slow_db, slow.clone(), &k, race, check)
        .await
        .expect("live");
    assert_eq!(slow_answer.version, 1, "its read came before the write");

    // The fast reader's process kept nothing it knew was old.
    assert!(
        !l1.exists(&k).await.expect("l1"),
        "first level holds the old version"
    );
    assert_eq!(fast.load(&k).await.expect("load").expect("live").version, 2);
    assert_eq!(slow.load(&k).await.expect("load").expect("live").version, 2);
    writer.delete(&k).await.expect("clean up");
}

#[tokio::test]
async fn a_fill_found_stale_leaves_the_writers_fence_in_process() {
    a_fill_found_stale_leaves_the_writers_fence(
        Arc::new(MemoryStore::new()),
        Arc::new(MemoryStore::new()),
    )
    .await;
}

/// The same over the shared Redis and PostgreSQL servers (a table of its own, dropped
/// after).
#[tokio::test]
async fn a_fill_found_stale_leaves_the_writers_fence_on_redis_and_postgres() {
    let suffix = servers::unique_suffix();
    let redis_url = servers::redis_url();
    let cache_config =
        CacheConfig::new(redis_url.clone()).with_key_prefix(format!("fence-{suffix}:"));
    let cache = CacheStore::connect(&cache_config, CodecKind::Bincode.build(1 << 22))
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", &redis_url, e));
    let pg_url = servers::postgres_url();
    let table = format!("fence_{}", suffix.to_ascii_lowercase().replace('-', "_"));
    let db = DbStore::connect(&DbConfig::new(pg_url.clone()).with_table(table))
        .await
        .unwrap_or_else(|e| servers::unreachable("PostgreSQL", &pg_url, e));
    let db = Arc::new(db);
    a_fill_found_stale_leaves_the_writers_fence(Arc::new(cache), db.clone()).await;
    db.drop_table().await.expect("drop the table");
}
