//! The conformance suite on Memcached (`servers::memcached_url()`), plus an outage test
//! on a private server.
//!
//! Each store gets its own random key prefix under one per-run prefix; the cleanup
//! deletes the run's items (found with `lru_crawler metadump`), and every item carries
//! its record's TTL (at most the suite's hour) in any case.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backend_cache::{CacheConfig, CacheStore, MemcachedStore};
use integration_tests::{StoreFactory, run_conformance, servers};
use session_core::{BoxError, Config, EngineRegistry, Record, SessionData, SessionStore};

struct Memcached {
    url: String,
    run_prefix: String,
    registry: EngineRegistry,
    made: AtomicUsize,
}

#[session_core::async_trait]
impl StoreFactory for Memcached {
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
        Ok(())
    }
}

fn codec() -> Arc<dyn session_core::Codec> {
    session_core::CodecKind::Bincode.build(1 << 22)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_passes_the_conformance_suite() {
    let url = servers::memcached_url();
    if let Err(e) = MemcachedStore::connect(&CacheConfig::new(&url), codec()).await {
        servers::unreachable("Memcached", &url, e);
    }
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    let factory = Memcached {
        url,
        run_prefix: format!("it-mc-{}:", servers::unique_suffix()),
        registry,
        made: AtomicUsize::new(0),
    };
    run_conformance("memcached", &factory)
        .await
        .assert_pinned(180, 33);
}

struct PrivateMemcached(Option<Child>);

impl PrivateMemcached {
    fn start(port: u16) -> Self {
        let child = Command::new("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-m",
                "16",
            ])
            // Required when running as root, ignored otherwise.
            .args(["-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start memcached ({e}); install it (apt-get install memcached)")
            });
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private memcached did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateMemcached(Some(child))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateMemcached {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_outage_gives_timely_typed_errors_and_the_same_store_recovers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port();
    let mut server = PrivateMemcached::start(port);
    // Built from configuration, as an application does: the `cache` engine bounds every
    // operation with its timeout layer.
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    let config = Config::from_toml(&format!(
        "engine = \"cache\"\n[cache]\nurl = \"memcache://127.0.0.1:{port}\"\n\
         command_timeout_ms = 300\nconnect_timeout_ms = 300\npool_size = 4\n"
    ));
    let store = registry.build(&config).await.expect("connect");
    let mut data = SessionData::new();
    data.insert("n".into(), 1.into());
    let record = Record::with_ttl(data, 600);
    // Several pooled connections, all of which die with the server.
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(store.create(&record).await.expect("create"));
    }
    server.kill();
    let slack = Duration::from_millis(1000);
    for k in &keys {
        let started = Instant::now();
        let err = store.load(k).await.expect_err("server is down");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            started.elapsed() <= slack,
            "load took {:?}",
            started.elapsed()
        );
    }
    let _server = PrivateMemcached::start(port);
    let back = Instant::now();
    let key = loop {
        match store.create(&record).await {
            Ok(k) => break k,
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                assert!(
                    back.elapsed() < Duration::from_secs(5),
                    "no recovery in 5 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(store.load(&key).await.expect("load").is_some());
    // After recovery no stale pooled connection fails a request.
    for k in &keys {
        assert!(store.load(k).await.expect("load after recovery").is_none());
    }
}
