//! Every session of a user (the `UserIndex` capability) on the memory engine, a real
//! Redis server and the real Redis Cluster; Memcached has no index and says so.
//!
//! Each networked test works under its own random key prefix and purges it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore, MemoryStore};
use integration_tests::servers;
use session_core::users::session_id;
use session_core::{
    Error, HashedKeys, Record, Session, SessionData, SessionKey, SessionSettings, SessionStore,
    Timestamp, UserIndex,
};

fn settings() -> Arc<SessionSettings> {
    Arc::new(SessionSettings::default())
}

/// A store of the `cache` engine (no timeout layer, so the test sees the store itself).
async fn cache_store(config: CacheConfig, what: &str) -> Arc<CacheStore> {
    let url = config.url.clone().unwrap_or_else(|| config.urls.join(","));
    let store = CacheStore::connect(&config, session_core::CodecKind::Bincode.build(1 << 22))
        .await
        .unwrap_or_else(|e| servers::unreachable(what, &url, e));
    Arc::new(store)
}

async fn redis(prefix: &str) -> Arc<CacheStore> {
    cache_store(
        CacheConfig::new(servers::redis_url()).with_key_prefix(prefix),
        "Redis",
    )
    .await
}

async fn cluster(prefix: &str) -> Arc<CacheStore> {
    let config = CacheConfig {
        urls: servers::redis_cluster_urls(),
        ..CacheConfig::default()
    }
    .with_key_prefix(prefix);
    cache_store(config, "Redis Cluster").await
}

fn prefix() -> String {
    format!("t-users-{}:", servers::unique_suffix())
}

fn index(store: &dyn SessionStore) -> &dyn UserIndex {
    store.user_index().expect("this store keeps a user index")
}

/// A signed-in record of `principal`, `ttl_secs` to live.
fn signed_in(principal: Option<&str>, ttl_secs: i64) -> Record {
    let mut data = SessionData::new();
    data.insert("cart".into(), serde_json::json!(["apple"]));
    let mut r = Record::with_ttl(data, ttl_secs);
    r.meta.principal = principal.map(str::to_owned);
    r
}

/// A browser of `principal`: a session handle signed in through the public API.
async fn sign_in(store: &Arc<CacheStore>, principal: &str) -> Session {
    let s = Session::new(store.clone(), settings(), None);
    s.insert("device", principal).await.expect("insert");
    s.login(principal, Some("hash")).await.expect("login");
    s
}

/// The handle a later request of the same browser gets.
fn again(store: &Arc<CacheStore>, s: &Session) -> Session {
    Session::new(store.clone(), settings(), s.key())
}

fn keys_of(list: &[session_core::UserSession]) -> Vec<SessionKey> {
    let mut keys: Vec<SessionKey> = list.iter().map(|s| s.stored_key.clone()).collect();
    keys.sort();
    keys
}

fn sorted(mut keys: Vec<SessionKey>) -> Vec<SessionKey> {
    keys.sort();
    keys
}

