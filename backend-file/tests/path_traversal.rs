//! Hostile session ids never become paths: they cannot even be parsed as keys, the
//! session handle starts a fresh session instead, and the store's directory is the only
//! place a file ever appears.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_file::FileStore;
use session_core::{Error, Session, SessionKey, SessionSettings, SessionStore};

/// Cookie values an attacker might send, many of them exactly 32 bytes long so that only
/// the alphabet check stands between them and the file system.
const HOSTILE: &[&str] = &[
    "../../../../../../../etc/passwd0",
    "../../../../../../../../../tmp/x",
    "/etc/passwd",
    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "..\\..\\..\\..\\windows\\system32x",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa/..",
    "..",
    ".",
    "",
    "....//....//....//....//....//..",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd00",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0b",
    "sess_aaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ".tmp_aaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaa\u{2215}..", // DIVISION SLASH
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",      // 33 bytes
    "aaaaaaaaaaaaaaaaaaaaaaaaaa*",
];

#[test]
fn traversal_strings_are_not_session_keys() {
    for s in HOSTILE {
        assert!(SessionKey::parse(s).is_err(), "{s:?} parsed as a key");
    }
}

#[test]
fn a_traversal_prefix_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for prefix in ["../", "../../evil_", "/abs_", "a/b", ".tmp_", "x\\y"] {
        match FileStore::builder()
            .dir(tmp.path().join("s"))
            .prefix(prefix)
            .build()
        {
            Err(Error::Config { key: Some(k), .. }) if k == "file.prefix" => {}
            other => panic!("prefix {prefix:?} gave {other:?}"),
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        }
        out.push(path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_appear_only_in_the_store_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let canary = tmp.path().join("canary");
    fs::write(&canary, b"untouched").expect("canary");
    let store: Arc<dyn SessionStore> = Arc::new(
        FileStore::builder()
            .dir(&dir)
            .fsync(false)
            .build()
            .expect("store"),
    );
    let settings = Arc::new(SessionSettings::default());

    let mut minted = Vec::new();
    for cookie in HOSTILE {
        // What the middleware does with a cookie: a malformed one means no session.
        let s = Session::from_cookie(store.clone(), settings.clone(), Some(cookie));
        assert!(s.key().is_none(), "{cookie:?} was adopted as a key");
        s.insert("who", &"visitor").await.expect("insert");
        s.save().await.expect("save");
        let key = s.key().expect("a fresh key was minted");
        assert_ne!(key.as_str(), *cookie);
        // Every other operation, on the minted key.
        store
            .touch(&key, session_core::Timestamp::now().add_secs(60))
            .await
            .expect("touch");
        assert!(store.exists(&key).await.expect("exists"));
        minted.push(key);
    }
    store.clear_expired().await.expect("sweep");
    assert_eq!(store.count().await.expect("count"), HOSTILE.len() as u64);
    for key in minted.iter().step_by(2) {
        assert!(store.delete(key).await.expect("delete"));
    }

    let mut all = Vec::new();
    walk(tmp.path(), &mut all);
    for path in &all {
        if path == &canary || path == &dir {
            continue;
        }
        assert_eq!(
            path.parent(),
            Some(dir.as_path()),
            "{} is outside",
            path.display()
        );
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let key = name.strip_prefix("sess_").expect("session file name");
        assert!(SessionKey::parse(key).is_ok(), "{name} is not prefix + key");
    }
    assert_eq!(all.len(), 2 + HOSTILE.len() - HOSTILE.len().div_ceil(2));
    assert_eq!(fs::read(&canary).expect("canary"), b"untouched");
}
