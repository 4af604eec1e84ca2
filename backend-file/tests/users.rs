//! The per-user index of the file store (`users/` in the session directory): listing,
//! counting and ending a principal's sessions, pruning of stale entries, the
//! no-resurrection rule for a request still in flight, concurrent re-binding, and two
//! processes on one directory.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_file::FileStore;
use serde_json::json;
use session_core::users::session_id;
use session_core::{
    Error, HashedKeys, Record, Session, SessionData, SessionKey, SessionMeta, SessionSettings,
    SessionStore, Timestamp, UserIndex,
};
use sha2::{Digest, Sha256};

const ROLE: &str = "BACKEND_FILE_USERS_ROLE";
const DIR: &str = "BACKEND_FILE_USERS_DIR";
const KEEP: &str = "BACKEND_FILE_USERS_KEEP";
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

fn open_store(dir: &Path) -> FileStore {
    FileStore::builder()
        .dir(dir)
        .fsync(false)
        .build()
        .expect("store")
}

fn signed_in(principal: &str, n: i64, ttl_secs: i64) -> Record {
    let mut data = SessionData::new();
    data.insert("n".into(), json!(n));
    let mut r = Record::with_ttl(data, ttl_secs);
    r.meta = SessionMeta {
        principal: Some(principal.to_owned()),
        ..SessionMeta::default()
    };
    r
}

fn index(store: &FileStore) -> &dyn UserIndex {
    store
        .user_index()
        .expect("the file store keeps a user index")
}

