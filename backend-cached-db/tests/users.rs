//! Every session of a user through `cached_db`, on real Redis in front of a durable
//! store: listings are the durable store's, and a session ended through the index is
//! gone from the cache too (a later load through `cached_db`, from this instance or
//! another one sharing Redis, returns `None`), even when the cache cannot take the
//! invalidation at once (the suspect set). A request of the ended session still in
//! flight gets `NotFound` when it saves.
//!
//! Each scenario runs on each durable store: the file store and SQLite.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use backend_cache::{CacheConfig, CacheStore, MemoryStore};
use backend_cached_db::{CachedDbConfig, CachedDbStore};
use backend_db::{DbConfig, DbStore};
use backend_file::FileStore;
use integration_tests::servers;
use serde_json::json;
use session_core::users::session_id;
use session_core::{
    Capabilities, CodecKind, Error, Inserted, Record, Result, Session, SessionData, SessionKey,
    SessionMeta, SessionSettings, SessionStore, Timestamp, UserIndex, async_trait,
};
use tokio::sync::oneshot;

fn signed_in(principal: &str, n: i64) -> Record {
    let mut data = SessionData::new();
    data.insert("n".into(), json!(n));
    let mut r = Record::with_ttl(data, 3600);
    r.meta = SessionMeta {
        principal: Some(principal.to_owned()),
        ..SessionMeta::default()
    };
    r
}

async fn redis(prefix: &str) -> Arc<dyn SessionStore> {
    let url = servers::redis_url();
    let config = CacheConfig::new(url.clone()).with_key_prefix(prefix);
    Arc::new(
        CacheStore::connect(&config, CodecKind::Bincode.build(1 << 20))
            .await
            .unwrap_or_else(|e| servers::unreachable("Redis", &url, e)),
    )
}

/// A durable store under test, kept alive with whatever it needs (a temp dir).
struct Durable {
    name: &'static str,
    store: Arc<dyn SessionStore>,
    _dir: tempfile::TempDir,
}

type DurableFuture = Pin<Box<dyn Future<Output = Durable>>>;

fn file_store() -> DurableFuture {
    Box::pin(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::builder()
            .dir(dir.path().join("sessions"))
            .fsync(false)
            .build()
            .expect("file store");
        Durable {
            name: "file",
            store: Arc::new(store),
            _dir: dir,
        }
    })
}

fn sqlite_store() -> DurableFuture {
    Box::pin(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = DbStore::connect(&DbConfig::new(url))
            .await
            .expect("sqlite")
            .with_codec(CodecKind::Bincode.build(1 << 20));
        Durable {
            name: "sqlite",
            store: Arc::new(store),
            _dir: dir,
        }
    })
}

/// The durable stores every scenario runs on.
fn durables() -> Vec<fn() -> DurableFuture> {
    vec![file_store, sqlite_store]
}

/// Two app instances (two `cached_db` stores) sharing one Redis namespace and one
/// durable store, and Redis seen directly.
struct Setup {
    a: Arc<CachedDbStore>,
    b: Arc<CachedDbStore>,
    redis: Arc<dyn SessionStore>,
    durable: Durable,
}

async fn setup(make: fn() -> DurableFuture) -> Setup {
    let durable = make().await;
    let prefix = format!("users:{}:{}:", durable.name, servers::unique_suffix());
    let a = Arc::new(CachedDbStore::new(
        redis(&prefix).await,
        durable.store.clone(),
    ));
    let b = Arc::new(CachedDbStore::new(
        redis(&prefix).await,
        durable.store.clone(),
    ));
    Setup {
        a,
        b,
        redis: redis(&prefix).await,
        durable,
    }
}

