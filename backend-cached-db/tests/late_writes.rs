//! Late cache commands between processes: two cached_db stores (two app instances)
//! share one Redis and one SQLite database; instance A reaches Redis through a fault
//! proxy (`integration_tests::fault_proxy`), instance B directly.
//!
//! A cache command that times out on A's side is not cancelled: the proxy holds it and
//! delivers it late, as a congested network or a process resumed after a stop does.
//! Such a late write, or an invalidation that was not answered, must not leave an old
//! record in the shared cache that B then reads. Asserted: once the fault heals, B reads
//! the durable version within a bounded time, and A's suspect set drains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore};
use backend_cached_db::{CachedDbConfig, CachedDbStore};
use backend_db::{DbConfig, DbStore};
use integration_tests::fault_proxy::{FaultProxy, Mode};
use integration_tests::servers;
use serde_json::json;
use session_core::{
    CodecKind, Record, SessionData, SessionKey, SessionStore, StoreLayerExt, TimeoutLayer,
};

/// A's cache deadline: short, so the fault is seen quickly.
const TIMEOUT_MS: u64 = 200;
/// How long the test waits for the repair after the fault heals.
const HEAL_DEADLINE: Duration = Duration::from_secs(5);

fn record(n: u64) -> Record {
    let mut d = SessionData::new();
    d.insert("n".into(), json!(n));
    Record::with_ttl(d, 600)
}

fn n_of(r: &Record) -> u64 {
    r.data.get("n").and_then(|v| v.as_u64()).expect("n")
}

struct Pair {
    a: CachedDbStore,
    b: CachedDbStore,
    /// Redis without the cached_db logic: what every process would read.
    redis: Arc<dyn SessionStore>,
    proxy: FaultProxy,
    _dir: tempfile::TempDir,
}

async fn cache(url: &str, prefix: &str) -> Arc<dyn SessionStore> {
    let config = CacheConfig {
        command_timeout_ms: TIMEOUT_MS,
        connect_timeout_ms: 1000,
        ..CacheConfig::new(url).with_key_prefix(prefix)
    };
    CacheStore::connect(&config, CodecKind::Bincode.build(1 << 20))
        .await
        .unwrap_or_else(|e| servers::unreachable("Redis", url, e))
        .with_layer(TimeoutLayer::new(config.command_timeout()))
}

async fn pair() -> Pair {
    let url = servers::redis_url();
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port in the Redis URL");
    let proxy = FaultProxy::start(port).await;
    let prefix = format!("late:{}:", servers::unique_suffix());
    let dir = tempfile::tempdir().expect("tmp");
    let db_url = format!("sqlite://{}", dir.path().join("s.db").display());
    let db = Arc::new(
        DbStore::connect(&DbConfig::new(db_url))
            .await
            .expect("sqlite")
            .with_codec(CodecKind::Bincode.build(1 << 20)),
    );
    let config = || CachedDbConfig {
        retry_interval_ms: 100,
        log_interval_secs: 1,
        ..CachedDbConfig::default()
    };
    let via_proxy = format!("redis://127.0.0.1:{}/", proxy.port());
    let a = CachedDbStore::with_config(cache(&via_proxy, &prefix).await, db.clone(), config());
    let b = CachedDbStore::with_config(cache(&url, &prefix).await, db, config());
    let redis = cache(&url, &prefix).await;
    Pair {
        a,
        b,
        redis,
        proxy,
        _dir: dir,
    }
}

/// Waits (bounded) until `b` reads `want` and the shared cache holds no other version,
/// and A has no suspect key left.
async fn healed(p: &Pair, key: &SessionKey, want: u64, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let b = p.b.load(key).await.expect("B load").map(|r| n_of(&r));
        let cached = p
            .redis
            .load(key)
            .await
            .expect("Redis load")
            .map(|r| n_of(&r));
        let suspects = p.a.stats().suspects;
        if b == Some(want) && cached.is_none_or(|n| n == want) && suspects == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < HEAL_DEADLINE,
            "{what}: {HEAL_DEADLINE:?} after the fault healed, B reads {b:?}, the shared \
             cache holds {cached:?} (want {want}), A has {suspects} suspect key(s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cache_add_does_not_leave_an_old_record_for_other_instances() {
    let p = pair().await;
    p.proxy.set(Mode::Blackhole);
    // A creates: the durable insert succeeds, the cache add is held and times out.
    let started = Instant::now();
    let key = p.a.create(&record(1)).await.expect("create through A");
    assert!(
        started.elapsed() < Duration::from_millis(TIMEOUT_MS * 5),
        "A's create waited {:?} on a blackholed cache",
        started.elapsed()
    );
    assert_eq!(
        p.a.stats().suspects,
        1,
        "A's timed-out cache add leaves its key suspect"
    );
    // B writes a newer version meanwhile; its invalidation finds nothing to drop yet.
    let r =
        p.b.load(&key)
            .await
            .expect("B load")
            .expect("B sees A's session");
    p.b.update(&key, &record(2), Some(r.version))
        .await
        .expect("B update");
    // The fault heals: A's held add reaches Redis now, after B's invalidation.
    p.proxy.set(Mode::Pass);
    let took = healed(&p, &key, 2, "late add").await;
    println!("late add: healed {took:?} after the fault ended");
    assert_eq!(
        n_of(&p.a.load(&key).await.expect("A load").expect("A sees it")),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_invalidation_is_repaired_for_other_instances() {
    let p = pair().await;
    let key = p.b.create(&record(1)).await.expect("create through B");
    // The shared cache holds version 1 (B's create filled it).
    assert_eq!(
        p.redis.load(&key).await.expect("Redis").map(|r| n_of(&r)),
        Some(1)
    );
    p.proxy.set(Mode::Blackhole);
    let r = p.a.load(&key).await.expect("A load").expect("A sees it");
    // A writes: the durable update succeeds, the invalidation is held and times out.
    p.a.update(&key, &record(2), Some(r.version))
        .await
        .expect("A update is acknowledged: the durable store took it");
    assert_eq!(
        p.a.stats().suspects,
        1,
        "A's unanswered invalidation leaves its key suspect"
    );
    assert_eq!(
        n_of(&p.a.load(&key).await.expect("A load").expect("A sees it")),
        2,
        "A reads its own write while the cache is unreachable from it"
    );
    // A's repair task keeps trying while the fault lasts; it never blocks A's requests.
    tokio::time::sleep(Duration::from_millis(3 * TIMEOUT_MS)).await;
    p.proxy.set(Mode::Pass);
    let took = healed(&p, &key, 2, "unanswered invalidation").await;
    println!("unanswered invalidation: healed {took:?} after the fault ended");
}