/// The marker files of `principal` on disk (the keys they name).
fn markers(dir: &Path, principal: &str) -> BTreeSet<String> {
    let hash: String = Sha256::digest(principal.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match std::fs::read_dir(dir.join("users").join(hash)) {
        Ok(it) => it
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(e) => panic!("read markers: {e}"),
    }
}

fn keys_of(list: &[session_core::UserSession]) -> BTreeSet<String> {
    list.iter()
        .map(|s| s.stored_key.as_str().to_owned())
        .collect()
}

fn set(keys: &[&SessionKey]) -> BTreeSet<String> {
    keys.iter().map(|k| k.as_str().to_owned()).collect()
}

/// Signs a fresh session in as `principal` through the session handle, as a login
/// request does, and returns its key.
async fn login(store: &Arc<dyn SessionStore>, principal: &str) -> SessionKey {
    let s = Session::new(store.clone(), Arc::new(SessionSettings::default()), None);
    s.insert("cart", &vec!["apple"]).await.expect("insert");
    s.login(principal, Some("hash-1")).await.expect("login");
    s.save().await.expect("save");
    s.key().expect("a key after login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_count_end_one_and_end_all_but_current() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let file = open_store(&dir);
    let store: Arc<dyn SessionStore> = Arc::new(file.clone());
    let a1 = login(&store, "alice").await;
    let a2 = login(&store, "alice").await;
    let a3 = login(&store, "alice").await;
    let b1 = login(&store, "bob").await;
    let anon = store
        .create(&Record::with_ttl(SessionData::new(), 3600))
        .await
        .expect("anonymous");

    // The index is invisible to the store's own views of the directory.
    assert_eq!(store.count().await.expect("count"), 5);
    assert_eq!(store.list(None, 100).await.expect("list").len(), 5);
    assert_eq!(markers(&dir, "alice"), set(&[&a1, &a2, &a3]));
    assert_eq!(markers(&dir, "bob"), set(&[&b1]));

    // Through the handle of a2: "your devices".
    let a2_session = Session::new(
        store.clone(),
        Arc::new(SessionSettings::default()),
        Some(a2.clone()),
    );
    let mine = a2_session.user_sessions().await.expect("list");
    assert_eq!(keys_of(&mine), set(&[&a1, &a2, &a3]));
    assert!(
        mine.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "oldest first"
    );
    let current: Vec<_> = mine.iter().filter(|s| s.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].stored_key, a2);
    for s in &mine {
        assert_eq!(s.meta.principal.as_deref(), Some("alice"));
        assert_eq!(s.meta.auth_hash.as_deref(), Some("hash-1"));
        assert_eq!(s.id, session_id(&s.stored_key));
        assert!(s.expires_at > Timestamp::now());
    }
    assert_eq!(index(&file).count_of("alice").await.expect("count"), 3);
    assert_eq!(index(&file).count_of("bob").await.expect("count"), 1);
    assert_eq!(index(&file).count_of("carol").await.expect("count"), 0);

    // End one by its public id: its record and its marker go.
    assert!(
        a2_session
            .end_user_session(&session_id(&a1))
            .await
            .expect("end one")
    );
    assert!(store.load(&a1).await.expect("load").is_none());
    assert_eq!(markers(&dir, "alice"), set(&[&a2, &a3]));
    assert!(
        !a2_session
            .end_user_session(&session_id(&a1))
            .await
            .expect("again"),
        "an ended session is no longer found"
    );
    assert!(
        !a2_session
            .end_user_session(&session_id(&b1))
            .await
            .expect("someone else's"),
        "another principal's session is not alice's to end"
    );
    assert!(store.load(&b1).await.expect("load").is_some());

    // Sign out the other devices: a3 goes, a2 stays, bob and the anonymous one untouched.
    assert_eq!(
        a2_session.end_other_sessions().await.expect("end others"),
        1
    );
    assert!(store.load(&a3).await.expect("load").is_none());
    assert!(store.load(&a2).await.expect("load").is_some());
    assert!(store.load(&b1).await.expect("load").is_some());
    assert!(store.load(&anon).await.expect("load").is_some());
    assert_eq!(markers(&dir, "alice"), set(&[&a2]));

    // Logout deletes the record and its marker; the empty directory stays harmlessly
    // until a sweep or listing tidies it.
    a2_session.logout().await.expect("logout");
    assert!(markers(&dir, "alice").is_empty());
    assert_eq!(index(&file).count_of("alice").await.expect("count"), 0);
    // End all without keeping any.
    assert_eq!(
        index(&file).end_sessions("bob", None).await.expect("end"),
        1
    );
    assert!(store.load(&b1).await.expect("load").is_none());
    assert_eq!(
        store.count().await.expect("count"),
        1,
        "only the anonymous one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_orphaned_entries_are_pruned_by_listing_and_by_clear_expired() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let store = open_store(&dir);
    let live = store
        .create(&signed_in("alice", 1, 3600))
        .await
        .expect("create");
    // Expired on arrival: written, but past its deadline.
    let expired = store
        .create(&signed_in("alice", 2, -10))
        .await
        .expect("create");
    // A record removed behind the store's back (by hand, or a crash between the marker
    // and the record).
    let orphan = store
        .create(&signed_in("alice", 3, 3600))
        .await
        .expect("create");
    std::fs::remove_file(store.path_of(&orphan)).expect("rm");
    assert_eq!(markers(&dir, "alice"), set(&[&live, &expired, &orphan]));

    let listed = index(&store)
        .sessions_of("alice", None)
        .await
        .expect("list");
    assert_eq!(keys_of(&listed), set(&[&live]));
    assert_eq!(markers(&dir, "alice"), set(&[&live]), "listing pruned both");

    // clear_expired: the markers of the records it removes, and orphans.
    let gone_by_sweep = store
        .create(&signed_in("bob", 1, -10))
        .await
        .expect("create");
    let orphan2 = store
        .create(&signed_in("bob", 2, 3600))
        .await
        .expect("create");
    std::fs::remove_file(store.path_of(&orphan2)).expect("rm");
    assert_eq!(markers(&dir, "bob"), set(&[&gone_by_sweep, &orphan2]));
    let report = store.sweep().await.expect("sweep");
    assert_eq!(report.removed, 2, "the two expired records");
    assert_eq!(report.not_regular, 0, "the index is no odd entry");
    assert_eq!(report.failed, 0);
    assert_eq!(report.index_entries_removed, 1, "the orphan");
    assert!(markers(&dir, "bob").is_empty());
    assert!(
        !dir.join("users").join(hash_of("bob")).exists(),
        "an emptied principal directory is removed"
    );
    assert_eq!(markers(&dir, "alice"), set(&[&live]));
    assert_eq!(store.clear_expired().await.expect("clear"), 0);
    assert_eq!(store.count().await.expect("count"), 1);
    // Statistics skip the index too.
    let stats = session_core::Maintenance::stats(&store, &|_| {})
        .await
        .expect("stats");
    assert_eq!(stats.skipped, 0);
}

fn hash_of(principal: &str) -> String {
    Sha256::digest(principal.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_binding_moves_a_session_between_listings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let file = open_store(&dir);
    let store: Arc<dyn SessionStore> = Arc::new(file.clone());
    let key = store
        .create(&signed_in("alice", 1, 3600))
        .await
        .expect("create");

    // The same record re-bound in place (an update that changes the principal).
    let v = store
        .update(&key, &signed_in("bob", 2, 3600), Some(1))
        .await
        .expect("update");
    assert_eq!(v, 2);
    assert!(
        markers(&dir, "alice").is_empty(),
        "the old entry went with the write"
    );
    assert_eq!(markers(&dir, "bob"), set(&[&key]));
    assert_eq!(index(&file).count_of("alice").await.expect("count"), 0);
    assert_eq!(
        keys_of(&index(&file).sessions_of("bob", None).await.expect("list")),
        set(&[&key])
    );

    // A stale entry left by an older version of the record (planted by hand) is pruned
    // by listing, since the record names someone else.
    let alice_dir = dir.join("users").join(hash_of("alice"));
    std::fs::create_dir_all(&alice_dir).expect("mkdir");
    std::fs::write(alice_dir.join(key.as_str()), b"").expect("plant");
    assert_eq!(index(&file).count_of("alice").await.expect("count"), 0);
    assert!(markers(&dir, "alice").is_empty());

    // Logout by `clear()`: the session stays, anonymous, and leaves bob's listing.
    let s = Session::new(
        store.clone(),
        Arc::new(SessionSettings::default()),
        Some(key.clone()),
    );
    assert_eq!(
        s.principal().await.expect("principal").as_deref(),
        Some("bob")
    );
    s.clear();
    s.save().await.expect("save");
    assert!(store.load(&key).await.expect("load").is_some());
    assert!(markers(&dir, "bob").is_empty());
    assert_eq!(index(&file).count_of("bob").await.expect("count"), 0);

    // Login on the handle as someone else: a new key (fixation), listed for carol only.
    s.login("carol", None).await.expect("login");
    s.save().await.expect("save");
    let carol_key = s.key().expect("key");
    assert_ne!(carol_key, key);
    let carols = index(&file)
        .sessions_of("carol", Some(&carol_key))
        .await
        .expect("list");
    assert_eq!(keys_of(&carols), set(&[&carol_key]));
    assert!(carols[0].current);
    assert_eq!(index(&file).count_of("bob").await.expect("count"), 0);

    // A touch keeps the session listed (the renewal holds the entry).
    store
        .touch(&carol_key, Timestamp::now().add_secs(7200))
        .await
        .expect("touch");
    assert_eq!(index(&file).count_of("carol").await.expect("count"), 1);
}

/// A request of a session is in flight (loaded, about to save) while another request
/// signs that session out: the save fails with `NotFound` and the session stays gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_cannot_resurrect_an_ended_session() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let file = open_store(&dir);
    let store: Arc<dyn SessionStore> = Arc::new(file.clone());
    let victim = login(&store, "alice").await;
    let keeper = login(&store, "alice").await;

    // Request A: loaded, changed, not yet saved.
    let a = Session::new(
        store.clone(),
        Arc::new(SessionSettings::default()),
        Some(victim.clone()),
    );
    assert_eq!(a.principal().await.expect("load").as_deref(), Some("alice"));
    a.insert("late", &1).await.expect("insert");

    // Request B (another store handle on the same directory, as another worker would
    // have): "sign out my other devices".
    let other = open_store(&dir);
    let b = Session::new(
        Arc::new(other.clone()),
        Arc::new(SessionSettings::default()),
        Some(keeper.clone()),
    );
    assert_eq!(b.end_other_sessions().await.expect("end others"), 1);

    match a.save().await {
        Err(Error::NotFound) => {}
        other => panic!("the late save gave {other:?}, not NotFound"),
    }
    assert!(store.load(&victim).await.expect("load").is_none());
    assert_eq!(
        keys_of(&index(&file).sessions_of("alice", None).await.expect("list")),
        set(&[&keeper])
    );
    assert_eq!(markers(&dir, "alice"), set(&[&keeper]));
    // The same through the store: an update after an end is NotFound.
    let mut r = signed_in("alice", 9, 3600);
    r.version = 1;
    assert!(matches!(
        store.update(&victim, &r, None).await,
        Err(Error::NotFound)
    ));
    assert!(store.load(&victim).await.expect("load").is_none());
}

/// One session flips between alice and bob as fast as it can while listers of both
/// principals prune concurrently and alice's other sessions are renewed: after each
/// flip the new principal lists it, alice's steady sessions are in every listing, and
/// once the flipping stops each listing agrees with the record. A pruner that removed an
/// entry while a writer was re-binding the session to its principal would lose the
/// session from that listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_re_binding_and_listing_never_lose_a_live_session() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let file = open_store(&dir);
    let steady: Vec<SessionKey> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(
                file.create(&signed_in("alice", i, 3600))
                    .await
                    .expect("create"),
            );
        }
        v
    };
    let flip = file
        .create(&signed_in("alice", 0, 3600))
        .await
        .expect("create");
    let rounds = 300u64;

    let flipper = {
        let file = file.clone();
        let (flip, steady) = (flip.clone(), steady.clone());
        tokio::spawn(async move {
            for i in 0..rounds {
                let who = if i % 2 == 0 { "bob" } else { "alice" };
                file.update(&flip, &signed_in(who, i as i64, 3600), None)
                    .await
                    .expect("re-bind");
                // Only this task writes `flip`: until its next write, `who` must list it.
                let listed = keys_of(
                    &file
                        .user_index()
                        .expect("index")
                        .sessions_of(who, None)
                        .await
                        .expect("list"),
                );
                assert!(
                    listed.contains(flip.as_str()),
                    "round {i}: the session just bound to {who} is missing from its listing"
                );
                // Renewals of the steady sessions hold their entries like any write.
                let k = &steady[i as usize % steady.len()];
                file.touch(k, Timestamp::now().add_secs(3600))
                    .await
                    .expect("touch");
            }
        })
    };
    let lister = |principal: &'static str| {
        let file = file.clone();
        let steady = set(&steady.iter().collect::<Vec<_>>());
        tokio::spawn(async move {
            let mut lists = 0u64;
            let started = Instant::now();
            loop {
                let got = keys_of(
                    &file
                        .user_index()
                        .expect("index")
                        .sessions_of(principal, None)
                        .await
                        .expect("list"),
                );
                if principal == "alice" {
                    assert!(got.is_superset(&steady), "a steady session went missing");
                }
                lists += 1;
                if lists >= 200 || started.elapsed() > Duration::from_secs(60) {
                    return lists;
                }
            }
        })
    };
    let (la, lb) = (lister("alice"), lister("bob"));
    flipper.await.expect("flipper");
    let lists = la.await.expect("lister") + lb.await.expect("lister");
    assert!(lists >= 2);

    // The last write bound it to alice (rounds is even: the last i is odd).
    let last = file.load(&flip).await.expect("load").expect("live");
    assert_eq!(last.principal(), Some("alice"));
    let alice = keys_of(&index(&file).sessions_of("alice", None).await.expect("list"));
    let mut want = set(&steady.iter().collect::<Vec<_>>());
    want.insert(flip.as_str().to_owned());
    assert_eq!(
        alice, want,
        "the flipped session is alice's again and listed"
    );
    assert_eq!(index(&file).count_of("bob").await.expect("count"), 0);
    assert!(markers(&dir, "bob").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_keys_list_derived_keys_and_mark_the_current_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let store: Arc<dyn SessionStore> = Arc::new(HashedKeys::new(Arc::new(open_store(&dir))));
    let k1 = login(&store, "alice").await;
    let k2 = login(&store, "alice").await;
    let s = Session::new(
        store.clone(),
        Arc::new(SessionSettings::default()),
        Some(k1.clone()),
    );
    let listed = s.user_sessions().await.expect("list");
    let d1 = session_core::hashed::derive_key(&k1);
    let d2 = session_core::hashed::derive_key(&k2);
    assert_eq!(keys_of(&listed), set(&[&d1, &d2]));
    assert!(listed.iter().any(|e| e.current && e.stored_key == d1));
    // The directory never holds the cookie's key, in the index either.
    assert_eq!(markers(&dir, "alice"), set(&[&d1, &d2]));
    assert_eq!(s.end_other_sessions().await.expect("end"), 1);
    assert!(store.load(&k2).await.expect("load").is_none());
    assert!(store.load(&k1).await.expect("load").is_some());
}

