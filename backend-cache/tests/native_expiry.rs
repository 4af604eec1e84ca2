//! What the Redis and Memcached drivers leave on the server: native TTLs equal to the
//! record's remaining age, no "never expires" entries, exact versions, escaped prefixes.
//! Each test uses a random key prefix and deletes its keys.

use std::sync::Arc;

use backend_cache::{CacheConfig, MemcachedStore, RedisStore};
use integration_tests::servers;
use redis::AsyncCommands;
use session_core::{Codec, Error, Record, SessionData, SessionStore, Timestamp};

fn codec() -> Arc<dyn Codec> {
    session_core::CodecKind::Bincode.build(1 << 22)
}

fn record(ttl_secs: i64) -> Record {
    let mut data = SessionData::new();
    data.insert("cart".into(), serde_json::json!(["apple", "pear"]));
    Record::with_ttl(data, ttl_secs)
}

async fn redis_store(prefix: &str) -> (RedisStore, redis::aio::MultiplexedConnection) {
    let url = servers::redis_url();
    let store = RedisStore::connect(&CacheConfig::new(&url).with_key_prefix(prefix), codec())
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", &url, e));
    let conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", &url, e));
    (store, conn)
}

#[tokio::test]
async fn redis_keeps_a_native_ttl_equal_to_the_remaining_age() {
    let prefix = format!("t-{}:", servers::unique_suffix());
    let (store, mut raw) = redis_store(&prefix).await;
    let key = store.create(&record(120)).await.expect("create");
    let rkey = format!("{prefix}{}", key.as_str());
    let pttl: i64 = raw.pttl(&rkey).await.expect("PTTL");
    assert!(
        (110_000..=120_000).contains(&pttl),
        "PTTL after create: {pttl}"
    );
    let header: Vec<u8> = raw.getrange(&rkey, 0, 21).await.expect("GETRANGE");
    assert_eq!(header, b"v00000000000000000001e");

    assert_eq!(
        store
            .update(&key, &record(300), Some(1))
            .await
            .expect("update"),
        2
    );
    let pttl: i64 = raw.pttl(&rkey).await.expect("PTTL");
    assert!(
        (290_000..=300_000).contains(&pttl),
        "PTTL after update: {pttl}"
    );

    let deadline = Timestamp::now().add_secs(50);
    store.touch(&key, deadline).await.expect("touch");
    let pttl: i64 = raw.pttl(&rkey).await.expect("PTTL");
    assert!(
        (40_000..=50_000).contains(&pttl),
        "PTTL after touch: {pttl}"
    );
    let got = store.load(&key).await.expect("load").expect("live");
    assert_eq!(
        got.expires_at, deadline,
        "touch moved the stored deadline too"
    );
    assert_eq!(got.version, 2, "touch does not bump the version");
    assert_eq!(got.data, record(1).data, "touch keeps the data");

    // A deadline in the past is never written as "no expiry": the key goes away.
    let mut past = record(60);
    past.expires_at = Timestamp::now().add_secs(-5);
    assert_eq!(store.update(&key, &past, Some(2)).await.expect("update"), 3);
    let exists: bool = raw.exists(&rkey).await.expect("EXISTS");
    assert!(!exists, "an update to a past deadline left the key behind");
    let other = session_core::SessionKey::generate().expect("rng");
    store
        .insert_new(&other, &past)
        .await
        .expect("insert expired");
    let exists: bool = raw
        .exists(format!("{prefix}{}", other.as_str()))
        .await
        .expect("EXISTS");
    assert!(!exists, "an expired record was written");
    assert!(matches!(
        store.update(&key, &record(60), None).await,
        Err(Error::NotFound)
    ));
    store.purge_prefix().await.expect("purge");
}

