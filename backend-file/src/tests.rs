//! Behaviour of the file store that an operator would notice on disk.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use session_core::{
    BincodeCodec, Codec, CodecError, Config, EngineRegistry, Error, Inserted, JsonCodec, Record,
    SessionData, SessionKey, SessionStore, Timestamp,
};

use crate::fs::mode_of;
use crate::{FileStore, register};

fn data(pairs: &[(&str, serde_json::Value)]) -> SessionData {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn record(pairs: &[(&str, serde_json::Value)], ttl: i64) -> Record {
    Record::with_ttl(data(pairs), ttl)
}

/// A builder for a store in `dir` that skips `fsync` (the tests' files need not survive
/// a crash).
fn builder_in(dir: &std::path::Path) -> crate::FileStoreBuilder {
    FileStore::builder().dir(dir).fsync(false)
}

fn store_in(dir: &std::path::Path) -> FileStore {
    builder_in(dir).build().expect("store")
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn json_files_are_named_by_prefix_and_readable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = FileStore::builder()
        .dir(tmp.path())
        .codec(Arc::new(JsonCodec::default()))
        .build()
        .expect("store");
    let key = store
        .create(&record(&[("user_id", json!(101))], 3600))
        .await
        .expect("create");
    assert_eq!(names(tmp.path()), vec![format!("sess_{}", key.as_str())]);
    let text = fs::read_to_string(store.path_of(&key)).expect("cat");
    assert!(text.starts_with(r#"{"data":{"user_id":101},"#), "{text}");

    let custom = FileStore::builder()
        .dir(tmp.path().join("custom"))
        .prefix("sessionid")
        .build()
        .expect("store");
    let key = custom.create(&record(&[], 60)).await.expect("create");
    assert_eq!(
        names(custom.dir()),
        vec![format!("sessionid{}", key.as_str())]
    );
}

#[cfg(unix)]
#[tokio::test]
async fn directory_is_0700_and_files_are_0600() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a/b/sessions");
    let store = FileStore::new(&dir).expect("store");
    assert_eq!(mode_of(&fs::metadata(&dir).expect("meta")) & 0o777, 0o700);
    let key = store.create(&record(&[], 60)).await.expect("create");
    store
        .update(&key, &record(&[("n", json!(1))], 60), Some(1))
        .await
        .expect("update");
    assert_eq!(
        mode_of(&fs::metadata(store.path_of(&key)).expect("meta")) & 0o777,
        0o600
    );
}

#[cfg(unix)]
#[test]
fn the_shared_default_directory_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    crate::store::prepare_dir(&dir, true).expect("fresh private dir is fine");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = crate::store::prepare_dir(&dir, true).expect_err("open to others");
    assert!(
        matches!(&err, Error::Config { key: Some(k), .. } if k == "file.path"),
        "{err}"
    );
    // A configured directory is the operator's choice: accepted, with a warning.
    crate::store::prepare_dir(&dir, false).expect("configured dir");
    // A symlink in the temp dir could point anywhere: refused for the default.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).expect("symlink");
    assert!(crate::store::prepare_dir(&link, true).is_err());
    crate::store::prepare_dir(&link, false).expect("configured symlink");
    let file = tmp.path().join("file");
    fs::write(&file, b"x").expect("write");
    assert!(crate::store::prepare_dir(&file, false).is_err());
}

#[tokio::test]
async fn expired_file_is_not_loaded_and_is_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let key = SessionKey::generate().expect("key");
    store
        .insert_new(&key, &record(&[("x", json!(1))], -5))
        .await
        .expect("insert");
    assert!(store.path_of(&key).exists());
    assert!(store.load(&key).await.expect("load").is_none());
    assert!(
        !store.path_of(&key).exists(),
        "load removes the expired file"
    );
    // And an expired name can be claimed again.
    assert_eq!(
        store
            .insert_new(&key, &record(&[], -5))
            .await
            .expect("insert"),
        Inserted::Created
    );
    assert_eq!(
        store
            .insert_new(&key, &record(&[("y", json!(2))], 60))
            .await
            .expect("replace expired"),
        Inserted::Created
    );
    let got = store.load(&key).await.expect("load").expect("live");
    assert_eq!(got.data, data(&[("y", json!(2))]));
}