/// Listing, counting, the current flag, ending one and ending all but the current.
async fn list_count_and_end(store: Arc<CacheStore>) {
    let ix = index(store.as_ref());
    let a1 = sign_in(&store, "alice").await;
    let a2 = sign_in(&store, "alice").await;
    let a3 = sign_in(&store, "alice").await;
    let b1 = sign_in(&store, "bob").await;
    let anon = Session::new(store.clone(), settings(), None);
    anon.insert("cart", &1).await.expect("insert");
    anon.save().await.expect("save");
    let (k1, k2, k3) = (
        a1.key().expect("key"),
        a2.key().expect("key"),
        a3.key().expect("key"),
    );

    let list = ix.sessions_of("alice", Some(&k2)).await.expect("list");
    assert_eq!(
        keys_of(&list),
        sorted(vec![k1.clone(), k2.clone(), k3.clone()])
    );
    for s in &list {
        assert_eq!(s.current, s.stored_key == k2, "{s:?}");
        assert_eq!(s.id, session_id(&s.stored_key));
        assert_eq!(s.meta.principal.as_deref(), Some("alice"));
        assert!(s.expires_at > Timestamp::now());
        // Each entry describes its own record (a cluster fetches them across slots).
        let stored = store
            .load(&s.stored_key)
            .await
            .expect("load")
            .expect("live");
        assert_eq!(
            (stored.created_at, stored.expires_at),
            (s.created_at, s.expires_at)
        );
    }
    assert!(
        list.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "oldest first"
    );
    assert_eq!(ix.count_of("alice").await.expect("count"), 3);
    assert_eq!(ix.count_of("bob").await.expect("count"), 1);
    assert_eq!(ix.count_of("nobody").await.expect("count"), 0);
    assert!(
        ix.sessions_of("nobody", None)
            .await
            .expect("list")
            .is_empty()
    );

    // Through a later request's handle: the asking session is the current one.
    let mine = again(&store, &a1)
        .user_sessions()
        .await
        .expect("user_sessions");
    assert_eq!(mine.len(), 3);
    assert_eq!(
        mine.iter()
            .filter(|s| s.current)
            .map(|s| &s.stored_key)
            .collect::<Vec<_>>(),
        vec![&k1]
    );

    // Ending one session by its public id; another principal's id ends nothing.
    let id3 = session_id(&k3);
    let bob_id = session_id(&b1.key().expect("key"));
    assert!(
        !again(&store, &a1)
            .end_user_session(&bob_id)
            .await
            .expect("end")
    );
    assert!(store.exists(&b1.key().expect("key")).await.expect("exists"));
    assert!(
        again(&store, &a1)
            .end_user_session(&id3)
            .await
            .expect("end")
    );
    assert!(!store.exists(&k3).await.expect("exists"), "ended = deleted");
    assert!(!ix.end_session("alice", &id3).await.expect("end again"));
    assert_eq!(
        again(&store, &a3).principal().await.expect("principal"),
        None,
        "the ended browser is signed out"
    );
    assert_eq!(ix.count_of("alice").await.expect("count"), 2);

    // Sign out the other devices: a2 stays, a1 goes.
    let a2_now = again(&store, &a2);
    assert_eq!(a2_now.end_other_sessions().await.expect("end others"), 1);
    assert_eq!(
        keys_of(&ix.sessions_of("alice", None).await.expect("list")),
        vec![k2.clone()]
    );
    assert_eq!(
        a2_now.principal().await.expect("principal").as_deref(),
        Some("alice")
    );
    assert_eq!(ix.end_sessions("alice", None).await.expect("end all"), 1);
    assert_eq!(ix.count_of("alice").await.expect("count"), 0);
    assert_eq!(ix.count_of("bob").await.expect("count"), 1, "bob untouched");
    assert!(
        store
            .exists(&anon.key().expect("key"))
            .await
            .expect("exists")
    );
}

/// A session signed in again as someone else, rebound by a direct write, or signed out
/// with `clear()` leaves its old principal's listing.
async fn rebinding_leaves_the_old_listing(store: Arc<CacheStore>) {
    let ix = index(store.as_ref());
    let s = sign_in(&store, "carol").await;
    let carol_key = s.key().expect("key");
    s.login("dave", None).await.expect("login as dave");
    assert!(
        ix.sessions_of("carol", None)
            .await
            .expect("list")
            .is_empty()
    );
    let dave = ix.sessions_of("dave", None).await.expect("list");
    assert_eq!(keys_of(&dave), vec![s.key().expect("key")]);
    assert_ne!(s.key().expect("key"), carol_key, "login cycled the key");

    // Signed out in place: the record stays, anonymous, and leaves dave's listing.
    let later = again(&store, &s);
    later.clear();
    later.save().await.expect("save");
    assert!(
        store
            .load(&s.key().expect("key"))
            .await
            .expect("load")
            .is_some()
    );
    assert!(ix.sessions_of("dave", None).await.expect("list").is_empty());

    // A record rewritten under the same key with another principal moves listings.
    let key = store
        .create(&signed_in(Some("erin"), 60))
        .await
        .expect("create");
    assert_eq!(ix.count_of("erin").await.expect("count"), 1);
    store
        .update(&key, &signed_in(Some("frank"), 60), Some(1))
        .await
        .expect("rebind");
    assert_eq!(ix.count_of("erin").await.expect("count"), 0);
    assert_eq!(
        keys_of(&ix.sessions_of("frank", None).await.expect("list")),
        vec![key.clone()]
    );
    // Back again: listed again (the index never misses a live session).
    store
        .update(&key, &signed_in(Some("erin"), 60), Some(2))
        .await
        .expect("rebind back");
    assert_eq!(ix.count_of("erin").await.expect("count"), 1);
    assert_eq!(ix.count_of("frank").await.expect("count"), 0);
    // A deleted session leaves at once.
    assert!(store.delete(&key).await.expect("delete"));
    assert_eq!(ix.count_of("erin").await.expect("count"), 0);
}

