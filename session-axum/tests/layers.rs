//! Store layers as an application meets them: named in `Sessions.toml`, built by the
//! registry around the configured engine, and exercised over real HTTP through the
//! middleware. A third-party layer (counting calls) is registered and configured from
//! its own section; the built-in `timeout` layer turns a stalled third-party store into
//! 503 answers; configuration mistakes fail at startup naming the key.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_cache::MemoryStore;
use common::*;
use serde::Deserialize;
use session_axum::SessionLayer;
use session_axum::error::STORE_UNAVAILABLE;
use session_core::hashed::derive_key;
use session_core::{
    Capabilities, Config, EngineContext, EngineRegistry, Error, Inserted, LayerContext, Record,
    Result, SessionKey, SessionStore, StoreLayer, Timestamp, async_trait,
};

// ---------------------------------------------------------------------------------
// A third-party layer: counts the calls it sees and remembers the keys
// ---------------------------------------------------------------------------------

/// `[counting]`: the layer's own section; unknown keys are errors.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CountingConfig {
    /// Names the counter in the test's assertions.
    label: String,
}

/// What every store wearing the layer reports to.
#[derive(Default)]
struct Tally {
    label: Mutex<String>,
    calls: AtomicU64,
    keys: Mutex<Vec<SessionKey>>,
}

impl Tally {
    fn saw(&self, key: &SessionKey) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.keys.lock().expect("keys").push(key.clone());
    }
}

struct CountingLayer(Arc<Tally>);

impl StoreLayer for CountingLayer {
    fn layer(&self, inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(Counting {
            inner,
            tally: self.0.clone(),
        })
    }
}

#[derive(Debug)]
struct Counting {
    inner: Arc<dyn SessionStore>,
    tally: Arc<Tally>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tally")
    }
}

#[async_trait]
impl SessionStore for Counting {
    fn engine(&self) -> &str {
        self.inner.engine()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.tally.saw(key);
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.tally.saw(key);
        self.inner.load(key).await
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.tally.saw(key);
        self.inner.update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.tally.saw(key);
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.tally.saw(key);
        self.inner.touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.tally.saw(key);
        self.inner.exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.inner.clear_expired().await
    }
}

fn registry_with_counting(tally: Arc<Tally>) -> EngineRegistry {
    let registry = EngineRegistry::new();
    backend_file::register(&registry);
    backend_cache::register(&registry);
    session_axum::register(&registry);
    registry.register_layer("counting", move |ctx: &LayerContext| {
        let cfg: CountingConfig = ctx.section()?;
        *tally.label.lock().expect("label") = cfg.label;
        Ok(CountingLayer(tally.clone()))
    });
    registry
}

#[tokio::test]
async fn a_third_party_layer_named_in_sessions_toml_wears_the_built_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("Sessions.toml");
    std::fs::write(
        &file,
        format!(
            "engine = \"file\"\nhash_keys = true\nlayers = [\"counting\"]\n\
             [file]\npath = \"{}\"\n[cookie]\nsecure = false\n[counting]\nlabel = \"app\"\n",
            dir.path().join("sessions").display()
        ),
    )
    .expect("write Sessions.toml");
    let tally = Arc::new(Tally::default());
    let registry = registry_with_counting(tally.clone());
    let config = Config::load_file_only(&file, Default::default()).expect("load");
    let layer = SessionLayer::from_config(&config, &registry)
        .await
        .expect("layer");
    assert_eq!(*tally.label.lock().expect("label"), "app");

    let base = serve_layer(layer).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    assert_eq!(res.status(), 200);
    let key = SessionKey::parse(&cookie_value(&the_set_cookie(res.headers()))).expect("key");
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert_eq!(res.text().await.expect("body"), "\"1\"");

    // The layer saw the requests' store calls ...
    let calls = tally.calls.load(Ordering::SeqCst);
    assert!(calls >= 2, "the counting layer saw {calls} calls");
    // ... and only derived keys: `hash_keys = true` wraps outside every listed layer.
    let seen = tally.keys.lock().expect("keys").clone();
    assert!(seen.contains(&derive_key(&key)), "derived key not seen");
    assert!(
        !seen.contains(&key),
        "a layer inside the hashing saw a cookie key"
    );
    // The file on disk is named by the derived key, exactly once hashed.
    let names: Vec<String> = walk(&dir.path().join("sessions"));
    assert!(
        names.iter().any(|n| n.contains(derive_key(&key).as_str())),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains(key.as_str())), "{names:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn layer_configuration_mistakes_fail_at_startup_naming_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("Sessions.toml");
    let registry = registry_with_counting(Arc::new(Tally::default()));
    let start = |toml: &str| {
        std::fs::write(&file, toml).expect("write");
        let config = Config::load_file_only(&file, Default::default()).expect("load");
        let registry = registry.clone();
        async move { SessionLayer::from_config(&config, &registry).await }
    };
    let message = |r: std::result::Result<SessionLayer, Error>| match r {
        Ok(_) => panic!("a bad layer configuration was accepted"),
        Err(e @ Error::Config { .. }) => e.to_string(),
        Err(other) => panic!("expected a configuration error, got {other:?}"),
    };

    // A typo in the layer's own section: its full path, the file and line, the fix.
    let m = message(
        start("engine = \"memory\"\nlayers = [\"counting\"]\n[counting]\nlable = \"x\"\n").await,
    );
    assert!(m.contains("counting.lable"), "{m}");
    assert!(m.contains("line 4"), "{m}");
    assert!(m.contains("did you mean `label`?"), "{m}");

    // A layer nobody registered.
    let m = message(start("engine = \"memory\"\nlayers = [\"countnig\"]\n").await);
    assert!(m.contains("`layers`") && m.contains("countnig"), "{m}");
    assert!(m.contains("counting") && m.contains("timeout"), "{m}");

    // A section for a layer the list does not name is refused, not ignored.
    let m = message(start("engine = \"memory\"\n[timeout]\nper_call_ms = 100\n").await);
    assert!(
        m.contains("`timeout`") && m.contains("does not list"),
        "{m}"
    );

    // The built-in timeout layer needs its bound, and takes no unknown key.
    let m = message(start("engine = \"memory\"\nlayers = [\"timeout\"]\n").await);
    assert!(
        m.contains("timeout.per_call_ms") && m.contains("required"),
        "{m}"
    );
    let m = message(
        start("engine = \"memory\"\nlayers = [\"timeout\"]\n[timeout]\nper_call = 5\n").await,
    );
    assert!(m.contains("timeout.per_call"), "{m}");
    assert!(m.contains("did you mean `per_call_ms`?"), "{m}");

    // Each layer once.
    let m = message(
        start(
            "engine = \"memory\"\nlayers = [\"counting\", \"counting\"]\n[counting]\nlabel = \"x\"\n",
        )
        .await,
    );
    assert!(m.contains("twice"), "{m}");
}

