//! The conformance suite on a 3-master Redis Cluster (`servers::redis_cluster_urls()`).
//!
//! Each store gets its own random key prefix under one per-run prefix; the cleanup finds
//! the run's keys on every master (`CLUSTER SLOTS`, then `SCAN` per node) and deletes
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backend_cache::{CacheConfig, CacheStore, RedisStore};
use integration_tests::{StoreFactory, run_conformance, servers};
use session_core::{BoxError, Config, EngineRegistry, Record, SessionData, SessionStore};

struct Cluster {
    urls: Vec<String>,
    run_prefix: String,
    registry: EngineRegistry,
    made: AtomicUsize,
}

impl Cluster {
    fn config(&self, prefix: &str) -> CacheConfig {
        CacheConfig {
            urls: self.urls.clone(),
            ..CacheConfig::default().with_key_prefix(prefix)
        }
    }
}

#[session_core::async_trait]
impl StoreFactory for Cluster {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let config = Config::from_toml("engine = \"cache\"")
            .with("cache.urls", &self.urls)
            .with("cache.key_prefix", format!("{}{n}:", self.run_prefix));
        Ok(self.registry.build(&config).await?)
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        let store = CacheStore::connect(
            &self.config(&self.run_prefix),
            session_core::CodecKind::Bincode.build(1 << 22),
        )
        .await?;
        store.purge().await?;
        let left = store.count().await?;
        if left != 0 {
            return Err(format!("{left} keys left under {}", self.run_prefix).into());
        }
        Ok(())
    }
}

fn factory() -> Cluster {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    Cluster {
        urls: servers::redis_cluster_urls(),
        run_prefix: format!("it-cluster-{}:", servers::unique_suffix()),
        registry,
        made: AtomicUsize::new(0),
    }
}

async fn connect(f: &Cluster, prefix: &str) -> RedisStore {
    match RedisStore::connect(
        &f.config(prefix),
        session_core::CodecKind::Bincode.build(1 << 22),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => servers::unreachable("The Redis Cluster", &f.urls.join(","), e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_conformance_suite() {
    let f = factory();
    let probe = connect(&f, &f.run_prefix).await;
    assert!(probe.is_cluster());
    run_conformance("redis-cluster", &f)
        .await
        .assert_pinned(210, 3);
}

/// Sessions spread over every master, and listing and purging find them on all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_lists_and_purges_across_every_master() {
    let f = factory();
    let store = connect(&f, &format!("{}spread:", f.run_prefix)).await;
    let mut keys = Vec::new();
    for i in 0..60 {
        let mut data = SessionData::new();
        data.insert("i".into(), i.into());
        keys.push(
            store
                .create(&Record::with_ttl(data, 300))
                .await
                .expect("create"),
        );
    }
    for k in &keys {
        assert!(store.load(k).await.expect("load").is_some());
    }
    assert_eq!(store.count().await.expect("count"), 60);
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after.as_ref(), 25).await.expect("list");
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        listed.extend(page);
    }
    keys.sort();
    assert_eq!(
        listed, keys,
        "keyset pagination returns every key once, in order"
    );
    assert_eq!(store.purge_prefix().await.expect("purge"), 60);
    assert_eq!(store.count().await.expect("count"), 0);
}