#[test]
fn an_index_directory_that_is_a_symlink_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let store = open_store(&dir);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, dir.join("users")).expect("symlink");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let err = store
            .create(&signed_in("alice", 1, 3600))
            .await
            .expect_err("a login through a symlinked index");
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(err.to_string().contains("not a"), "{err}");
        assert!(index(&store).sessions_of("alice", None).await.is_err());
        // Anonymous sessions do not touch the index.
        store
            .create(&Record::with_ttl(SessionData::new(), 60))
            .await
            .expect("anonymous");
    });
    assert_eq!(
        std::fs::read_dir(&outside).expect("read").count(),
        0,
        "nothing was written outside the session directory"
    );
}

// ---- two processes ----

/// Entry point of the child process; does nothing unless started by a parent test.
#[test]
#[ignore = "child process role: started by the tests of this file"]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    println!();
    let dir = PathBuf::from(std::env::var(DIR).expect("dir"));
    let keep = SessionKey::parse(&std::env::var(KEEP).expect("keep")).expect("key");
    assert_eq!(role, "end-others", "unknown role {role}");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = open_store(&dir);
        for i in 0..2 {
            let k = store
                .create(&signed_in("dave", 100 + i, 3600))
                .await
                .expect("create");
            println!("CREATED {}", k.as_str());
        }
        let n = index(&store).count_of("dave").await.expect("count");
        println!("COUNT {n}");
        let ended = index(&store)
            .end_sessions("dave", Some(&keep))
            .await
            .expect("end");
        println!("ENDED {ended}");
    });
}