#[tokio::test]
async fn corrupt_and_truncated_files_are_typed_errors_left_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let raw = store.raw().expect("raw access");
    let live = Timestamp::now().add_secs(3600);

    let key = SessionKey::generate().expect("key");
    raw.put_raw(&key, b"\xB1SR\x01garbage", live)
        .await
        .expect("plant");
    assert!(matches!(store.load(&key).await, Err(Error::Codec(_))));
    assert!(store.path_of(&key).exists(), "left in place for inspection");
    assert!(matches!(
        store.update(&key, &record(&[], 60), None).await,
        Err(Error::Codec(_))
    ));
    assert_eq!(
        store
            .insert_new(&key, &record(&[], 60))
            .await
            .expect("insert"),
        Inserted::KeyTaken,
        "a file that cannot be read is never overwritten by a create"
    );

    // A truncated JSON record (as a crash of a non-atomic writer would leave).
    let good = JsonCodec::default()
        .encode(&record(&[("a", json!("b"))], 3600))
        .expect("encode");
    let cut = SessionKey::generate().expect("key");
    raw.put_raw(&cut, &good[..good.len() / 2], live)
        .await
        .expect("plant");
    assert!(matches!(
        store.load(&cut).await,
        Err(Error::Codec(CodecError::Truncated(_)))
    ));
    let empty = SessionKey::generate().expect("key");
    raw.put_raw(&empty, b"", live).await.expect("plant");
    assert!(matches!(store.load(&empty).await, Err(Error::Codec(_))));

    // clear_expired keeps corrupt files until their deadline, then removes them.
    assert_eq!(store.clear_expired().await.expect("sweep"), 0);
    assert_eq!(store.count().await.expect("count"), 3);
    let dead = SessionKey::generate().expect("key");
    raw.put_raw(&dead, b"{not json", Timestamp::now().add_secs(-1))
        .await
        .expect("plant");
    assert_eq!(store.clear_expired().await.expect("sweep"), 1);
    assert!(!store.path_of(&dead).exists());
    assert!(store.path_of(&key).exists());
    // delete always works.
    assert!(store.delete(&key).await.expect("delete"));
}

#[tokio::test]
async fn oversized_files_are_refused_without_reading_them_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = builder_in(tmp.path())
        .max_file_size(1024)
        .build()
        .expect("store");
    let key = SessionKey::generate().expect("key");
    fs::write(store.path_of(&key), vec![b'{'; 10_000]).expect("plant");
    match store.load(&key).await {
        Err(Error::Codec(CodecError::TooLarge {
            size: 10_000,
            limit: 1024,
        })) => {}
        other => panic!("wanted TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn mtime_is_the_deadline_and_touch_keeps_data_and_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let r = record(&[("cart", json!(["apple"]))], 600);
    let key = store.create(&r).await.expect("create");
    let mtime = |s: &FileStore| {
        Timestamp::from_system_time(
            fs::metadata(s.path_of(&key))
                .expect("meta")
                .modified()
                .expect("mtime"),
        )
    };
    assert_eq!(mtime(&store), r.expires_at);
    let later = Timestamp::now().add_secs(7200);
    store.touch(&key, later).await.expect("touch");
    assert_eq!(mtime(&store), later);
    let got = store.load(&key).await.expect("load").expect("live");
    assert_eq!((got.version, got.expires_at), (1, later));
    assert_eq!(got.data, r.data);
    // Touch on a missing or expired session is NotFound and does not create a file.
    let missing = SessionKey::generate().expect("key");
    assert!(matches!(
        store.touch(&missing, later).await,
        Err(Error::NotFound)
    ));
    assert!(!store.path_of(&missing).exists());
}

#[tokio::test]
async fn clear_expired_counts_sessions_and_leaves_writes_in_flight_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(store.create(&record(&[], 600)).await.expect("create"));
    }
    for _ in 0..300 {
        // More than one sweep batch.
        store.create(&record(&[], -1)).await.expect("create");
    }
    // A write in flight (or a crashed writer's leftover) and an unrelated file.
    fs::write(tmp.path().join(".tmp_999_1"), b"partial").expect("temp");
    fs::write(tmp.path().join("README"), b"sessions live here").expect("other");
    assert_eq!(store.count().await.expect("count"), 303);
    assert_eq!(store.clear_expired().await.expect("sweep"), 300);
    assert_eq!(store.count().await.expect("count"), 3);
    assert_eq!(store.clear_expired().await.expect("sweep"), 0);
    assert!(
        tmp.path().join(".tmp_999_1").exists(),
        "young temp file kept"
    );
    assert!(tmp.path().join("README").exists());
    for k in &live {
        assert!(store.exists(k).await.expect("exists"));
    }

    let eager = builder_in(tmp.path())
        .stale_temp_after(Duration::ZERO)
        .build()
        .expect("store");
    assert_eq!(eager.clear_expired().await.expect("sweep"), 0);
    assert!(
        !tmp.path().join(".tmp_999_1").exists(),
        "stale temp removed"
    );
    assert!(tmp.path().join("README").exists());
}

