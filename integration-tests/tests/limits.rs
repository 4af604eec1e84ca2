//! The session limits on real stores built from configuration (the `file` engine, which
//! stores bytes, and the in-process `memory` engine, which keeps decoded records and
//! measures them with the configured codec): `max_keys` refuses the key that would
//! exceed it, `max_encoded_size` refuses a record whose stored bytes would exceed it,
//! both with typed errors, and a refused write leaves the stored session as it was. Run
//! plain and with encryption (where the limit counts the sealed bytes).

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use session_core::{CodecError, Config, EngineRegistry, Error, Record, SessionData};

const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const LIMIT: usize = 2048;

fn config(engine: &str, dir: &Path, encrypted: bool) -> Config {
    let mut toml = format!("engine = \"{engine}\"\nmax_keys = 5\nmax_encoded_size = {LIMIT}\n");
    if encrypted {
        toml.push_str(&format!("[encryption]\nkeys = [\"{KEY}\"]\n"));
    }
    Config::from_toml(&toml).with("file.path", dir)
}

async fn check_limits(engine: &str, encrypted: bool) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("sessions");
    let registry = EngineRegistry::new();
    backend_file::register(&registry);
    backend_cache::register(&registry);
    let cfg = config(engine, &dir, encrypted);
    let store = registry.build(&cfg).await.expect("build");
    let settings = Arc::new(cfg.settings().expect("settings"));

    // max_keys through the handle: the sixth key is refused, the five are saved.
    let s = session_core::Session::new(store.clone(), settings.clone(), None);
    for i in 0..5 {
        s.insert(&format!("k{i}"), &i)
            .await
            .expect("within max_keys");
    }
    match s.insert("k5", &5).await {
        Err(Error::Limit(m)) => assert!(m.contains("max_keys"), "{m}"),
        other => panic!("a sixth key gave {other:?}"),
    }
    s.save().await.expect("save five keys");
    let key = s.key().expect("saved");
    let stored = store.load(&key).await.expect("load").expect("live");
    assert_eq!(stored.data.len(), 5);

    // max_encoded_size through the handle: too big a value fails the save, typed, and
    // the stored record keeps its five keys.
    let s = session_core::Session::new(store.clone(), settings.clone(), Some(key.clone()));
    s.insert("k0", &"x".repeat(LIMIT)).await.expect("in memory");
    match s.save().await {
        Err(Error::Codec(CodecError::TooLarge { size, limit })) => {
            assert_eq!(limit, LIMIT);
            assert!(size > LIMIT);
        }
        other => panic!("an oversized save gave {other:?}"),
    }
    let after = store.load(&key).await.expect("load").expect("live");
    assert_eq!(after.data, stored.data, "a refused save changed the record");
    assert_eq!(after.version, stored.version);

    // Directly on the store: create and update refuse too; nothing new is written.
    let mut big = SessionData::new();
    big.insert("blob".into(), json!("y".repeat(LIMIT)));
    let big = Record::with_ttl(big, 600);
    assert!(matches!(
        store.create(&big).await,
        Err(Error::Codec(CodecError::TooLarge { .. }))
    ));
    assert!(matches!(
        store.update(&key, &big, None).await,
        Err(Error::Codec(CodecError::TooLarge { .. }))
    ));
    assert_eq!(store.count().await.expect("count"), 1);

    // The largest session that fits is accepted, and every stored file is within limit.
    let mut fits = SessionData::new();
    let mut n = LIMIT;
    let fitting = loop {
        fits.insert("blob".into(), json!("z".repeat(n)));
        match store.create(&Record::with_ttl(fits.clone(), 600)).await {
            Ok(k) => break k,
            Err(Error::Codec(CodecError::TooLarge { .. })) if n > 0 => n -= 16,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        n > LIMIT / 2,
        "only {n} bytes fit under a {LIMIT}-byte limit"
    );
    let loaded = store.load(&fitting).await.expect("load").expect("live");
    if engine == "file" {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let len = entry.metadata().expect("metadata").len() as usize;
            assert!(len <= LIMIT, "a stored file holds {len} bytes");
        }
    } else {
        // A store of decoded records: what it accepted encodes within the limit (and,
        // from the loop above, 16 bytes more were refused: the limit is measured, not
        // estimated).
        let len = settings.codec().encode(&loaded).expect("encode").len();
        assert!(len <= LIMIT, "an accepted record encodes to {len} bytes");
        assert!(
            len > LIMIT - 64,
            "the largest accepted record is {len} bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_the_file_store() {
    check_limits("file", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_the_file_store_with_encryption() {
    check_limits("file", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_the_memory_store() {
    check_limits("memory", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_the_memory_store_with_encryption() {
    check_limits("memory", true).await;
}

/// The `cache` engine on its in-process driver (`[cache] url = "memory"`, the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_the_in_process_cache_engine() {
    check_limits("cache", false).await;
}
