//! Keys hashed at rest ([`session_core::hashed::HashedKeys`]) and records encrypted at
//! rest (`[encryption] keys`): the conformance suite through the wrapper on the memory and
//! file engines, and what a dump of the store reveals (nothing replayable, nothing
//! readable).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use backend_file::FileStore;
use integration_tests::{StoreFactory, all_cases, run_cases, run_conformance};
use serde_json::json;
use session_core::hashed::{HashedKeys, derive_key};
use session_core::{
    BincodeCodec, BoxError, Config, EngineRegistry, Record, SessionData, SessionKey,
    SessionSettings, SessionStore, Timestamp,
};
use tempfile::TempDir;

/// Base64 of 32 bytes of 0x07 and of 0x09: test keys, never used elsewhere.
const KEY_NEW: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
const KEY_OLD: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn registry() -> EngineRegistry {
    let registry = EngineRegistry::new();
    backend_cache::register(&registry);
    backend_file::register(&registry);
    backend_cached_db::register(&registry);
    registry
}

fn temp_dir() -> Result<TempDir, BoxError> {
    Ok(tempfile::Builder::new()
        .prefix("sessions-hashed-")
        .tempdir()?)
}

/// `file` from configuration with `hash_keys = true`, optionally with encryption.
fn file_config(dir: &Path, encrypted: bool) -> Config {
    let mut toml = String::from("engine = \"file\"\nhash_keys = true\ncodec = \"json\"\n");
    if encrypted {
        toml.push_str(&format!(
            "[encryption]\nkeys = [\"{KEY_NEW}\", \"{KEY_OLD}\"]\n"
        ));
    }
    Config::from_toml(&toml).with("file.path", dir)
}

struct HashedMemory;

#[session_core::async_trait]
impl StoreFactory for HashedMemory {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        Ok(Arc::new(HashedKeys::new(Arc::new(
            backend_cache::MemoryStore::new(),
        ))))
    }
}

/// The file engine behind the wrapper: built directly (bincode), or from configuration
/// with hashing and encryption switched on (JSON inside the seal).
struct HashedFile {
    from_config: bool,
    dirs: Mutex<Vec<TempDir>>,
}

impl HashedFile {
    fn new(from_config: bool) -> Self {
        HashedFile {
            from_config,
            dirs: Mutex::new(Vec::new()),
        }
    }

    fn new_dir(&self) -> Result<PathBuf, BoxError> {
        let dir = temp_dir()?;
        let path = dir.path().join("sessions");
        self.dirs.lock().map_err(|_| "poisoned")?.push(dir);
        Ok(path)
    }
}

#[session_core::async_trait]
impl StoreFactory for HashedFile {
    async fn fresh(&self) -> Result<Arc<dyn SessionStore>, BoxError> {
        let dir = self.new_dir()?;
        if self.from_config {
            let store = registry().build(&file_config(&dir, true)).await?;
            return Ok(store);
        }
        let inner = FileStore::builder()
            .dir(dir)
            .codec(Arc::new(BincodeCodec::default()))
            .build()?;
        Ok(Arc::new(HashedKeys::new(Arc::new(inner))))
    }

    fn settings(&self) -> SessionSettings {
        if self.from_config {
            file_config(Path::new("/unused"), true)
                .settings()
                .unwrap_or_default()
        } else {
            SessionSettings::default()
        }
    }

