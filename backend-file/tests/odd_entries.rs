//! Entries named like session files that are not sessions: a FIFO, a directory, a
//! symlink to `/dev/zero`, a symlink to a file outside the directory, a socket, and a
//! sparse 64 MiB regular file.
//!
//! Every operation on such a key must answer promptly (a FIFO once hung `load` for good),
//! type it as a corrupt record, give the visitor a fresh session, leave the entry where
//! it is, and never read, lock or change anything outside the session directory. Each
//! operation runs on its own thread with a deadline, so a hang fails the test instead of
//! hanging the suite.

#![cfg(unix)]

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use backend_file::FileStore;
use session_core::{
    BincodeCodec, Codec, CodecError, Error, Inserted, RawAccess, Record, SessionData, SessionKey,
    SessionSettings, SessionStore, Timestamp,
};

/// How long any one operation may take; all of them take milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` (an async block on the store) on a thread of its own with its own runtime,
/// and fails the test if it does not finish within [`DEADLINE`]. A hung thread is
/// abandoned; the test process ends regardless.
fn within<T, F, Fut>(what: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(f()));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?} (hung on an odd entry)"),
    }
}

fn store(dir: &Path) -> FileStore {
    FileStore::builder()
        .dir(dir)
        .fsync(false)
        .build()
        .expect("store")
}

fn record(n: i64, ttl: i64) -> Record {
    let mut d = SessionData::new();
    d.insert("n".into(), n.into());
    Record::with_ttl(d, ttl)
}

/// The kinds of odd entries, each under a fresh key of `store`; also returns the file
/// outside the directory that one of them links to.
struct Odd {
    entries: Vec<(&'static str, SessionKey)>,
    outside: PathBuf,
    _socket: UnixListener,
}

fn plant(tmp: &Path, store: &FileStore) -> Odd {
    let mut entries = Vec::new();
    let mut key = |kind: &'static str| {
        let k = SessionKey::generate().expect("rng");
        entries.push((kind, k.clone()));
        store.path_of(&k)
    };
    let fifo = key("fifo");
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    fs::create_dir(key("directory")).expect("mkdir");
    symlink("/dev/zero", key("symlink to /dev/zero")).expect("symlink");
    let outside = tmp.join("outside");
    // A valid session record, so following the link would "work": only the refusal to
    // follow it keeps the store inside its directory.
    let bytes = BincodeCodec::new(4 << 20)
        .encode(&record(7, 3600))
        .expect("encode");
    fs::write(&outside, bytes).expect("outside file");
    symlink(&outside, key("symlink to a file outside")).expect("symlink");
    let socket = UnixListener::bind(key("socket")).expect("bind socket");
    Odd {
        entries,
        outside,
        _socket: socket,
    }
}

fn assert_corrupt<T: std::fmt::Debug>(what: &str, kind: &str, r: session_core::Result<T>) {
    match r {
        Err(Error::Codec(CodecError::Corrupt(msg))) => {
            assert!(
                msg.contains("not a regular file"),
                "{what} on {kind}: {msg}"
            )
        }
        other => panic!("{what} on the {kind} gave {other:?}, not a corrupt record"),
    }
}