fn index(store: &CachedDbStore) -> &dyn UserIndex {
    store
        .user_index()
        .expect("cached_db forwards the durable store's index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_through_the_index_is_gone_from_the_cache() {
    for make in durables() {
        let s = setup(make).await;
        let name = s.durable.name;
        let k1 = s.a.create(&signed_in("alice", 1)).await.expect("create");
        let k2 = s.a.create(&signed_in("alice", 2)).await.expect("create");
        let k3 = s.a.create(&signed_in("alice", 3)).await.expect("create");
        let bob = s.a.create(&signed_in("bob", 1)).await.expect("create");
        // Cached by loads in both instances.
        for k in [&k1, &k2, &k3, &bob] {
            assert!(s.a.load(k).await.expect("load").is_some());
            assert!(s.b.load(k).await.expect("load").is_some());
            assert!(
                s.redis.load(k).await.expect("redis").is_some(),
                "{name}: cached"
            );
        }
        let hits = s.a.stats().hits;
        assert!(s.a.load(&k1).await.expect("load").is_some());
        assert_eq!(s.a.stats().hits, hits + 1, "{name}: served by the cache");

        // Listing: the durable store's, with the asking session marked.
        let listed = index(&s.a)
            .sessions_of("alice", Some(&k2))
            .await
            .expect("list");
        let mut keys: Vec<_> = listed.iter().map(|e| e.stored_key.clone()).collect();
        keys.sort();
        let mut want = vec![k1.clone(), k2.clone(), k3.clone()];
        want.sort();
        assert_eq!(keys, want, "{name}");
        assert!(listed.iter().any(|e| e.current && e.stored_key == k2));
        assert_eq!(index(&s.b).count_of("alice").await.expect("count"), 3);

        // End one by id from instance B, then all but k2 from instance A.
        assert!(
            index(&s.b)
                .end_session("alice", &session_id(&k1))
                .await
                .expect("end one")
        );
        assert!(
            !index(&s.b)
                .end_session("alice", &session_id(&bob))
                .await
                .expect("not alice's"),
            "{name}: bob's session is not alice's to end"
        );
        assert_eq!(
            index(&s.a)
                .end_sessions("alice", Some(&k2))
                .await
                .expect("end others"),
            1
        );
        for k in [&k1, &k3] {
            assert!(
                s.redis
                    .load(k)
                    .await
                    .expect("redis")
                    .is_none_or(|r| r.data.contains_key(backend_cached_db::FENCE_KEY)),
                "{name}: the cache entry was replaced by a fence"
            );
            assert!(s.a.load(k).await.expect("load").is_none(), "{name}");
            assert!(s.b.load(k).await.expect("load").is_none(), "{name}");
        }
        assert!(s.a.load(&k2).await.expect("load").is_some());
        assert!(s.b.load(&bob).await.expect("load").is_some());
        assert_eq!(index(&s.a).count_of("alice").await.expect("count"), 1);

        // The control: ending through the durable store alone would leave the cached
        // entry behind, which `cached_db` would then serve. That is what its own index
        // prevents.
        let durable_index = s.durable.store.user_index().expect("durable index");
        assert_eq!(
            durable_index.end_sessions("bob", None).await.expect("end"),
            1
        );
        assert!(
            s.a.load(&bob).await.expect("load").is_some(),
            "{name}: the bypassed cache still serves the ended session"
        );
        s.a.delete(&bob).await.expect("tidy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_cannot_resurrect_a_session_ended_elsewhere() {
    for make in durables() {
        let s = setup(make).await;
        let name = s.durable.name;
        let settings = Arc::new(SessionSettings::default());
        let login = |store: Arc<CachedDbStore>| {
            let settings = settings.clone();
            async move {
                let h = Session::new(store, settings, None);
                h.insert("cart", &vec!["apple"]).await.expect("insert");
                h.login("alice", None).await.expect("login");
                h.save().await.expect("save");
                h.key().expect("key")
            }
        };
        let victim = login(s.a.clone()).await;
        let keeper = login(s.b.clone()).await;

        // Request A on instance A: loaded (so cached), changed, not saved yet.
        let a = Session::new(s.a.clone(), settings.clone(), Some(victim.clone()));
        assert_eq!(a.principal().await.expect("load").as_deref(), Some("alice"));
        assert!(s.redis.load(&victim).await.expect("redis").is_some());
        a.insert("late", &1).await.expect("insert");

        // Request B on instance B: "sign out my other devices".
        let b = Session::new(s.b.clone(), settings.clone(), Some(keeper.clone()));
        assert_eq!(b.end_other_sessions().await.expect("end others"), 1);

        match a.save().await {
            Err(Error::NotFound) => {}
            other => panic!("{name}: the late save gave {other:?}, not NotFound"),
        }
        assert!(s.a.load(&victim).await.expect("load").is_none(), "{name}");
        assert!(s.b.load(&victim).await.expect("load").is_none(), "{name}");
        assert!(
            s.redis
                .load(&victim)
                .await
                .expect("redis")
                .is_none_or(|r| r.data.contains_key(backend_cached_db::FENCE_KEY)),
            "{name}: the ended session's cache entry is a fence or gone"
        );
        assert!(
            s.durable
                .store
                .load(&victim)
                .await
                .expect("durable")
                .is_none(),
            "{name}: stays gone"
        );
        let left = index(&s.a).sessions_of("alice", None).await.expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].stored_key, keeper);
    }
}

/// A cache (Redis underneath) that can hold one `insert_new` at its start: the test
/// then runs something in the window between the durable write and the cache fill.
#[derive(Debug)]
struct GatedCache {
    inner: Arc<dyn SessionStore>,
    gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl GatedCache {
    /// Holds the next `insert_new`: `entered` fires when it arrives, and it goes on when
    /// the returned sender is used (or dropped).
    fn hold_next_insert(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (entered_tx, entered_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.gate.lock().expect("gate") = Some((entered_tx, release_rx));
        (entered_rx, release_tx)
    }
}

#[async_trait]
impl SessionStore for GatedCache {
    fn engine(&self) -> &str {
        "gated"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        let gate = self.gate.lock().expect("gate").take();
        if let Some((entered, release)) = gate {
            let _ = entered.send(());
            let _ = release.await;
        }
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key).await
    }
    async fn update(&self, key: &SessionKey, record: &Record, v: Option<u64>) -> Result<u64> {
        self.inner.update(key, record, v).await
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

/// A login (the create of a signed-in session) is held between its durable write and
/// its cache fill while another instance ends every session of the principal: the end
/// finds the session in the durable index and deletes it, and its invalidation runs
/// before the fill. Afterwards neither instance may read the ended session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_between_a_logins_durable_write_and_its_cache_fill_leaves_no_ghost() {
    for make in durables() {
        let durable = make().await;
        let name = durable.name;
        let prefix = format!("users-gate:{name}:{}:", servers::unique_suffix());
        let gated = Arc::new(GatedCache {
            inner: redis(&prefix).await,
            gate: Mutex::new(None),
        });
        let a = Arc::new(CachedDbStore::new(gated.clone(), durable.store.clone()));
        let b = Arc::new(CachedDbStore::new(
            redis(&prefix).await,
            durable.store.clone(),
        ));

        let (entered, release) = gated.hold_next_insert();
        let create = {
            let a = a.clone();
            tokio::spawn(async move { a.create(&signed_in("erin", 1)).await })
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), entered)
            .await
            .expect("the create reached the cache fill")
            .expect("gate");
        // The session is in the durable store (and its index), not yet in the cache.
        assert_eq!(
            index(&b).end_sessions("erin", None).await.expect("end"),
            1,
            "{name}: the end finds the session being created"
        );
        release.send(()).expect("release");
        let key = create.await.expect("task").expect("create");

        assert!(
            durable.store.load(&key).await.expect("durable").is_none(),
            "{name}: ended"
        );
        assert!(
            b.load(&key).await.expect("load").is_none(),
            "{name}: another instance reads the ended session from the cache"
        );
        assert!(a.load(&key).await.expect("load").is_none(), "{name}");
        assert_eq!(index(&a).count_of("erin").await.expect("count"), 0);
    }
}

/// A memory cache whose deletes fail while `deletes_fail` is set.
#[derive(Debug, Default)]
struct NoDeleteCache {
    inner: MemoryStore,
    deletes_fail: AtomicBool,
}

#[async_trait]
impl SessionStore for NoDeleteCache {
    fn engine(&self) -> &str {
        "no-delete"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key).await
    }
    async fn update(&self, key: &SessionKey, record: &Record, v: Option<u64>) -> Result<u64> {
        self.inner.update(key, record, v).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        if self.deletes_fail.load(Ordering::SeqCst) {
            return Err(Error::backend(
                "no-delete",
                std::io::Error::other("cache is down"),
            ));
        }
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

/// The cache refuses the invalidations of the ended sessions: ending still succeeds
/// (the durable delete is what counts), the keys become suspect, reads bypass the stale
/// entries, and the repair deletes them once the cache answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_while_the_cache_refuses_deletes_leaves_no_stale_read() {
    for make in durables() {
        let durable = make().await;
        let name = durable.name;
        let cache = Arc::new(NoDeleteCache::default());
        let store = CachedDbStore::with_config(
            cache.clone(),
            durable.store.clone(),
            CachedDbConfig {
                retry_interval_ms: 0,
                ..CachedDbConfig::default()
            },
        );
        let k1 = store.create(&signed_in("carol", 1)).await.expect("create");
        let k2 = store.create(&signed_in("carol", 2)).await.expect("create");
        assert!(store.load(&k1).await.expect("load").is_some());
        assert!(cache.inner.exists(&k1).await.expect("cached"));

        cache.deletes_fail.store(true, Ordering::SeqCst);
        assert_eq!(
            index(&store)
                .end_sessions("carol", None)
                .await
                .expect("end"),
            2
        );
        assert!(store.stats().suspects >= 2, "{name}: {:?}", store.stats());
        assert!(
            cache.inner.exists(&k1).await.expect("stale entry"),
            "the cache still holds the entry it refused to drop"
        );
        for k in [&k1, &k2] {
            assert!(store.load(k).await.expect("load").is_none(), "{name}");
        }

        cache.deletes_fail.store(false, Ordering::SeqCst);
        // The repair task drops the entries; bounded wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.stats().suspects > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: the suspect set never drained"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!cache.inner.exists(&k1).await.expect("exists"));
        assert!(!cache.inner.exists(&k2).await.expect("exists"));
        assert_eq!(index(&store).count_of("carol").await.expect("count"), 0);
    }
}

#[tokio::test]
async fn no_index_without_a_durable_index() {
    // `NoDeleteCache` keeps no index; as the durable store it leaves cached_db without one.
    let store = CachedDbStore::new(
        Arc::new(MemoryStore::new()),
        Arc::new(NoDeleteCache::default()),
    );
    assert!(store.user_index().is_none());
}
