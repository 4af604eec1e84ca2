//! Two overlapping requests changing different keys of one session both persist, on the
//! shared servers: Redis and PostgreSQL (the memory run is in `http.rs`). Each run uses
//! its own key prefix or table and removes it afterwards, pass or fail.

mod common;

use std::sync::Arc;

use backend_cache::{CacheConfig, RedisStore};
use backend_db::{DbConfig, DbStore};
use integration_tests::servers;
use session_core::{CodecKind, SessionStore};

/// Runs `check`, then `cleanup`, then re-raises the check's panic if it had one.
async fn with_cleanup<C, F>(check: F, cleanup: C)
where
    F: std::future::Future<Output = ()> + Send + 'static,
    C: std::future::Future<Output = ()>,
{
    let outcome = tokio::spawn(check).await;
    cleanup.await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disjoint_changes_both_persist_on_redis() {
    let url = servers::redis_url();
    let config = CacheConfig {
        url: Some(url.clone()),
        key_prefix: format!("session-axum-it-{}:", servers::unique_suffix()),
        ..CacheConfig::default()
    };
    let store = match RedisStore::connect(&config, CodecKind::Bincode.build(1 << 22)).await {
        Ok(s) => Arc::new(s),
        Err(e) => servers::unreachable("Redis", &url, e),
    };
    let dyn_store: Arc<dyn SessionStore> = store.clone();
    with_cleanup(common::disjoint_changes_both_persist(dyn_store), async {
        store.purge_prefix().await.expect("purge the test prefix");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_disjoint_changes_both_persist_on_postgres() {
    let url = servers::postgres_url();
    let config = DbConfig {
        table: format!("session_axum_it_{}", servers::unique_suffix()),
        ..DbConfig::new(url.clone())
    };
    let store = match DbStore::connect(&config).await {
        Ok(s) => Arc::new(s),
        Err(e) => servers::unreachable("PostgreSQL", &url, e),
    };
    store.migrate().await.expect("create the test table");
    let dyn_store: Arc<dyn SessionStore> = store.clone();
    with_cleanup(common::disjoint_changes_both_persist(dyn_store), async {
        store.drop_table().await.expect("drop the test table");
    })
    .await;
}