/// Expired sessions are never listed (and the index forgets them).
async fn expired_are_not_listed(store: Arc<CacheStore>) {
    let ix = index(store.as_ref());
    let live = store
        .create(&signed_in(Some("gina"), 60))
        .await
        .expect("create");
    let short = store
        .create(&signed_in(Some("gina"), 1))
        .await
        .expect("create");
    assert_eq!(ix.count_of("gina").await.expect("count"), 2);
    let start = Instant::now();
    while store.exists(&short).await.expect("exists") {
        assert!(start.elapsed() < Duration::from_secs(5), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = ix.sessions_of("gina", None).await.expect("list");
    assert_eq!(keys_of(&list), vec![live.clone()]);
    assert_eq!(ix.end_sessions("gina", Some(&live)).await.expect("end"), 0);
    assert!(store.exists(&live).await.expect("exists"));
}

/// A request that loaded its session before another device signed it out cannot write
/// it back: `Error::NotFound`, and the record stays gone.
async fn ended_sessions_stay_ended(store: Arc<CacheStore>) {
    let ix = index(store.as_ref());
    let victim = sign_in(&store, "hank").await;
    let other = sign_in(&store, "hank").await;
    // Request A: loaded, about to save.
    let request_a = again(&store, &victim);
    assert_eq!(
        request_a.principal().await.expect("load").as_deref(),
        Some("hank")
    );
    request_a.insert("clicks", &1).await.expect("insert");
    // Request B, from the other device: sign out every other session.
    assert_eq!(
        again(&store, &other)
            .end_other_sessions()
            .await
            .expect("end"),
        1
    );
    assert!(matches!(request_a.save().await, Err(Error::NotFound)));
    assert!(
        store
            .load(&victim.key().expect("key"))
            .await
            .expect("load")
            .is_none()
    );
    assert_eq!(
        keys_of(&ix.sessions_of("hank", None).await.expect("list")),
        vec![other.key().expect("key")]
    );
}

async fn purge(store: &CacheStore) {
    store.purge().await.expect("purge");
    // (No live session left; moka may still count an expired one it has not dropped.)
    assert!(store.list(None, usize::MAX).await.expect("list").is_empty());
}

async fn all_cases(make: impl AsyncFn() -> Arc<CacheStore>) {
    let store = make().await;
    list_count_and_end(store.clone()).await;
    rebinding_leaves_the_old_listing(store.clone()).await;
    expired_are_not_listed(store.clone()).await;
    ended_sessions_stay_ended(store.clone()).await;
    purge(&store).await;
}

#[tokio::test]
async fn memory_lists_and_ends_a_users_sessions() {
    all_cases(async || Arc::new(CacheStore::Memory(MemoryStore::new()))).await;
}

#[tokio::test]
async fn redis_lists_and_ends_a_users_sessions() {
    let p = prefix();
    all_cases(async || redis(&p).await).await;
}

#[tokio::test]
async fn redis_cluster_lists_and_ends_a_users_sessions() {
    let p = prefix();
    all_cases(async || cluster(&p).await).await;
}

/// The hashing wrapper over the memory engine: listings name derived keys, and the
/// asking session (by its real key) is still the current one.
#[tokio::test]
async fn hashed_keys_over_memory_mark_the_current_session() {
    let store: Arc<dyn SessionStore> = Arc::new(HashedKeys::new(Arc::new(MemoryStore::new())));
    let s = Session::new(store.clone(), settings(), None);
    s.login("ivy", None).await.expect("login");
    let t = Session::new(store.clone(), settings(), None);
    t.login("ivy", None).await.expect("login");
    let mine = Session::new(store.clone(), settings(), s.key());
    let list = mine.user_sessions().await.expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|x| x.current).count(), 1);
    assert_eq!(mine.end_other_sessions().await.expect("end"), 1);
    assert_eq!(mine.user_sessions().await.expect("list").len(), 1);
}

/// Memcached cannot enumerate keys: no index, and the handle says the engine cannot.
#[tokio::test]
async fn memcached_has_no_user_index() {
    let url = servers::memcached_url();
    let store = cache_store(
        CacheConfig::new(&url).with_key_prefix(prefix()),
        "Memcached",
    )
    .await;
    assert!(store.user_index().is_none());
    let s = sign_in(&store, "jane").await;
    assert!(matches!(
        s.user_sessions().await,
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        s.end_other_sessions().await,
        Err(Error::Unsupported { .. })
    ));
    s.logout().await.expect("logout");
}