#[test]
fn every_operation_on_an_odd_entry_answers_promptly_and_leaves_it_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let s = store(&dir);
    let odd = plant(tmp.path(), &s);
    let outside_before = fs::read(&odd.outside).expect("outside");
    let outside_mtime = fs::metadata(&odd.outside)
        .and_then(|m| m.modified())
        .expect("mtime");
    // Hold the outside file's lock throughout: a store that tried to lock it would wait
    // for it, and miss the deadline.
    let outside_lock = File::open(&odd.outside).expect("open outside");
    outside_lock.lock().expect("lock outside");

    for (kind, key) in &odd.entries {
        let started = Instant::now();
        let (st, k) = (s.clone(), key.clone());
        assert_corrupt(
            "load",
            kind,
            within("load", move || async move { st.load(&k).await }),
        );
        let (st, k) = (s.clone(), key.clone());
        assert_corrupt(
            "exists",
            kind,
            within("exists", move || async move { st.exists(&k).await }),
        );
        let (st, k) = (s.clone(), key.clone());
        assert_corrupt(
            "get_raw",
            kind,
            within("get_raw", move || async move { st.get_raw(&k).await }),
        );
        let (st, k) = (s.clone(), key.clone());
        assert_corrupt(
            "update",
            kind,
            within("update", move || async move {
                st.update(&k, &record(1, 60), None).await
            }),
        );
        let (st, k) = (s.clone(), key.clone());
        assert_corrupt(
            "touch",
            kind,
            within("touch", move || async move {
                st.touch(&k, Timestamp::now().add_secs(60)).await
            }),
        );
        let (st, k) = (s.clone(), key.clone());
        assert_corrupt(
            "put_raw",
            kind,
            within("put_raw", move || async move {
                st.put_raw(&k, b"{}", Timestamp::now().add_secs(60)).await
            }),
        );
        let (st, k) = (s.clone(), key.clone());
        let taken = within("insert_new", move || async move {
            st.insert_new(&k, &record(2, 60)).await
        });
        assert!(
            matches!(taken, Ok(Inserted::KeyTaken)),
            "insert_new over the {kind}: {taken:?}"
        );
        let (st, k) = (s.clone(), key.clone());
        let deleted = within("delete", move || async move { st.delete(&k).await });
        assert!(
            matches!(deleted, Ok(false)),
            "delete of the {kind}: {deleted:?}"
        );

        // What the middleware does with the cookie: the visitor gets a fresh session
        // under a new key, and the entry stays.
        let (st, k) = (s.clone(), key.clone());
        let (data, new_key) = within("a session on the key", move || async move {
            let store: Arc<dyn SessionStore> = Arc::new(st);
            let session = session_core::Session::from_cookie(
                store,
                Arc::new(SessionSettings::default()),
                Some(k.as_str()),
            );
            let data = session.load().await.expect("a fresh session, not an error");
            session.insert("fresh", &true).await.expect("insert");
            session.save().await.expect("save");
            (data, session.key())
        });
        assert!(data.is_empty(), "the {kind} gave data {data:?}");
        let new_key = new_key.expect("a key was minted");
        assert_ne!(&new_key, key, "the {kind}'s key was reused");

        assert!(
            fs::symlink_metadata(s.path_of(key)).is_ok(),
            "the {kind} was removed"
        );
        assert!(
            started.elapsed() < DEADLINE,
            "the {kind} took {:?}",
            started.elapsed()
        );
    }

    // The sweep skips and counts them all, and still does its work on the others.
    let live = s.path_of(&within("create", {
        let st = s.clone();
        move || async move { st.create(&record(3, 3600)).await.expect("create") }
    }));
    let expired = SessionKey::generate().expect("rng");
    let (st, k) = (s.clone(), expired.clone());
    within("insert expired", move || async move {
        st.insert_new(&k, &record(4, -60)).await.expect("insert")
    });
    let st = s.clone();
    let report = within(
        "sweep",
        move || async move { st.sweep().await.expect("sweep") },
    );
    assert_eq!(report.removed, 1, "{report:?}");
    assert_eq!(report.not_regular, odd.entries.len() as u64, "{report:?}");
    assert_eq!(report.skipped(), odd.entries.len() as u64, "{report:?}");
    let st = s.clone();
    let removed = within("clear_expired", move || async move {
        st.clear_expired().await.expect("clear_expired")
    });
    assert_eq!(removed, 0);
    assert!(live.exists(), "the live session was swept");
    assert!(!s.path_of(&expired).exists(), "the expired one was kept");
    for (kind, key) in &odd.entries {
        assert!(
            fs::symlink_metadata(s.path_of(key)).is_ok(),
            "the sweep removed the {kind}"
        );
    }
    // Listing and counting go by names: the entries are there for `stats` to report,
    // beside the live session and the fresh session each odd key's visitor got.
    let st = s.clone();
    let count = within(
        "count",
        move || async move { st.count().await.expect("count") },
    );
    assert_eq!(count, 2 * odd.entries.len() as u64 + 1);

    drop(outside_lock);
    assert_eq!(fs::read(&odd.outside).expect("outside"), outside_before);
    assert_eq!(
        fs::metadata(&odd.outside)
            .and_then(|m| m.modified())
            .expect("mtime"),
        outside_mtime,
        "the file outside the directory was changed"
    );
}

/// The peak resident memory of this process, in KiB (Linux; 0 elsewhere).
fn peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_sparse_64_mib_file_is_refused_by_its_size_not_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = store(&tmp.path().join("sessions"));
    let key = SessionKey::generate().expect("rng");
    let path = s.path_of(&key);
    File::create(&path)
        .and_then(|f| f.set_len(64 << 20))
        .expect("sparse file");
    // A deadline in the future: the sweep must leave it, too.
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(SystemTime::now() + Duration::from_secs(3600)))
        .expect("mtime");
    let before = peak_rss_kib();
    for _ in 0..3 {
        let (st, k) = (s.clone(), key.clone());
        match within("load", move || async move { st.load(&k).await }) {
            Err(Error::Codec(CodecError::TooLarge { size, limit })) => {
                assert_eq!(size, 64 << 20);
                assert_eq!(limit, 4 << 20);
            }
            other => panic!("load of a 64 MiB file gave {other:?}"),
        }
        let (st, k) = (s.clone(), key.clone());
        match within("get_raw", move || async move { st.get_raw(&k).await }) {
            Err(Error::Codec(CodecError::TooLarge { size, .. })) => assert_eq!(size, 64 << 20),
            other => panic!("get_raw of a 64 MiB file gave {other:?}"),
        }
    }
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(
        grown < 16 << 10,
        "reading a 64 MiB file raised the peak memory by {grown} KiB"
    );
    let st = s.clone();
    let report = within(
        "sweep",
        move || async move { st.sweep().await.expect("sweep") },
    );
    assert_eq!(report.removed, 0, "{report:?}");
    assert_eq!(fs::metadata(&path).expect("kept").len(), 64 << 20);
}