#[tokio::test]
async fn redis_versions_stay_exact_beyond_float_precision() {
    let prefix = format!("t-{}:", servers::unique_suffix());
    let (store, _raw) = redis_store(&prefix).await;
    let key = session_core::SessionKey::generate().expect("rng");
    let mut r = record(60);
    r.version = (1 << 53) + 1;
    store.insert_new(&key, &r).await.expect("insert");
    // The blind update increments in the script, the checked one on the client.
    assert_eq!(
        store.update(&key, &r, None).await.expect("blind"),
        (1 << 53) + 2
    );
    assert_eq!(
        store
            .update(&key, &r, Some((1 << 53) + 2))
            .await
            .expect("checked"),
        (1 << 53) + 3
    );
    match store.update(&key, &r, Some(1 << 53)).await {
        Err(Error::Conflict { expected, found }) => {
            assert_eq!((expected, found), (1 << 53, (1 << 53) + 3));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    store.purge_prefix().await.expect("purge");
}

#[tokio::test]
async fn redis_glob_characters_in_the_prefix_match_only_themselves() {
    let base = format!("t-{}-", servers::unique_suffix());
    let (globby, _) = redis_store(&format!("{base}g*[a]?:")).await;
    let (plain, _) = redis_store(&format!("{base}gXa!:")).await;
    let mine = globby.create(&record(60)).await.expect("create");
    plain.create(&record(60)).await.expect("create");
    assert_eq!(globby.list(None, 10).await.expect("list"), vec![mine]);
    assert_eq!(globby.count().await.expect("count"), 1);
    assert_eq!(globby.purge_prefix().await.expect("purge"), 1);
    assert_eq!(
        plain.count().await.expect("count"),
        1,
        "purge stayed in its prefix"
    );
    plain.purge_prefix().await.expect("purge");
}

async fn memcached_store(prefix: &str) -> MemcachedStore {
    let url = servers::memcached_url();
    MemcachedStore::connect(&CacheConfig::new(&url).with_key_prefix(prefix), codec())
        .await
        .unwrap_or_else(|e| servers::unreachable("Memcached", &url, e))
}

#[tokio::test]
async fn memcached_expiry_far_ahead_and_in_the_past() {
    let prefix = format!("t-{}:", servers::unique_suffix());
    let store = memcached_store(&prefix).await;
    let raw = store.raw().expect("raw access");
    // Past 30 days Memcached reads exptime as a Unix time: the record must still live.
    let far = store.create(&record(40 * 24 * 3600)).await.expect("create");
    assert!(
        store.load(&far).await.expect("load").is_some(),
        "a 40-day session expired at once"
    );

    // touch rewrites only the deadline.
    let deadline = Timestamp::now().add_secs(90);
    store.touch(&far, deadline).await.expect("touch");
    let got = store.load(&far).await.expect("load").expect("live");
    assert_eq!((got.expires_at, got.version), (deadline, 1));

    // A past deadline is stored as already expired, never as exptime 0.
    let mut past = record(60);
    past.expires_at = Timestamp::now().add_secs(-5);
    assert_eq!(store.update(&far, &past, Some(1)).await.expect("update"), 2);
    assert!(
        raw.get_raw(&far).await.expect("get_raw").is_none(),
        "item outlived its deadline"
    );
    let other = session_core::SessionKey::generate().expect("rng");
    store
        .insert_new(&other, &past)
        .await
        .expect("insert expired");
    assert!(
        raw.get_raw(&other).await.expect("get_raw").is_none(),
        "an expired record was written"
    );
    store.purge_prefix().await.expect("purge");
}

#[tokio::test]
async fn memcached_compare_and_set_under_contention_loses_no_update() {
    let prefix = format!("t-{}:", servers::unique_suffix());
    let store = Arc::new(memcached_store(&prefix).await);
    let key = store.create(&record(60)).await.expect("create");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for _ in 0..25 {
                // Blind updates race through gets/cas; each one must land exactly once.
                match store.update(&key, &record(60), None).await {
                    Ok(_) => ok += 1,
                    Err(Error::ConflictRetriesExhausted { .. }) => {}
                    Err(e) => panic!("update failed: {e}"),
                }
            }
            ok
        }));
    }
    let mut landed = 0;
    for t in tasks {
        landed += t.await.expect("task");
    }
    let got = store.load(&key).await.expect("load").expect("live");
    assert_eq!(
        got.version,
        1 + landed,
        "every successful update bumped the version once"
    );
    store.purge_prefix().await.expect("purge");
}

/// Two stores on one prefix stand for two processes: the CAS tokens one remembers
/// never let it overwrite what the other wrote, nor resurrect what it deleted.
#[tokio::test]
async fn memcached_remembered_cas_tokens_never_skip_a_concurrent_write() {
    let prefix = format!("t-{}:", servers::unique_suffix());
    let a = memcached_store(&prefix).await;
    let b = memcached_store(&prefix).await;
    let key = a.create(&record(60)).await.expect("create");
    assert_eq!(a.load(&key).await.expect("load").expect("live").version, 1);
    assert_eq!(
        b.update(&key, &record(60), Some(1))
            .await
            .expect("b updates"),
        2
    );
    match a.update(&key, &record(60), Some(1)).await {
        Err(Error::Conflict {
            expected: 1,
            found: 2,
        }) => {}
        other => panic!("a stale token must give a conflict, got {other:?}"),
    }
    assert_eq!(
        a.update(&key, &record(60), Some(2))
            .await
            .expect("a retries"),
        3
    );
    // a's token is fresh now; b touches (a new CAS token), a's update still lands once.
    b.touch(&key, Timestamp::now().add_secs(30))
        .await
        .expect("touch");
    assert_eq!(
        a.update(&key, &record(60), Some(3))
            .await
            .expect("after touch"),
        4
    );
    // b deletes; a's remembered token must not bring the session back.
    assert!(b.delete(&key).await.expect("delete"));
    assert!(matches!(
        a.update(&key, &record(60), Some(4)).await,
        Err(Error::NotFound)
    ));
    assert!(
        b.load(&key).await.expect("load").is_none(),
        "update resurrected a deleted session"
    );
    a.purge_prefix().await.expect("purge");
}