#[tokio::test]
async fn list_is_ascending_keyset_pagination() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let mut all = Vec::new();
    for _ in 0..25 {
        all.push(store.create(&record(&[], 600)).await.expect("create"));
    }
    fs::write(tmp.path().join(".tmp_1_1"), b"x").expect("temp");
    all.sort();
    let mut seen = Vec::new();
    let mut after: Option<SessionKey> = None;
    loop {
        let page = store.list(after.as_ref(), 7).await.expect("list");
        assert!(page.len() <= 7);
        assert!(page.windows(2).all(|w| w[0] < w[1]), "ascending");
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen.extend(page);
        after = Some(last);
    }
    assert_eq!(seen, all);
    assert!(store.list(None, 0).await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_set_in_one_process_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(store_in(tmp.path()));
    let key = store
        .create(&record(&[("n", json!(0))], 600))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = 0u64;
            for _ in 0..25 {
                loop {
                    let cur = store.load(&key).await.expect("load").expect("live");
                    let n = cur.data["n"].as_u64().expect("n");
                    let next = record(&[("n", json!(n + 1))], 600);
                    match store.update(&key, &next, Some(cur.version)).await {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("update: {e}"),
                    }
                }
                acked += 1;
            }
            acked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let got = store.load(&key).await.expect("load").expect("live");
    assert_eq!(got.data["n"], json!(total));
    assert_eq!(got.version, 1 + total);
    assert_eq!(names(tmp.path()).len(), 1, "no temp files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_updates_never_resurrects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(store_in(tmp.path()));
    for _ in 0..20 {
        let key = store.create(&record(&[], 600)).await.expect("create");
        let updater = {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                for i in 0..20 {
                    match store
                        .update(&key, &record(&[("i", json!(i))], 600), None)
                        .await
                    {
                        Ok(_) => {}
                        Err(Error::NotFound) => return,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            })
        };
        assert!(store.delete(&key).await.expect("delete"));
        updater.await.expect("updater");
        assert!(
            store.load(&key).await.expect("load").is_none(),
            "an update after the delete resurrected the session"
        );
    }
}

#[tokio::test]
async fn registered_engine_reads_the_file_section() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = EngineRegistry::new();
    register(&registry);
    let dir = tmp.path().join("from-config");
    let cfg = Config::from_toml(&format!(
        "engine = \"file\"\ncodec = \"json\"\n[file]\npath = {:?}\nprefix = \"s_\"\nfsync = false\n",
        dir.to_str().expect("utf-8 path")
    ));
    let store = registry.build(&cfg).await.expect("build");
    assert_eq!(store.engine(), "file");
    assert!(store.capabilities().cross_process);
    let key = store
        .create(&record(&[("user_id", json!(101))], 60))
        .await
        .expect("create");
    let text = fs::read_to_string(dir.join(format!("s_{}", key.as_str()))).expect("cat");
    assert!(text.starts_with(r#"{"data":{"user_id":101}"#), "{text}");

    let err = registry
        .build(&Config::from_toml(
            "engine = \"file\"\n[file]\nprefix = \"../\"",
        ))
        .await
        .expect_err("bad prefix");
    assert!(
        matches!(&err, Error::Config { key: Some(k), .. } if k == "file.prefix"),
        "{err}"
    );
    let err = registry
        .build(&Config::from_toml(
            "engine = \"file\"\n[file]\ndir = \"/x\"",
        ))
        .await
        .expect_err("unknown option");
    assert!(err.to_string().contains("dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creators_of_one_key_have_exactly_one_winner() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(store_in(tmp.path()));
    for round in 0..10 {
        let key = SessionKey::generate().expect("key");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let r = record(&[("writer", json!(i))], 600);
                    (i, store.insert_new(&key, &r).await.expect("insert"))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (i, outcome) = t.await.expect("task");
            if outcome == Inserted::Created {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let got = store.load(&key).await.expect("load").expect("live");
        assert_eq!(
            got.data["writer"],
            json!(winners[0]),
            "the winner's record is stored"
        );
    }
    assert_eq!(names(tmp.path()).len(), 10, "no temp files left behind");
}

#[test]
fn paths_are_the_directory_joined_with_prefix_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = SessionKey::generate().expect("key");
    let slash = format!("{}/", tmp.path().display());
    for dir in [tmp.path().to_owned(), std::path::PathBuf::from(slash)] {
        for prefix in ["", "sess_", "a-b_9"] {
            let store = FileStore::builder()
                .dir(&dir)
                .prefix(prefix)
                .fsync(false)
                .build()
                .expect("store");
            let want = dir.join(format!("{prefix}{}", key.as_str()));
            assert_eq!(store.path_of(&key), want);
            assert_eq!(
                store.path_of(&key).as_os_str(),
                want.as_os_str(),
                "same text, not just the same components"
            );
        }
    }
}

#[tokio::test]
async fn sessions_of_every_size_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    // Around the first read's size and well past it.
    for len in [0, 10, 1000, 8_100, 8_192, 8_300, 20_000, 200_000] {
        let r = record(&[("blob", json!("x".repeat(len)))], 600);
        let key = store.create(&r).await.expect("create");
        let back = store.load(&key).await.expect("load").expect("present");
        assert_eq!(back.data, r.data, "len {len}");
        let lazy = store
            .load_lazy(&key)
            .await
            .expect("load_lazy")
            .expect("present");
        assert_eq!(
            lazy.data.get("blob").expect("lazy read").as_ref(),
            r.data.get("blob"),
            "len {len}"
        );
        // Under the lock too.
        store.touch(&key, r.expires_at).await.expect("touch");
        let v = store
            .update(&key, &back, Some(back.version))
            .await
            .expect("update");
        assert_eq!(v, back.version + 1);
    }
}

/// The key of a signed-in 50-key record saved with the default (compact) codec.
async fn saved_wide(store: &FileStore) -> SessionKey {
    let mut r = record(&[], 3600);
    for i in 0..50 {
        r.data
            .insert(format!("k{i:02}"), json!({"i": i, "s": format!("v{i}")}));
    }
    r.meta.principal = Some("reader@example.com".into());
    store.create(&r).await.expect("create")
}

#[tokio::test]
async fn lazy_loads_leave_the_data_encoded_and_read_what_load_reads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let key = saved_wide(&store).await;
    let whole = store.load(&key).await.expect("load").expect("live");
    let lazy = store
        .load_lazy(&key)
        .await
        .expect("load_lazy")
        .expect("live");
    assert!(!lazy.data.is_decoded(), "the data was decoded by the load");
    assert_eq!(
        (
            lazy.version,
            lazy.created_at,
            lazy.expires_at,
            lazy.expiry,
            &lazy.meta
        ),
        (
            whole.version,
            whole.created_at,
            whole.expires_at,
            whole.expiry,
            &whole.meta
        )
    );
    for (k, v) in &whole.data {
        assert_eq!(
            lazy.data.get(k).expect("lazy read").as_ref(),
            Some(v),
            "{k}"
        );
    }
    for absent in ["", "k", "k5", "k99", "zz"] {
        assert_eq!(
            lazy.data.get(absent).expect("lazy read"),
            None,
            "{absent:?}"
        );
    }
    assert_eq!(lazy.decode().expect("full decode"), whole);

    // A missing file is `None`, as for `load`.
    let missing = SessionKey::generate().expect("key");
    assert!(
        store
            .load_lazy(&missing)
            .await
            .expect("load_lazy")
            .is_none()
    );
    store.delete(&key).await.expect("delete");
    assert!(store.load_lazy(&key).await.expect("load_lazy").is_none());
}

#[tokio::test]
async fn lazy_loads_of_json_files_decode_them_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = builder_in(tmp.path())
        .codec(Arc::new(JsonCodec::default()))
        .build()
        .expect("store");
    let r = record(&[("user_id", json!(101))], 3600);
    let key = store.create(&r).await.expect("create");
    let lazy = store
        .load_lazy(&key)
        .await
        .expect("load_lazy")
        .expect("live");
    assert!(lazy.data.is_decoded(), "JSON has no lazy form");
    assert_eq!(lazy.data.get("user_id").expect("read"), Some(json!(101)));
}

#[tokio::test]
async fn lazy_loads_of_expired_files_are_none_and_remove_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = store_in(tmp.path());
    let key = SessionKey::generate().expect("key");
    let mut r = record(&[("x", json!(1))], -5);
    r.meta.principal = Some("gone@example.com".into());
    store.insert_new(&key, &r).await.expect("insert");
    assert!(store.path_of(&key).exists());
    assert_eq!(markers_of(tmp.path(), &key), 1, "indexed by its principal");
    assert!(store.load_lazy(&key).await.expect("load_lazy").is_none());
    assert!(
        !store.path_of(&key).exists(),
        "a lazy load removes the expired file as load does"
    );
    assert_eq!(markers_of(tmp.path(), &key), 0, "and its index entry");

    // Deadline exactly now (or just past) is expired too; a live one is not.
    let key = SessionKey::generate().expect("key");
    let mut r = record(&[("x", json!(1))], 3600);
    r.expires_at = Timestamp::now();
    store.insert_new(&key, &r).await.expect("insert");
    assert!(store.load_lazy(&key).await.expect("load_lazy").is_none());
}