    async fn cleanup(&self) -> Result<(), BoxError> {
        let dirs = std::mem::take(&mut *self.dirs.lock().map_err(|_| "poisoned")?);
        for dir in dirs {
            dir.close()?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_memory_passes_the_conformance_suite() {
    run_conformance("memory (hashed keys)", &HashedMemory)
        .await
        .assert_pinned(190, 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_file_passes_the_conformance_suite() {
    run_conformance("file (hashed keys)", &HashedFile::new(false))
        .await
        .assert_pinned(202, 11);
}

/// Cases that plant or read plaintext bincode through `raw()` and expect it to load:
/// an encrypted store must refuse exactly that (plaintext is off by default).
const PLAINTEXT_RAW_CASES: [&str; 2] = [
    "raw_bytes_of_a_stored_record_decode",
    "raw_put_of_valid_bytes_loads",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_and_encrypted_file_from_config_passes_the_conformance_suite() {
    let factory = HashedFile::new(true);
    let (plaintext, rest): (Vec<_>, Vec<_>) = all_cases()
        .into_iter()
        .partition(|c| PLAINTEXT_RAW_CASES.contains(&c.name));
    assert_eq!(plaintext.len(), PLAINTEXT_RAW_CASES.len(), "cases renamed?");
    run_cases("file (hashed keys, encrypted, from config)", &factory, rest)
        .await
        .assert_pinned(200, 11);
    // The two excluded cases fail for the right reason: the stored bytes are sealed, and
    // planted plaintext is refused.
    let report = run_cases("file (encrypted): plaintext raw cases", &factory, plaintext).await;
    let failures = report.failures();
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (name, why) in failures {
        assert!(
            why.contains("encrypted") || why.contains("unencrypted"),
            "{name}: {why}"
        );
    }
}

/// Every file under `dir`, with its name and its bytes.
fn dump(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out
}

fn record(marker: &str) -> Record {
    let mut data = SessionData::new();
    data.insert("user_id".into(), json!(101));
    data.insert("marker".into(), json!(marker));
    Record::with_ttl(data, 3600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_a_hashed_encrypted_store_holds_no_key_and_no_data() {
    let tmp = temp_dir().expect("tmp");
    let dir = tmp.path().join("sessions");
    let store = registry()
        .build(&file_config(&dir, true))
        .await
        .expect("build");
    assert!(store.engine().contains("hashed"), "{}", store.engine());
    assert!(
        !store.capabilities().listing,
        "derived keys are not listable keys"
    );

    let mut keys = Vec::new();
    for i in 0..20 {
        let k = store
            .create(&record(&format!("secret-marker-{i}")))
            .await
            .expect("create");
        assert!(store.load(&k).await.expect("load").is_some());
        keys.push(k);
    }

    // The dump: no file name or content holds a session key or the data.
    let files = dump(&dir);
    assert_eq!(files.len(), 20, "one file per session");
    for (name, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        for k in &keys {
            assert!(!name.contains(k.as_str()), "a file name holds a key");
            assert!(!text.contains(k.as_str()), "a file holds a key");
        }
        assert!(
            !text.contains("secret-marker"),
            "a file holds plaintext data"
        );
        assert!(!text.contains("user_id"), "a file holds plaintext data");
    }

    // What the backend itself holds: derived keys, and only those.
    let inner = FileStore::new(&dir).expect("plain file store on the same directory");
    let listed: BTreeSet<SessionKey> = inner
        .list(None, 100)
        .await
        .expect("list")
        .into_iter()
        .collect();
    let derived: BTreeSet<SessionKey> = keys.iter().map(derive_key).collect();
    assert_eq!(listed, derived);
    let raw = inner.raw().expect("file keeps bytes");
    for k in &keys {
        assert!(raw.get_raw(k).await.expect("get_raw").is_none());
    }

    // Replaying what the dump shows gets nothing: a derived key sent back as a cookie
    // is hashed again and finds no session.
    for d in &derived {
        assert!(
            store.load(d).await.expect("load").is_none(),
            "dump replayed"
        );
        assert!(!store.exists(d).await.expect("exists"));
    }

    // The wrapper's operations all reach the right record.
    let k = &keys[0];
    let r = store.load(k).await.expect("load").expect("live");
    assert_eq!(r.data["marker"], json!("secret-marker-0"));
    let v = store
        .update(k, &record("changed"), Some(r.version))
        .await
        .expect("update");
    assert_eq!(v, r.version + 1);
    let later = Timestamp::now().add_secs(7200);
    store.touch(k, later).await.expect("touch");
    let r = store.load(k).await.expect("load").expect("live");
    assert_eq!(r.data["marker"], json!("changed"));
    assert_eq!(r.expires_at, later);
    assert_eq!(r.version, v, "touch does not bump the version");
    assert!(store.delete(k).await.expect("delete"));
    assert!(!store.delete(k).await.expect("delete again"));
    assert!(inner.load(&derive_key(k)).await.expect("load").is_none());
    assert_eq!(store.count().await.expect("count"), 19);

    // The same directory read without the keys: every record refuses, typed.
    let no_keys = registry()
        .build(&Config::from_toml("engine = \"file\"\nhash_keys = true").with("file.path", &dir))
        .await
        .expect("build");
    match no_keys.load(&keys[1]).await {
        Err(session_core::Error::Codec(session_core::CodecError::Encrypted)) => {}
        other => panic!("read without keys gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_db_hashes_each_key_exactly_once() {
    let tmp = temp_dir().expect("tmp");
    let dir = tmp.path().join("sessions");
    let config = Config::from_toml(
        "engine = \"cached_db\"\nhash_keys = true\n\
         [cached_db.cache]\nengine = \"memory\"\n\
         [cached_db.db]\nengine = \"file\"\n",
    )
    .with("cached_db.db.file.path", &dir);
    let store = registry().build(&config).await.expect("build");
    let k = store.create(&record("once")).await.expect("create");
    assert!(store.load(&k).await.expect("load").is_some());
    let inner = FileStore::new(&dir).expect("plain file store");
    assert!(inner.load(&derive_key(&k)).await.expect("load").is_some());
    assert!(inner.load(&k).await.expect("load").is_none());
    assert!(
        inner
            .load(&derive_key(&derive_key(&k)))
            .await
            .expect("load")
            .is_none(),
        "keys were hashed twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_off_by_default_keeps_plain_keys() {
    let tmp = temp_dir().expect("tmp");
    let dir = tmp.path().join("sessions");
    let store = registry()
        .build(&Config::from_toml("engine = \"file\"").with("file.path", &dir))
        .await
        .expect("build");
    assert_eq!(store.engine(), "file");
    assert!(store.capabilities().listing);
    let k = store.create(&record("plain")).await.expect("create");
    let inner = FileStore::new(&dir).expect("plain file store");
    assert!(inner.load(&k).await.expect("load").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_store_moves_into_a_hashed_one_by_copy_without_logouts() {
    // What `sessions copy --from plain.toml --to hashed.toml` does: list the plain
    // store's keys, load each, insert it under the same key into the destination.
    let tmp = temp_dir().expect("tmp");
    let plain = registry()
        .build(&Config::from_toml("engine = \"file\"").with("file.path", tmp.path().join("a")))
        .await
        .expect("plain");
    let hashed = registry()
        .build(&file_config(&tmp.path().join("b"), true))
        .await
        .expect("hashed");
    let mut keys = Vec::new();
    for i in 0..5 {
        keys.push(
            plain
                .create(&record(&format!("m{i}")))
                .await
                .expect("create"),
        );
    }
    assert!(plain.capabilities().listing);
    for k in plain.list(None, 100).await.expect("list") {
        let r = plain.load(&k).await.expect("load").expect("live");
        hashed.insert_new(&k, &r).await.expect("copy");
    }
    // Every original cookie finds its session in the hashed store.
    for (i, k) in keys.iter().enumerate() {
        let r = hashed.load(k).await.expect("load").expect("copied");
        assert_eq!(r.data["marker"], json!(format!("m{i}")));
    }
    // The reverse direction is refused: a hashed store cannot list session keys.
    assert!(!hashed.capabilities().listing);
}