// ---------------------------------------------------------------------------------
// The built-in timeout layer on a third-party store
// ---------------------------------------------------------------------------------

/// A store that stops answering (never returns) while `stalled` is set.
#[derive(Debug)]
struct Stalling {
    inner: MemoryStore,
    stalled: Arc<AtomicBool>,
}

impl Stalling {
    async fn gate(&self) {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl SessionStore for Stalling {
    fn engine(&self) -> &str {
        "stalling"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn insert_new(&self, key: &SessionKey, record: &Record) -> Result<Inserted> {
        self.gate().await;
        self.inner.insert_new(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.gate().await;
        self.inner.load(key).await
    }
    async fn update(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<u64> {
        self.gate().await;
        self.inner.update(key, record, expected).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.gate().await;
        self.inner.delete(key).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<()> {
        self.gate().await;
        self.inner.touch(key, expires_at).await
    }
    async fn exists(&self, key: &SessionKey) -> Result<bool> {
        self.gate().await;
        self.inner.exists(key).await
    }
    async fn clear_expired(&self) -> Result<u64> {
        self.gate().await;
        self.inner.clear_expired().await
    }
}

#[tokio::test]
async fn the_timeout_layer_from_config_turns_a_stalled_store_into_503() {
    let stalled = Arc::new(AtomicBool::new(false));
    let registry = EngineRegistry::new();
    session_axum::register(&registry);
    {
        let stalled = stalled.clone();
        registry.register_store("stalling", move |_ctx: EngineContext| {
            let stalled = stalled.clone();
            async move {
                Ok(Stalling {
                    inner: MemoryStore::new(),
                    stalled,
                })
            }
        });
    }
    let config = Config::from_toml(
        "engine = \"stalling\"\nlayers = [\"timeout\"]\n\
         [timeout]\nper_call_ms = 200\n[cookie]\nsecure = false\n",
    );
    let layer = SessionLayer::from_config(&config, &registry)
        .await
        .expect("layer");
    let store = layer.store().expect("a store").clone();
    let base = serve_layer(layer).await;
    let c = browser();
    let res = c.post(format!("{base}/set/a/1")).send().await.expect("set");
    assert_eq!(res.status(), 200);
    let key = SessionKey::parse(&cookie_value(&the_set_cookie(res.headers()))).expect("key");

    stalled.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    let took = started.elapsed();
    assert_eq!(res.status(), 503);
    assert_eq!(res.text().await.expect("body"), STORE_UNAVAILABLE);
    assert!(
        took < Duration::from_secs(2),
        "the stalled request took {took:?}"
    );
    // The typed error names the wrapped engine and the configured bound.
    let err = store.load(&key).await.expect_err("stalled");
    assert!(
        matches!(&err, Error::Timeout { engine, after }
            if engine == "stalling" && *after == Duration::from_millis(200)),
        "{err:?}"
    );

    stalled.store(false, Ordering::SeqCst);
    let res = c.get(format!("{base}/get/a")).send().await.expect("get");
    assert_eq!(res.text().await.expect("body"), "\"1\"");
}