/// Redis keeps one sorted set per principal, named by a digest (never the raw
/// principal), that lives at least as long as the principal's latest session, and the
/// listing prunes members whose records are gone once they are older than the grace.
#[tokio::test]
async fn redis_index_keys_are_digests_with_a_ttl() {
    let p = prefix();
    let store = redis(&p).await;
    let ix = index(store.as_ref());
    let principal = "kim {weird} * principal";
    let k1 = store
        .create(&signed_in(Some(principal), 300))
        .await
        .expect("create");
    let url = servers::redis_url();
    let mut raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut cmd = redis::cmd("KEYS");
    cmd.arg(format!("{p}u:*"));
    let sets: Vec<String> = cmd.query_async(&mut raw).await.expect("KEYS");
    assert_eq!(sets.len(), 1, "{sets:?}");
    let digest = sets[0].strip_prefix(&format!("{p}u:")).expect("prefix");
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&sets[0])
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!((290_000..=400_000).contains(&pttl), "index PTTL {pttl}");
    // The index entry survives a delete done behind its back (a stale entry), and the
    // listing ignores it; once past the grace the listing removes it.
    let k2 = store
        .create(&signed_in(Some(principal), 300))
        .await
        .expect("create");
    let mut del = redis::cmd("DEL");
    del.arg(format!("{p}{}", k2.as_str()));
    let _: i64 = del.query_async(&mut raw).await.expect("DEL");
    assert_eq!(
        keys_of(&ix.sessions_of(principal, None).await.expect("list")),
        vec![k1.clone()]
    );
    let members = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut c = redis::cmd("ZCARD");
        c.arg(&sets[0]);
        let mut raw = raw.clone();
        async move { c.query_async::<i64>(&mut raw).await.expect("ZCARD") }
    };
    assert_eq!(members(&mut raw).await, 2, "young stale entries are kept");
    let start = Instant::now();
    loop {
        ix.sessions_of(principal, None).await.expect("list");
        if members(&mut raw).await == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never pruned");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    purge(&store).await;
}

/// Writers re-binding sessions between principals while listers prune: once the
/// writers are done, every session is listed under the principal it ended with (the
/// index never misses a live session, even when a listing pruned a key a writer was
/// re-binding at that moment).
async fn rebinding_races_never_lose_a_session(store: Arc<CacheStore>) {
    const KEYS: usize = 64;
    const ROUNDS: usize = 30;
    let owners = [Some("olga"), None, Some("pete")];
    let mut keys = Vec::new();
    for _ in 0..KEYS {
        keys.push(
            store
                .create(&signed_in(Some("olga"), 120))
                .await
                .expect("create"),
        );
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut listers = Vec::new();
    for who in ["olga", "pete"] {
        let (store, done) = (store.clone(), done.clone());
        listers.push(tokio::spawn(async move {
            let mut rounds = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                index(store.as_ref())
                    .sessions_of(who, None)
                    .await
                    .expect("list");
                rounds += 1;
                tokio::task::yield_now().await;
            }
            rounds
        }));
    }
    let mut writers = Vec::new();
    for (i, key) in keys.iter().cloned().enumerate() {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut last = Some("olga");
            for round in 0..ROUNDS {
                let owner = owners[(i + round) % owners.len()];
                store
                    .update(&key, &signed_in(owner, 120), None)
                    .await
                    .expect("update");
                last = owner;
                tokio::task::yield_now().await;
            }
            (key, last)
        }));
    }
    let mut finals = Vec::new();
    for w in writers {
        finals.push(w.await.expect("writer"));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in listers {
        assert!(l.await.expect("lister") > 0);
    }
    for who in ["olga", "pete"] {
        let listed = keys_of(
            &index(store.as_ref())
                .sessions_of(who, None)
                .await
                .expect("list"),
        );
        let expected = sorted(
            finals
                .iter()
                .filter(|(_, last)| *last == Some(who))
                .map(|(k, _)| k.clone())
                .collect(),
        );
        assert_eq!(listed, expected, "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_rebinding_races_never_lose_a_session() {
    let store = Arc::new(CacheStore::Memory(MemoryStore::new()));
    rebinding_races_never_lose_a_session(store.clone()).await;
    purge(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_rebinding_races_never_lose_a_session() {
    let store = redis(&prefix()).await;
    rebinding_races_never_lose_a_session(store.clone()).await;
    purge(&store).await;
}
