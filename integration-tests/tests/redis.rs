//! The conformance suite on Redis (standalone), plus an outage test on a private server.
//!
//! The suite runs against the shared server (`servers::redis_url()`), each store in its
//! own random key prefix under one per-run prefix, which the cleanup deletes with
//! `SCAN` + `DEL`. The outage test never touches the shared server: it starts its own
//! `redis-server` on a free loopback port, kills it mid-run and starts it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore};
use integration_tests::fault_proxy::{FaultProxy, Mode};
use integration_tests::servers::{PrivateRedis, free_port, port_of};
use integration_tests::{StoreFactory, run_conformance, servers};
use session_core::{
    BoxError, Config, EngineRegistry, Error, Record, SessionData, SessionStore, Timestamp,
};

/// Builds each store through the engine registry from a `[cache]` configuration with
/// a fresh prefix, as an application would.
struct Redis {
    url: String,
    run_prefix: String,
    registry: EngineRegistry,
    made: AtomicUsize,
}

impl Redis {
    fn new(url: String) -> Self {
        let registry = EngineRegistry::new();
        backend_cache::register(&registry);
        Redis {
            url,
            run_prefix: format!("it-redis-{}:", servers::unique_suffix()),
            registry,
            made: AtomicUsize::new(0),
        }
    }
}

#[session_core::async_trait]
impl StoreFactory for Redis {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let config = Config::from_toml("engine = \"cache\"")
            .with("cache.url", &self.url)
            .with("cache.key_prefix", format!("{}{n}:", self.run_prefix));
        Ok(self.registry.build(&config).await?)
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        let config = CacheConfig::new(&self.url).with_key_prefix(&self.run_prefix);
        let store =
            CacheStore::connect(&config, session_core::CodecKind::Bincode.build(1 << 22)).await?;
        store.purge().await?;
        // Nothing of this run may be left behind.
        let left = store.count().await?;
        if left != 0 {
            return Err(format!("{left} keys left under {}", self.run_prefix).into());
        }
        Ok(())
    }
}