#[tokio::test]
async fn lazy_loads_of_corrupt_files_fail_as_load_does_and_leave_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = builder_in(tmp.path())
        .max_file_size(1024)
        .build()
        .expect("store");
    let raw = store.raw().expect("raw access");
    let live = Timestamp::now().add_secs(3600);
    let good = BincodeCodec::default()
        .encode(&record(&[("a", json!("ok")), ("b", json!("x"))], 3600))
        .expect("encode");

    let garbage = SessionKey::generate().expect("key");
    raw.put_raw(&garbage, b"\xB1SR\x01garbage", live)
        .await
        .expect("plant");
    let cut = SessionKey::generate().expect("key");
    raw.put_raw(&cut, &good[..4], live).await.expect("plant");
    let empty = SessionKey::generate().expect("key");
    raw.put_raw(&empty, b"", live).await.expect("plant");
    let json = SessionKey::generate().expect("key");
    raw.put_raw(&json, b"{not json", live).await.expect("plant");
    let big = SessionKey::generate().expect("key");
    fs::write(store.path_of(&big), vec![0xB1; 10_000]).expect("plant");
    let dir = SessionKey::generate().expect("key");
    fs::create_dir(store.path_of(&dir)).expect("plant");

    for (what, key) in [
        ("garbage", &garbage),
        ("truncated", &cut),
        ("empty", &empty),
        ("broken JSON", &json),
        ("oversized", &big),
        ("a directory", &dir),
    ] {
        let whole = store.load(key).await.expect_err(what);
        let lazy = store.load_lazy(key).await.expect_err(what);
        assert!(matches!(lazy, Error::Codec(_)), "{what}: {lazy:?}");
        assert_eq!(
            codec_error(&lazy).to_string(),
            codec_error(&whole).to_string(),
            "{what}"
        );
        assert!(store.path_of(key).exists(), "{what}: left in place");
    }
    assert!(matches!(
        store.load_lazy(&big).await,
        Err(Error::Codec(CodecError::TooLarge {
            size: 10_000,
            limit: 1024
        }))
    ));

    // A value damaged inside the data: the whole load refuses the record; the lazy one
    // reads the sound value and finds the damage where it is read.
    let mut damaged = good.clone();
    let last = damaged.len() - 1;
    damaged[last] = 0xFF; // "x", the value of "b", becomes invalid UTF-8
    let key = SessionKey::generate().expect("key");
    raw.put_raw(&key, &damaged, live).await.expect("plant");
    assert!(matches!(store.load(&key).await, Err(Error::Codec(_))));
    let lazy = store.load_lazy(&key).await.expect("header").expect("live");
    assert_eq!(lazy.data.get("a").expect("sound"), Some(json!("ok")));
    assert!(lazy.data.get("b").is_err(), "the damaged value was served");
    assert!(store.path_of(&key).exists(), "left in place");
}

/// The codec error inside a store error.
fn codec_error(e: &Error) -> &CodecError {
    match e {
        Error::Codec(c) => c,
        other => panic!("not a codec error: {other:?}"),
    }
}

/// How many per-user index entries (`users/<principal hash>/<key>`) name `key`.
fn markers_of(dir: &std::path::Path, key: &SessionKey) -> usize {
    let Ok(users) = fs::read_dir(dir.join("users")) else {
        return 0;
    };
    users
        .map(|d| d.expect("entry").path().join(key.as_str()))
        .filter(|p| p.exists())
        .count()
}