#[test]
fn another_process_lists_and_ends_this_ones_sessions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sessions");
    let store = open_store(&dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (keep, other) = rt.block_on(async {
        let keep = store
            .create(&signed_in("dave", 1, 3600))
            .await
            .expect("create");
        let other = store
            .create(&signed_in("dave", 2, 3600))
            .await
            .expect("create");
        (keep, other)
    });

    let mut child = Command::new(std::env::current_exe().expect("own executable"))
        .args([
            "child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "end-others")
        .env(DIR, &dir)
        .env(KEEP, keep.as_str())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not finish within {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "child failed: {status}");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map(|l| l.expect("line"))
        .collect();
    let created: Vec<SessionKey> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("CREATED "))
        .map(|k| SessionKey::parse(k).expect("key"))
        .collect();
    assert_eq!(created.len(), 2, "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "COUNT 4"),
        "the child saw all four: {lines:?}"
    );
    assert!(lines.iter().any(|l| l == "ENDED 3"), "{lines:?}");

    rt.block_on(async {
        let left = index(&store).sessions_of("dave", None).await.expect("list");
        assert_eq!(keys_of(&left), set(&[&keep]));
        assert!(store.load(&other).await.expect("load").is_none());
        for k in &created {
            assert!(store.load(k).await.expect("load").is_none());
        }
    });
    assert_eq!(markers(&dir, "dave"), set(&[&keep]));
}