async fn check_reachable(url: &str) {
    let config = CacheConfig::new(url);
    if let Err(e) =
        CacheStore::connect(&config, session_core::CodecKind::Bincode.build(1 << 22)).await
    {
        servers::unreachable("Redis", url, e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_passes_the_conformance_suite() {
    let url = servers::redis_url();
    check_reachable(&url).await;
    run_conformance("redis", &Redis::new(url))
        .await
        .assert_pinned(210, 3);
}

fn sample() -> Record {
    let mut data = SessionData::new();
    data.insert("user_id".into(), 7.into());
    Record::with_ttl(data, 600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_timely_typed_errors_and_the_same_store_recovers() {
    let port = free_port();
    let mut server = PrivateRedis::start(port);
    let command_timeout = Duration::from_millis(300);
    // Built from configuration, as an application does: the `cache` engine bounds every
    // operation with its timeout layer.
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    let config = Config::from_toml(&format!(
        "engine = \"cache\"\n[cache]\nurl = \"redis://127.0.0.1:{port}\"\n\
         key_prefix = \"outage-{}:\"\ncommand_timeout_ms = 300\nconnect_timeout_ms = 300\n",
        servers::unique_suffix()
    ));
    let store = registry
        .build(&config)
        .await
        .expect("connect to the private redis-server");
    let key = store.create(&sample()).await.expect("create");

    // Loads in a loop while the server goes away: every call returns, in time.
    let loader = {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let stop = Instant::now() + Duration::from_secs(2);
            for _ in 0..10_000 {
                if Instant::now() >= stop {
                    break;
                }
                let started = Instant::now();
                let r = store.load(&key).await;
                outcomes.push((r.map(|o| o.is_some()), started.elapsed()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let outcomes = loader.await.expect("loader task");
    let slack = command_timeout + Duration::from_millis(700);
    let mut errors = 0;
    for (r, took) in &outcomes {
        assert!(
            *took <= slack,
            "a load took {took:?} while the server was down"
        );
        match r {
            Ok(_) => {}
            Err(e) => {
                assert!(
                    matches!(e, Error::Backend { .. } | Error::Timeout { .. }),
                    "outage gave an untyped error: {e:?}"
                );
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "no load failed although the server was killed");
    assert!(
        outcomes.iter().any(|(r, _)| matches!(r, Ok(true))),
        "loads before the kill succeeded"
    );

    // Every operation fails fast and typed while the server is down.
    for _ in 0..5 {
        let started = Instant::now();
        let err = store.create(&sample()).await.expect_err("server is down");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            started.elapsed() <= slack,
            "create took {:?}",
            started.elapsed()
        );
    }

    // Back on the same port: the same store works again within 5 s.
    let _server = PrivateRedis::start(port);
    let back = Instant::now();
    let recovered = loop {
        match store.create(&sample()).await {
            Ok(k) => break k,
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                assert!(
                    back.elapsed() < Duration::from_secs(5),
                    "the store did not recover within 5 s of the server's return: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let got = store.load(&recovered).await.expect("load after recovery");
    assert!(got.is_some(), "a session created after recovery loads");
    // The new server knows none of the scripts: EVALSHA falls back to EVAL.
    let v = store
        .update(&recovered, &sample(), Some(1))
        .await
        .expect("update after recovery");
    assert_eq!(v, 2);
    store
        .touch(&recovered, Timestamp::now().add_secs(60))
        .await
        .expect("touch after recovery");
    // The old session died with the unpersisted server: a typed miss, not an error.
    assert!(store.load(&key).await.expect("load").is_none());
    assert!(got.is_some_and(|r| r.expires_at > Timestamp::now()));
}

/// Awaits `call` behind a silent network (command timeout 300 ms): it must fail with
/// `Error::Timeout` within the bound plus slack. A call still waiting after 10 s fails
/// the test rather than hanging it.
async fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, Error>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung behind a silent network"));
    let took = started.elapsed();
    match outcome {
        Err(Error::Timeout { .. }) => {}
        other => panic!("{what} behind a silent network gave {other:?}, not a timeout"),
    }
    assert!(
        took <= Duration::from_millis(300 + 700),
        "{what} took {took:?} behind a silent network"
    );
}

/// Behind a network that accepts and answers nothing, every call of the engine's store
/// fails with `Error::Timeout` within its bound: its one timer is the engine's timeout
/// layer (the client has no response timeout under it), and the steps of a sweep
/// (`count`, `list`: `SCAN`), which the layer leaves unbounded, are bounded by the
/// store. A store built directly (`CacheStore::connect`, no layer) is bounded by its
/// client. Both work again once the network delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_silent_network_every_call_is_bounded_and_the_store_recovers() {
    let url = servers::redis_url();
    check_reachable(&url).await;
    let proxy = FaultProxy::start(port_of(&url)).await;
    let via = format!("redis://127.0.0.1:{}", proxy.port());
    let prefix = format!("it-redis-silent-{}:", servers::unique_suffix());
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    let config = Config::from_toml(&format!(
        "engine = \"cache\"\n[cache]\nurl = {via:?}\nkey_prefix = {prefix:?}\n\
         command_timeout_ms = 300\nconnect_timeout_ms = 300\n"
    ));
    let store = registry.build(&config).await.expect("the engine's store");
    let mut direct_config = CacheConfig::new(&via).with_key_prefix(&prefix);
    direct_config.command_timeout_ms = 300;
    let direct = CacheStore::connect(
        &direct_config,
        session_core::CodecKind::Bincode.build(1 << 22),
    )
    .await
    .expect("the store built directly");
    let key = store.create(&sample()).await.expect("create");

    proxy.set(Mode::Blackhole);
    fails_in_time("load", store.load(&key)).await;
    fails_in_time("update", store.update(&key, &sample(), Some(1))).await;
    fails_in_time("exists", store.exists(&key)).await;
    fails_in_time("count", store.count()).await;
    fails_in_time("list", store.list(None, 10)).await;
    fails_in_time("the direct store's load", direct.load(&key)).await;
    fails_in_time("the direct store's count", direct.count()).await;

    // Delivered again: the same stores answer, and the session is intact.
    proxy.set(Mode::Pass);
    let healed = Instant::now();
    for (name, s) in [("engine", store.clone()), ("direct", Arc::new(direct) as _)] {
        let s: Arc<dyn SessionStore> = s;
        let got = loop {
            match s.load(&key).await {
                Ok(got) => break got,
                Err(e) => {
                    assert!(e.is_unavailable(), "{name}: {e:?}");
                    assert!(
                        healed.elapsed() < Duration::from_secs(5),
                        "the {name} store did not answer within 5 s of the network's return: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let got = got.unwrap_or_else(|| panic!("{name}: the session is gone"));
        assert_eq!(got.data.get("user_id"), Some(&7.into()), "{name}");
        // The timed-out update's bytes were held, not lost: like any write whose answer
        // never came, it may land once they are delivered, and only once.
        assert!(
            matches!(got.version, 1 | 2),
            "{name}: version {} after one timed-out update",
            got.version
        );
    }
    assert!(
        store
            .count()
            .await
            .expect("count after the network's return")
            >= 1
    );
    assert!(store.delete(&key).await.expect("delete"));
}
